"""Run a checkpoint on one image: `python infer.py --config_path CONFIG --ckpt_file CKPT --image IMG
[--output OUT.png]`. Detectors print and draw their boxes (default output IMG_det.png);
recognizers print the text and its confidence."""

import src  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)
import mindspore as ms

from src.engine.inference import frozen_forward, load_inference_network, read_image
from src.errors import ConfigError
from src.model_utils.cli import run
from src.model_utils.config import parse_cli
from src.model_utils.device import init_context
from src.registry import get_model


def main(argv=None) -> dict:
    cfg = parse_cli(argv, description=__doc__)
    if not cfg.image:
        raise ConfigError("infer.py needs --image IMG")
    init_context(cfg)
    api = get_model(cfg.model)
    net = load_inference_network(cfg, api, cfg.ckpt_file)
    img = read_image(cfg.image)
    outputs = frozen_forward(net)(ms.Tensor(api.preprocess_image(cfg, img)))
    meta = {"height": img.shape[0], "width": img.shape[1]}
    result = api.postprocess(cfg, [o.asnumpy() for o in outputs], [meta])[0]
    api.show_result(cfg, img, result, cfg.output or None)
    return result


if __name__ == "__main__":
    run(main)
