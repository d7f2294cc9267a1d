"""Export the inference graph: `python export.py --config_path CONFIG --ckpt_file CKPT
--file_format MINDIR|ONNX|AIR --file_name NAME`. AIR needs an Ascend device."""
import os

import src  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)
import mindspore as ms

from src.engine.inference import load_inference_network
from src.errors import ConfigError
from src.model_utils.cli import run
from src.model_utils.config import parse_cli
from src.model_utils.device import init_context
from src.ops.aot import standard_operators
from src.registry import get_model

FORMATS = ("MINDIR", "ONNX", "AIR")


def main(argv=None) -> str:
    cfg = parse_cli(argv, description=__doc__)
    fmt = str(cfg.file_format).upper()
    if fmt not in FORMATS:
        raise ConfigError(f"--file_format must be one of {', '.join(FORMATS)}, got '{cfg.file_format}'")
    if fmt == "AIR" and cfg.device_target != "Ascend":
        raise ConfigError("AIR export needs an Ascend device (--device_target Ascend on an Ascend host); "
                         "use MINDIR (any device) or ONNX here.")
    init_context(cfg)
    api = get_model(cfg.model)
    with standard_operators():  # the exported graph must run where our CPU kernels do not exist
        net = load_inference_network(cfg, api, cfg.ckpt_file, fold=False)
    name = cfg.file_name or os.path.join(os.path.abspath(cfg.output_dir), cfg.model)
    ms.export(net, *api.example_inputs(cfg, cfg.export_batch_size), file_name=name, file_format=fmt)
    path = f"{name}.{fmt.lower()}" if fmt != "MINDIR" else f"{name}.mindir"
    print(f"exported {path}", flush=True)
    return path


if __name__ == "__main__":
    run(main)
