"""Rewrite a checkpoint of the MindSpore model zoo in this repository's parameter names:
`python convert_checkpoint.py --config_path CONFIG --input ZOO.ckpt --output OURS.ckpt`.

The config names the model (and its class count). A model-zoo training or evaluation
checkpoint is recognised by its parameter names and mapped by the model's rename table; the
report says how many parameters were mapped and what was ignored (optimizer state, layers the
official network defines but never uses). Every parameter of the network must be found.
The output holds the network's weights only, is written under a temporary name and renamed
when complete, and loads wherever a checkpoint is accepted (eval.py --checkpoint_path,
export.py / infer.py --ckpt_file, pre_trained). Those accept the model-zoo file directly too;
converting once saves the mapping on every load.
"""
import argparse
import os

import src  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)

from src.engine.checkpoint import load_weights, save_checkpoint_atomic
from src.model_utils.cli import run
from src.model_utils.config import parse_cli
from src.model_utils.device import init_context
from src.ops.aot import standard_operators
from src.registry import get_model


def main(argv=None) -> str:
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--input", required=True, help="checkpoint of the model zoo")
    files.add_argument("--output", required=True, help="checkpoint to write, in this repository's names")
    args, rest = files.parse_known_args(argv)
    cfg = parse_cli(rest, description=__doc__)
    init_context(cfg)
    api = get_model(cfg.model)
    with standard_operators():  # plain layers: nothing but the checkpoint's parameters
        net = api.build_inference_network(cfg)
    report = load_weights(net, os.path.abspath(args.input), strict=True, official=api.OFFICIAL_CHECKPOINT)
    path = save_checkpoint_atomic(net, args.output)
    print(f"wrote {report['loaded']} parameters of {cfg.model} to {path}", flush=True)
    return path


if __name__ == "__main__":
    run(main)
