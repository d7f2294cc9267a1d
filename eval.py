"""Evaluate a checkpoint: `python eval.py --config_path CONFIG --checkpoint_path CKPT`.

Prints the metric table (pycocotools for detectors, word accuracy per set for recognizers),
writes the results to <output_dir>/eval/ (detections.json in original-image coordinates, or
predictions.jsonl) with metrics.json, and returns the metrics.
"""
import json
import os

import src  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)
from src.engine.evaluate import run_evaluation
from src.engine.inference import frozen_forward, load_inference_network
from src.model_utils.cli import run
from src.model_utils.config import parse_cli
from src.model_utils.device import init_context
from src.registry import get_model


def main(argv=None) -> dict:
    cfg = parse_cli(argv, description=__doc__)
    init_context(cfg)
    api = get_model(cfg.model)
    net = load_inference_network(cfg, api, cfg.checkpoint_path)
    dataset = api.create_dataset(cfg, "val")
    evaluator = api.create_evaluator(cfg)
    metrics = run_evaluation(api, cfg, frozen_forward(net), dataset, evaluator)
    out_dir = os.path.join(os.path.abspath(cfg.output_dir), "eval")
    results = evaluator.write_results(out_dir)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    print(f"{api.METRIC}: {metrics[api.METRIC]:.4f}; results written to {results}", flush=True)
    return metrics


if __name__ == "__main__":
    run(main)
