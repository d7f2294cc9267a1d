"""Redraw a run's training curves from its loss log (for runs copied from another machine):
`python plot_loss.py OUTPUT_DIR/loss_0.log [--output curves.png]`.

Draws each loss term per logged step with the learning rate on a second axis, and the
evaluation metric per evaluation, into --output (default: the log's name with .png, the
picture train.py itself writes when it evaluates and when it ends).
"""
import argparse

from src.engine.plot import plot_training
from src.model_utils.cli import run


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="a loss_<rank>.log written by train.py")
    parser.add_argument("--output", default=None, help="picture to write (default: LOG with .png)")
    args = parser.parse_args(argv)
    path = plot_training(args.log, args.output)
    print(f"wrote {path}", flush=True)
    return path


if __name__ == "__main__":
    run(main)
