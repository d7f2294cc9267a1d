"""Word accuracy and normalised edit distance of a text recognizer, per evaluation set."""
from __future__ import annotations

import json
import os
from typing import Sequence


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


class TextAccuracy:
    """Collects (prediction, ground truth) pairs; `compute()` gives, over all samples and per
    evaluation set: `accuracy` (exact word match) and `norm_edit_distance`, the ICDAR 2019
    "1 - N.E.D." score (mean over words of 1 - distance / max(len(pred), len(gt))).

    Ground truth arrives normalised by the model's alphabet (lowercased for the 36-character
    protocol), so the comparison is exact.
    """

    def __init__(self, set_names: Sequence[str] = ("val",)):
        self.set_names = list(set_names)
        self.reset()

    def reset(self) -> None:
        self.images: list[dict] = []

    def update(self, predictions: Sequence[dict], metas: Sequence[dict]) -> None:
        """predictions: [{"text", "confidence"}]; metas: [{"label", "set", "key"}]."""
        for pred, meta in zip(predictions, metas):
            self.images.append({"key": meta.get("key", ""), "set": int(meta.get("set", 0)), "label": meta["label"],
                                "text": pred["text"], "confidence": float(pred["confidence"])})

    @staticmethod
    def _score(rows: list[dict]) -> dict:
        if not rows:
            return {"accuracy": 0.0, "norm_edit_distance": 0.0, "count": 0}
        correct = sum(r["text"] == r["label"] for r in rows)
        ned = sum(1 - edit_distance(r["text"], r["label"]) / max(len(r["text"]), len(r["label"]), 1) for r in rows)
        return {"accuracy": correct / len(rows), "norm_edit_distance": ned / len(rows), "count": len(rows)}

    def compute(self, verbose: bool = True) -> dict:
        """{"accuracy", "norm_edit_distance", "count", "sets": {name: {...}}}, printed as a table."""
        metrics = self._score(self.images)
        metrics["sets"] = {name: self._score([r for r in self.images if r["set"] == i])
                           for i, name in enumerate(self.set_names)}
        if verbose:
            print(f"{'set':<24s} {'count':>7s} {'accuracy':>9s} {'1-N.E.D.':>9s}")
            rows = list(metrics["sets"].items()) + ([("all", metrics)] if len(self.set_names) > 1 else [])
            for name, m in rows:
                print(f"{name:<24s} {m['count']:>7d} {m['accuracy']:>9.4f} {m['norm_edit_distance']:>9.4f}")
        return metrics

    def write_results(self, out_dir: str) -> str:
        """Write every prediction with its ground truth as json lines; returns the path."""
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "predictions.jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for r in self.images:
                f.write(json.dumps({**r, "set": self.set_names[r["set"]]}, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
        return path
