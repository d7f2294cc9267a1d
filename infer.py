"""Run a checkpoint on one image and draw the result:
`python infer.py --config_path CONFIG --ckpt_file CKPT --image IMG --output OUT.png`."""
import os

import src  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)
import cv2
import mindspore as ms

from src.data.sources import class_info
from src.engine.inference import draw_detections, load_inference_network, read_image
from src.model_utils.config import parse_cli
from src.model_utils.device import init_context
from src.registry import get_model


def main(argv=None) -> dict:
    cfg = parse_cli(argv, description=__doc__)
    if not cfg.image:
        raise SystemExit("infer.py needs --image IMG")
    init_context(cfg)
    api = get_model(cfg.model)
    net = load_inference_network(cfg, api, cfg.ckpt_file)
    img = read_image(cfg.image)
    outputs = net(ms.Tensor(api.preprocess_image(cfg, img)))
    meta = {"height": img.shape[0], "width": img.shape[1]}
    det = api.postprocess(cfg, [o.asnumpy() for o in outputs], [meta])[0]
    names = class_info(cfg)[0]
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        print(f"{names[int(label) - 1]:>12s} {score:.3f} [{', '.join(f'{v:.1f}' for v in box)}]")
    output = cfg.output or os.path.splitext(cfg.image)[0] + "_det.png"
    if not cv2.imwrite(output, draw_detections(img, det, names)):
        raise OSError(f"cannot write {output}")
    print(f"{len(det['scores'])} detections; picture written to {output}", flush=True)
    return det


if __name__ == "__main__":
    main()
