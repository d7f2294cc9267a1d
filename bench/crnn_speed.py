"""CRNN speed on this machine: training step at batch 64 (images/s), inference latency at batch 1
and 64 (network and CTC decoding separately), data pipeline images/s.

    python bench/crnn_speed.py [--repeats 5]

Prints one JSON line. Each figure is the median of several timed repetitions after warm-up
(graph compile excluded); keys ending in `_standard_ops` repeat the measurement in the same run
with MindSpore's own operators instead of the repository's CPU kernels (src/ops). The training
step is the one train.py runs: SGD with Nesterov momentum, global-norm clipping, CTC loss.
Inference is timed through `frozen_forward`, as eval.py and infer.py run it, and (keys with
`_cell_call`) called as a Cell, as the official scripts run theirs.
"""
import argparse
import os
import time

import common


def _config(*overrides):
    from src.model_utils.config import parse_cli
    return parse_cli(["--config_path", os.path.join(common.REPO_ROOT, "configs/crnn/crnn_words.yaml"), *overrides])


def measure(batch: int, repeats: int) -> dict:
    import numpy as np
    import mindspore as ms
    from src.crnn import model
    from src.engine.inference import fold_batchnorm
    from src.engine.train_step import TrainStep
    from src.engine.trainer import build_optimizer

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    # RGB input and CTC alone: the official network and loss that the reference figures were
    # measured on (crnn_words.yaml trains on grey crops, which makes only the first conv
    # cheaper, and adds a per-step cross-entropy of a few thousand multiply-adds per crop).
    cfg = _config("--image_channels", "3", "--align_loss_steps", "0")
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 11, batch).astype(np.int32)
    labels = rng.integers(0, 36, (batch, cfg.max_text_length)).astype(np.int32)
    inputs = (ms.Tensor(rng.uniform(-1, 1, (batch, 3, 32, 100)).astype(np.float32)), ms.Tensor(labels),
              ms.Tensor(lengths))
    result = {}
    for suffix, operators in common.operator_variants():
        with operators():
            net = model.build_train_network(cfg)
        step = TrainStep(net, build_optimizer(cfg, net.trainable_params(), np.full(10, cfg.lr, np.float32)),
                         clip_norm=cfg.clip_norm)
        step.set_train(True)  # BatchNorm in training mode, as Model.train sets it
        step(*inputs).asnumpy()  # compile
        seconds = common.median_time(lambda: step(*inputs).asnumpy(), repeats)
        result[f"train_step_s_bs{batch}{suffix}"] = round(seconds, 4)
        result[f"train_img_per_s_bs{batch}{suffix}"] = round(batch / seconds, 1)

        with operators():
            infer = model.build_inference_network(cfg)
        fold_batchnorm(infer)  # eval.py, infer.py and export.py use the folded graph
        infer.set_train(False)
        for bs in (1, batch):
            x = ms.Tensor(rng.uniform(-1, 1, (bs, 3, 32, 100)).astype(np.float32))
            probs = [o.asnumpy() for o in infer(x)]
            latencies = common.inference_latencies(infer, x, 80 if bs == 1 else 12)
            decode = common.median_time(lambda: model.postprocess(cfg, probs, None), 20)
            for call, seconds in latencies.items():
                result[f"infer_network_s_bs{bs}{call}{suffix}"] = round(seconds, 4)
            result[f"decode_s_bs{bs}{suffix}"] = round(decode, 5)
            result[f"infer_total_s_bs{bs}{suffix}"] = round(latencies[""] + decode, 4)
    for bs in (1, batch):
        # Ours as eval.py runs it against MindSpore's operators called as a Cell, as the official
        # scripts do (BatchNorm folded, which they do not: in MindSpore's favour); then against
        # MindSpore's operators called the same way as ours.
        ours = result[f"infer_total_s_bs{bs}"]
        decode = result[f"decode_s_bs{bs}_standard_ops"]
        result[f"infer_speedup_bs{bs}_vs_official_way"] = round(
            (result[f"infer_network_s_bs{bs}_cell_call_standard_ops"] + decode) / ours, 2)
        result[f"infer_speedup_bs{bs}_same_call"] = round(result[f"infer_total_s_bs{bs}_standard_ops"] / ours, 2)
    return result


def measure_pipeline(batches: int = 20) -> float:
    """Training images/s of the word-crop pipeline (LMDB read, decode, resize, encode), no network."""
    from src.crnn import model
    cfg = _config()
    data = model.create_dataset(cfg, "train")
    it = data.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return round(batches * cfg.batch_size / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import src  # noqa: F401
    result = {"benchmark": "crnn_speed", "model": "crnn", "classes": 37, "input": "3x32x100"}
    result.update(measure(args.batch, args.repeats))
    result["pipeline_img_per_s"] = measure_pipeline()
    result["official_reference"] = {"train_step_s_bs64": 3.37, "train_img_per_s_bs64": 19, "infer_s_bs1": 0.039}
    common.emit(result)


if __name__ == "__main__":
    main()
