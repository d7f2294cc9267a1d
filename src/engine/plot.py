"""Training curves as a picture: the loss terms per logged step with the learning rate on a
second axis, and the evaluation metrics per evaluation, read back from `loss_<rank>.log`.

The log is written by src/engine/callbacks.py, one `key: value` line per logged step and per
evaluation:

    epoch: 1 step: 10/125 global_step: 10 loss: 3.21 lr: 0.002 step_time: 410.3 ms
    epoch: 1 step: 10/125 global_step: 10 loss: 3.21 rpn_cls: 0.61 rpn_reg: 0.12 lr: 0.002 ...
    eval epoch: 3 global_step: 375 metric: mAP mAP: 0.2811 mAP50: 0.5402 ...

(`metric` names the one the best checkpoint is kept by: the picture shows that one.)

A resumed run appends to the same log after dropping the lines past the step it resumed from,
so the curve of an interrupted and resumed run reads as one run.
"""
from __future__ import annotations

import os
import re

_PAIR = re.compile(r"([A-Za-z_][\w/@.]*): (\S+)")
# Fields of a step line that are not loss terms.
_STEP_FIELDS = ("epoch", "step", "global_step", "lr", "step_time")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_loss_log(path: str) -> dict:
    """{"steps": [...], "losses": {name: [...]}, "lr": [...], "evals": [(epoch, step, {metric: value})],
    "metric": the name the evaluations were kept by, or None}. Later lines for a step already seen
    replace the earlier ones (a resumed run's log)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"loss log not found: {path}")
    steps: dict[int, dict] = {}
    evals: dict[int, tuple] = {}
    metric = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = {k: v for k, v in _PAIR.findall(line)}
            if "global_step" not in fields:
                continue
            step = int(fields["global_step"])
            if line.startswith("eval "):
                metric = fields.get("metric", metric)
                metrics = {k: _number(v) for k, v in fields.items() if k not in ("epoch", "global_step", "metric")}
                evals[step] = (int(fields.get("epoch", 0)), step, {k: v for k, v in metrics.items() if v is not None})
            else:
                steps[step] = fields
    order = sorted(steps)
    names = [k for k in (steps[order[0]] if order else {}) if k not in _STEP_FIELDS]
    return {"steps": order,
            "losses": {n: [_number(steps[s].get(n, "nan")) for s in order] for n in names},
            "lr": [_number(steps[s]["lr"]) if "lr" in steps[s] else None for s in order],
            "evals": [evals[s] for s in sorted(evals)], "metric": metric}


def plot_training(log_path: str, output: str | None = None) -> str:
    """Draw `log_path` into `output` (default: the log's name with .png) and return its path.
    Written under a temporary name and renamed, so a reader never sees half a picture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_loss_log(log_path)
    output = output or os.path.splitext(log_path)[0] + ".png"
    with_evals = bool(data["evals"])
    fig, axes = plt.subplots(2 if with_evals else 1, 1, figsize=(9, 7 if with_evals else 4.5), squeeze=False)
    ax = axes[0][0]
    for i, (name, values) in enumerate(data["losses"].items()):
        ax.plot(data["steps"], values, label=name, linewidth=1.6 if i == 0 else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if any(v is not None for v in data["lr"]):
        lr_ax = ax.twinx()
        lr_ax.plot(data["steps"], data["lr"], color="grey", linestyle="--", linewidth=1.0, label="lr")
        lr_ax.set_ylabel("learning rate")
        more_lines, more_labels = lr_ax.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
    if lines:
        ax.legend(lines, labels, loc="upper right", fontsize=8)
    ax.set_title(os.path.basename(log_path))
    if with_evals:
        ax = axes[1][0]
        metrics = [data["metric"]] if data["metric"] else list(dict.fromkeys(k for _, _, m in data["evals"] for k in m))
        for name in metrics:
            points = [(step, m[name]) for _, step, m in data["evals"] if name in m]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(data["metric"] or "evaluation")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, output)
    return output
