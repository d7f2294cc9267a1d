"""Train any model of the zoo: `python train.py --config_path configs/<model>/<variant>.yaml [--key value ...]`.

With no arguments: SSD300 on the embedded shapes dataset (default_config.yaml).
"""
import src  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)
from src.engine.trainer import train
from src.model_utils.cli import run
from src.model_utils.config import parse_cli
from src.model_utils.moxing_adapter import moxing_wrapper


def main(argv=None):
    cfg = parse_cli(argv, description=__doc__)
    return moxing_wrapper(cfg)(train)(cfg)


if __name__ == "__main__":
    run(main)
