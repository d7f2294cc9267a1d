"""SSD300-MobileNetV2 speed on this machine: training step at batch 2/8/32, inference latency at
batch 1 (network and post-processing separately), data pipeline images/s with 1 and 2 workers.

    python bench/ssd_speed.py                  # with ONEDNN_MAX_CPU_ISA=AVX2 (the default here)
    python bench/ssd_speed.py --no-avx2-flag   # re-runs itself without the variable, for comparison

Prints one JSON line per ISA setting. Each figure is the median of several timed repetitions after
warm-up (graph compile excluded). Keys ending in `_standard_ops` are the same measurement with
MindSpore's own operators instead of the repository's CPU kernels (src/ops), taken in the same
run so that the two compare on the same machine state. Inference is timed through
`frozen_forward`, as eval.py and infer.py run it, and (keys with `_cell_call`) called as a Cell,
as the official scripts run theirs; `infer_speedup_vs_official_way` is the ratio of the two ends.
"""
import argparse
import os
import subprocess
import sys
import time

import common


def measure(train_batches, repeats: int) -> dict:
    import numpy as np
    import mindspore as ms
    from mindspore import nn
    from src.engine.inference import fold_batchnorm
    from src.engine.train_step import TrainStep
    from src.model_utils.config import parse_cli
    from src.ssd import model

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    cfg = parse_cli(["--config_path", os.path.join(common.REPO_ROOT, "configs/ssd/ssd300.yaml"), "--dataset", "txt",
                     "--class_names", "[" + ",".join(f"c{i}" for i in range(80)) + "]"])  # 81 classes as COCO
    rng = np.random.default_rng(0)
    result = {}
    # Inference first, in a process that has not built training graphs, as in eval.py and infer.py.
    x = ms.Tensor(rng.standard_normal((1, 3, 300, 300)).astype(np.float32))
    for suffix, operators in common.operator_variants():
        for folded in (False, True):  # eval.py and infer.py use the folded graph
            with operators():
                infer = model.build_inference_network(cfg)
            if folded:
                fold_batchnorm(infer)
            infer.set_train(False)
            outs = [o.asnumpy() for o in infer(x)]
            name = "infer_network_s_bs1" if folded else "infer_network_unfolded_bn_s_bs1"
            for call, seconds in common.inference_latencies(infer, x, 80).items():
                result[name + call + suffix] = round(seconds, 4)
    # Post-processing on realistic scores: a trained network's scores are mostly near zero with
    # a few confident priors; random sigmoid outputs would put every prior above min_score.
    scores = (rng.random(outs[1].shape) ** 8 * 0.3).astype(np.float32)
    scores[0, rng.integers(0, scores.shape[1], 60), rng.integers(1, 81, 60)] = rng.uniform(0.5, 1, 60)
    meta = [{"width": 640, "height": 480}]
    post = common.median_time(lambda: model.postprocess(cfg, [outs[0], scores], meta), 20)
    result["postprocess_s_bs1"] = round(post, 4)
    for suffix, _ in common.operator_variants():
        result[f"infer_total_s_bs1{suffix}"] = round(result[f"infer_network_s_bs1{suffix}"] + post, 4)
    # As eval.py runs (our kernels, folded, frozen_forward) against the official network as its
    # scripts run it (MindSpore's operators, BatchNorm unfolded, called as a Cell), both with
    # this repository's post-processing (the official numpy NMS is slower).
    result["infer_speedup_vs_official_way"] = round(
        (result["infer_network_unfolded_bn_s_bs1_cell_call_standard_ops"] + post) / result["infer_total_s_bs1"], 2)
    # The part of that from the operators alone: both folded, both through frozen_forward.
    result["infer_speedup_same_graph_and_call"] = round(
        result["infer_total_s_bs1_standard_ops"] / result["infer_total_s_bs1"], 2)
    priors_n = len(model.priors(cfg))
    for bs in train_batches:
        inputs = (ms.Tensor(rng.standard_normal((bs, 3, 300, 300)).astype(np.float32)),
                  ms.Tensor(rng.standard_normal((bs, priors_n, 4)).astype(np.float32) * 0.1),
                  ms.Tensor(rng.integers(0, 81, (bs, priors_n)).astype(np.int32)),
                  ms.Tensor(np.full((bs,), 4, np.int32)))
        for suffix, operators in common.operator_variants():
            with operators():
                net = model.build_train_network(cfg)
            step = TrainStep(net, nn.Momentum(net.trainable_params(), 0.01, 0.9))
            step.set_train(True)  # BatchNorm in training mode, as Model.train sets it
            step(*inputs).asnumpy()  # compile
            result[f"train_step_s_bs{bs}{suffix}"] = round(
                common.median_time(lambda: step(*inputs).asnumpy(), repeats), 4)
    return result


def measure_pipeline(workers: int, images: int = 96) -> float:
    """Training images/s of the shapes pipeline (decode, augment, match, encode), no network."""
    from src.model_utils.config import parse_cli
    from src.ssd import model
    cfg = parse_cli(["--config_path", os.path.join(common.REPO_ROOT, "configs/ssd/ssd300_shapes.yaml"),
                     "--num_workers", str(workers), "--batch_size", "16"])
    data = model.create_dataset(cfg, "train")
    it = data.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in it:
        n += 16
        if n >= images:
            break
    return round(n / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-avx2-flag", action="store_true", help="run without ONEDNN_MAX_CPU_ISA")
    parser.add_argument("--batches", default="2,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_avx2_flag and not args.child:
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
        env["ONEDNN_MAX_CPU_ISA"] = "ALL"  # `src` keeps a value the user set: ALL means no cap
        sys.exit(subprocess.call([sys.executable, __file__, "--child", "--batches", args.batches,
                                  "--repeats", str(args.repeats)], env=env))
    import src  # noqa: F401
    result = {"benchmark": "ssd_speed", "model": "ssd300_mobilenet_v2", "classes": 81, "input": "300x300"}
    result.update(measure([int(b) for b in args.batches.split(",")], args.repeats))
    for workers in (1, 2):
        result[f"pipeline_img_per_s_workers{workers}"] = measure_pipeline(workers)
    result["official_reference"] = {"train_step_s_bs2": 0.56, "train_step_s_bs32": 7.65,
                                    "infer_network_s_bs1_before_nms": 0.084}
    common.emit(result)


if __name__ == "__main__":
    main()
