"""SSD300-MobileNetV2: parity with the official layer shapes, the exported decode, the loss and
the training targets."""
from __future__ import annotations

import collections
import os

import numpy as np
import pytest

from conftest import SSD_CONFIG, shared_path


@pytest.fixture(scope="module")
def cfg_81():
    """The COCO config (81 classes with background)."""
    from src.model_utils.config import parse_cli
    return parse_cli(["--config_path", os.path.join(os.path.dirname(SSD_CONFIG), "ssd300.yaml"),
                      "--class_names", "[" + ", ".join(f"c{i}" for i in range(80)) + "]", "--dataset", "txt"])


def _reference(name: str) -> list[str]:
    with open(shared_path("reference", "zoo_params", name), encoding="utf-8") as f:
        return [line.split()[1] for line in f if line.strip()]


def test_parity_with_official_trainable_and_nontrainable_shapes(cfg_81):
    from src.ssd import model
    net = model.build_network(cfg_81)
    trainable = ["x".join(map(str, p.shape)) for p in net.trainable_params()]
    others = ["x".join(map(str, p.shape)) for p in net.untrainable_params()]
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == 4_393_461
    assert collections.Counter(trainable) == collections.Counter(_reference("ssd300_mobilenetv2.trainable.txt"))
    assert collections.Counter(others) == collections.Counter(_reference("ssd300_mobilenetv2.nontrainable.txt"))


def test_priors_count_and_outputs(cfg_81):
    import mindspore as ms
    from src.ssd import model
    assert model.priors(cfg_81).shape == (1917, 4)
    net = model.build_inference_network(cfg_81)
    net.set_train(False)
    x = np.random.default_rng(0).standard_normal((2, 3, 300, 300)).astype(np.float32)
    boxes, scores = (o.asnumpy() for o in net(ms.Tensor(x)))
    assert boxes.shape == (2, 1917, 4) and scores.shape == (2, 1917, 81)
    assert scores.min() >= 0 and scores.max() <= 1
    # The in-graph decode equals the numpy coder used for the targets.
    loc, _ = (o.asnumpy() for o in net.network(ms.Tensor(x)))
    decoded = model.box_coder(cfg_81).decode(loc)
    np.testing.assert_allclose(boxes, np.clip(decoded, 0, 1), atol=1e-5)  # clipped in the graph, before NMS


def test_focal_loss_matches_numpy():
    import mindspore as ms
    from src.ssd.network import SigmoidFocalLoss
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, (2, 5)).astype(np.int32)
    got = SigmoidFocalLoss(4, 2.0, 0.75)(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()
    t = np.eye(4, dtype=np.float32)[labels]
    p = 1 / (1 + np.exp(-logits))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = t * p + (1 - t) * (1 - p)
    want = (t * 0.75 + (1 - t) * 0.25) * (1 - p_t) ** 2 * ce
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_training_targets_decode_back_to_the_boxes(tiny_ssd_args):
    """Matched priors' targets decode to the augmented ground truth; labels land on positives only."""
    from src.model_utils.config import parse_cli
    from src.ssd import model
    cfg = parse_cli(tiny_ssd_args)
    data = model.create_dataset(cfg, "train")
    batch = next(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert batch["image"].shape == (4, 3, 300, 300) and batch["image"].dtype == np.float32
    assert batch["gt_loc"].shape == (4, 1917, 4) and batch["gt_label"].shape == (4, 1917)
    coder = model.box_coder(cfg)
    for i in range(4):
        pos = batch["gt_label"][i] > 0
        assert pos.sum() == batch["num_matched"][i] > 0
        assert batch["gt_label"][i].max() <= 6
        decoded = coder.decode(batch["gt_loc"][i])[pos]
        assert np.all(decoded[:, 2:] > decoded[:, :2])
        assert decoded.min() > -0.01 and decoded.max() < 1.01
        assert np.all(batch["gt_loc"][i][~pos] == 0)


def test_mixed_precision_keeps_parameter_names_and_runs(tiny_ssd_args):
    """Ascend/GPU configs train with amp O2; their checkpoints must load into the fp32 network."""
    import mindspore as ms
    from src.engine.trainer import mixed_precision
    from src.model_utils.config import parse_cli
    from src.ssd import model
    cfg = parse_cli(tiny_ssd_args)
    net = model.build_train_network(cfg)
    before = [p.name for p in net.get_parameters()]
    mixed_precision(net, "O2")
    assert [p.name for p in net.get_parameters()] == before
    n = len(model.priors(cfg))
    loss = net(ms.Tensor(np.zeros((1, 3, 300, 300), np.float32)), ms.Tensor(np.zeros((1, n, 4), np.float32)),
               ms.Tensor(np.zeros((1, n), np.int32)), ms.Tensor(np.ones((1,), np.int32)))
    assert loss.dtype == ms.float32 and np.isfinite(loss.asnumpy())


def test_folding_batchnorm_keeps_inference_outputs(cfg_81):
    import mindspore as ms
    from src.engine.inference import fold_batchnorm, frozen_forward
    from src.ops import aot
    from src.ssd import model
    net = model.build_inference_network(cfg_81)
    rng = np.random.default_rng(3)
    for p in net.get_parameters():  # non-trivial statistics, as after training
        if "moving_mean" in p.name or "beta" in p.name:
            p.set_data(ms.Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
        if "moving_variance" in p.name or "gamma" in p.name:
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    net.set_train(False)
    x = ms.Tensor(rng.standard_normal((1, 3, 300, 300)).astype(np.float32))
    before = [o.asnumpy() for o in net(x)]
    assert fold_batchnorm(net) == 77
    assert not [c for _, c in net.cells_and_names() if isinstance(c, ms.nn.BatchNorm2d)]
    # Every 1x1 conv (backbone, extra layers and heads) now runs on the 1x1 kernel.
    pointwise = [c for _, c in net.cells_and_names() if isinstance(c, ms.nn.Conv2d) and c.kernel_size == (1, 1)]
    assert len(pointwise) == 55
    if aot.vector_kernels():
        assert all(c.inference_weight is not None for c in pointwise)
    net.set_train(False)
    after = [o.asnumpy() for o in net(x)]
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # eval.py and infer.py run the folded network through frozen_forward.
    for a, b in zip(after, [o.asnumpy() for o in frozen_forward(net)(x)]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
