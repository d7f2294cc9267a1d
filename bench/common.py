"""Helpers shared by the benchmarks: machine description and the one-line JSON result."""
from __future__ import annotations

import json
import os
import platform
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        # VMs often name only the brand ("AMD EPYC"); family and model tell CPU generations
        # apart, which here differed 2x in speed under the same name.
        cpu = f"{fields.get('model name', cpu)} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    except OSError:
        pass
    import mindspore
    import numpy
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "mindspore": mindspore.__version__, "numpy": numpy.__version__,
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}


def median_time(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn (warm up and compile before calling this)."""
    import time
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def inference_latencies(net, x, repeats: int, rounds: int = 4) -> dict:
    """Median seconds of one forward pass of the eval-mode `net` on x, with outputs copied to
    numpy, called two ways: "" through `frozen_forward`, as eval.py and infer.py call it, and
    "_cell_call" as `net(x)`, as the official scripts call their networks. The two take turns
    in `rounds` blocks of back-to-back calls, so that both see the same machine state (this
    VM drifts) while each block runs with its own graph's weights in cache, as a real loop would.
    Compilation and each block's first call are excluded."""
    import time
    from src.engine.inference import frozen_forward
    calls = {"": frozen_forward(net), "_cell_call": net}
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            [o.asnumpy() for o in call(x)]  # compiles on the first round, warms the caches on later ones
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                [o.asnumpy() for o in call(x)]
                times[key].append(time.perf_counter() - start)
    return {key: sorted(t)[len(t) // 2] for key, t in times.items()}


def operator_variants():
    """(result-key suffix, context manager to build networks in): the repository's CPU kernels
    (src/ops) and MindSpore's own operators, so that one run measures both on the same machine
    state (this VM's speed drifts between runs)."""
    import contextlib
    from src.ops.aot import standard_operators
    return (("", contextlib.nullcontext), ("_standard_ops", standard_operators))


def emit(result: dict) -> None:
    """Print the benchmark's single JSON line."""
    result["machine"] = machine()
    print(json.dumps(result, sort_keys=True), flush=True)


def train_and_evaluate_last_epoch(argv: list[str]):
    """Train with the config and overrides in `argv`, evaluating at the last epoch only.
    Returns (config, trainer summary, wall seconds, (epoch, metrics) of that evaluation)."""
    import time
    from src.engine.trainer import train
    from src.model_utils.config import parse_cli
    cfg = parse_cli(argv)
    cfg.run_eval = True
    cfg.eval_start_epoch = cfg.epoch_size
    start = time.time()
    summary = train(cfg)
    return cfg, summary, time.time() - start, summary["eval_history"][-1]
