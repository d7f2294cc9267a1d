"""Score the binary outputs of the Ascend 310 program (ascend310_infer/):
`python postprocess.py --config_path CONFIG --result_dir DIR`.

DIR holds `<image stem>_<i>.bin` (raw float32, output i of the exported graph) for images of
the config's val split. They go through the same post-processing and metric as eval.py.
"""
import os

import src  # noqa: F401
import numpy as np

from src.errors import DataError
from src.model_utils.cli import run
from src.model_utils.config import parse_cli
from src.registry import get_model


def read_outputs(result_dir: str, stem: str, shapes) -> list[np.ndarray] | None:
    """The outputs of one image, or None when its files are missing."""
    outputs = []
    for i, shape in enumerate(shapes):
        path = os.path.join(result_dir, f"{stem}_{i}.bin")
        if not os.path.isfile(path):
            return None
        data = np.fromfile(path, np.float32)
        if data.size != int(np.prod(shape)):
            raise DataError(f"{path} holds {data.size} floats; expected shape {shape} ({int(np.prod(shape))})")
        outputs.append(data.reshape(shape))
    return outputs


def main(argv=None) -> dict:
    cfg = parse_cli(argv, description=__doc__)
    result_dir = cfg.path("result_dir")
    api = get_model(cfg.model)
    shapes = api.output_shapes(cfg, 1)
    evaluator = api.create_evaluator(cfg)
    missing = []
    for stem, meta in api.eval_items(cfg):
        outputs = read_outputs(result_dir, stem, shapes)
        if outputs is None:
            missing.append(stem)
            continue
        evaluator.update(api.postprocess(cfg, outputs, [meta]), [meta])
    if missing:
        print(f"{len(missing)} val images have no outputs in {result_dir} and are not scored "
              f"(e.g. {', '.join(missing[:5])})", flush=True)
    if not evaluator.images:
        raise DataError(f"no outputs found in {result_dir} for any val image")
    metrics = evaluator.compute()
    print(f"{api.METRIC}: {metrics[api.METRIC]:.4f} over {len(evaluator.images)} images", flush=True)
    return metrics


if __name__ == "__main__":
    run(main)
