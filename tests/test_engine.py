"""Tests for src/engine: lr schedules, TrainStep (loss scaling, clipping) and checkpoints."""
from __future__ import annotations

import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import src  # noqa: E402,F401  (before mindspore: sets ONEDNN_MAX_CPU_ISA)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mindspore as ms  # noqa: E402
from mindspore import nn, ops  # noqa: E402

from src.engine.checkpoint import (CheckpointError, load_weights, read_checkpoint,  # noqa: E402
                                   save_checkpoint_atomic)
from src.engine.lr_schedule import build_lr, warmup_cosine_lr, warmup_multistep_lr  # noqa: E402
from src.engine.train_step import TrainStep  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    yield


# ----------------------------------------------------------------------------- lr schedules

def test_cosine_warmup_and_decay():
    base, total, warm, ratio, end = 0.2, 50, 10, 0.1, 0.002
    lr = warmup_cosine_lr(base, total, warm, end, ratio)
    assert lr.shape == (total,) and lr.dtype == np.float32
    # linear ramp from base*ratio, equal increments, reaching base right after warmup
    assert lr[0] == pytest.approx(base * ratio)
    np.testing.assert_allclose(np.diff(lr[:warm]), (base - base * ratio) / warm, rtol=1e-4)
    assert lr[warm] == pytest.approx(base)
    # non-increasing after warmup, ending near end_lr and never below it
    assert np.all(np.diff(lr[warm:]) <= 1e-9)
    assert lr[-1] == pytest.approx(end, abs=(base - end) * 0.01)
    assert lr[-1] >= end - 1e-9
    # half way through the decay the cosine is at its mid point
    assert lr[warm + (total - warm) // 2] == pytest.approx((base + end) / 2, rel=1e-5)


def test_cosine_without_warmup():
    lr = warmup_cosine_lr(1.0, 100, 0, 0.0)
    assert lr[0] == pytest.approx(1.0)
    assert lr[-1] < 0.01
    assert np.all(np.diff(lr) <= 0)


def test_multistep_drops_by_gamma():
    base, gamma = 0.5, 0.2
    lr = warmup_multistep_lr(base, 40, [15, 30], gamma, warmup_steps=5, warmup_ratio=0.0)
    assert lr.shape == (40,)
    assert lr[0] == pytest.approx(0.0)
    np.testing.assert_allclose(lr[:5], base * np.arange(5) / 5, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(lr[5:15], base, rtol=1e-6)
    np.testing.assert_allclose(lr[15:30], base * gamma, rtol=1e-6)
    np.testing.assert_allclose(lr[30:], base * gamma ** 2, rtol=1e-6)


def _lr_cfg(**kw):
    cfg = dict(lr=0.1, lr_schedule="cosine", warmup_epochs=1, warmup_ratio=0.0, lr_end=0.0,
               lr_milestones=[], lr_gamma=0.1, epoch_size=4)
    cfg.update(kw)
    return types.SimpleNamespace(**cfg)


def test_build_lr_cosine_and_multistep():
    lr = build_lr(_lr_cfg(), steps_per_epoch=10)
    np.testing.assert_allclose(lr, warmup_cosine_lr(0.1, 40, 10, 0.0, 0.0))
    lr = build_lr(_lr_cfg(lr_schedule="multistep", lr_milestones=[2, 3], lr_gamma=0.5, warmup_epochs=0),
                  steps_per_epoch=10)
    assert lr.shape == (40,)
    np.testing.assert_allclose(lr[[0, 19, 20, 29, 30, 39]], [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)
    # fractional warmup epochs
    lr = build_lr(_lr_cfg(warmup_epochs=0.5, warmup_ratio=0.5), steps_per_epoch=10)
    assert lr[0] == pytest.approx(0.05) and lr[5] == pytest.approx(0.1)


def test_build_lr_unknown_schedule_named():
    with pytest.raises(ValueError, match="poly") as e:
        build_lr(_lr_cfg(lr_schedule="poly"), steps_per_epoch=10)
    assert "lr_schedule" in str(e.value)


# ----------------------------------------------------------------------------- optimizer

def test_build_optimizer_adam_betas_and_decay_groups():
    from src.engine.trainer import build_optimizer
    net = _dense()
    cfg = types.SimpleNamespace(optimizer="adam", adam_beta1=0.5, adam_beta2=0.99, weight_decay=0.01)
    opt = build_optimizer(cfg, net.trainable_params(), [0.1] * 4)
    assert float(opt.beta1.asnumpy()) == pytest.approx(0.5)
    assert float(opt.beta2.asnumpy()) == pytest.approx(0.99)
    # weight decay on the matrix only, not on the bias
    decays = {p.name: float(wd.asnumpy()) for p, wd in zip(opt.parameters, opt.weight_decay)}
    assert decays[net.weight.name] == pytest.approx(0.01) and decays[net.bias.name] == 0.0
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(types.SimpleNamespace(optimizer="lamb", weight_decay=0.0), net.trainable_params(), [0.1])


# ----------------------------------------------------------------------------- TrainStep

class MSELoss(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x, y):
        d = self.net(x) - y
        return (d * d).mean()


def _data():
    rng = np.random.RandomState(1)
    x = rng.randn(8, 4).astype(np.float32)
    y = (x @ rng.randn(4, 3) + 0.5).astype(np.float32)
    return ms.Tensor(x), ms.Tensor(y)


def _dense(seed=0, n_out=3):
    w = np.random.RandomState(seed).randn(n_out, 4).astype(np.float32) * 0.5
    return nn.Dense(4, n_out, weight_init=ms.Tensor(w), bias_init="zeros")


def _weights(net):
    return [p.asnumpy().copy() for p in net.trainable_params()]


def test_fixed_loss_scale_does_not_change_the_update():
    x, y = _data()
    results = []
    for scale in (1.0, 128.0):
        net = _dense()
        opt = nn.Momentum(net.trainable_params(), learning_rate=0.05, momentum=0.9)
        step = TrainStep(MSELoss(net), opt, loss_scale=scale)
        before = _weights(net)
        loss = step(x, y)
        results.append((float(loss.asnumpy()), _weights(net)))
        assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(_weights(net), before))   # it did update
        assert float(step.loss_scale.asnumpy()) == scale                                  # fixed stays fixed
    (l1, w1), (l128, w128) = results
    assert l1 == pytest.approx(l128)                       # the reported loss is not scaled
    for a, b in zip(w1, w128):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_loss_decreases():
    x, y = _data()
    net = _dense()
    step = TrainStep(MSELoss(net), nn.Momentum(net.trainable_params(), 0.02, 0.9), loss_scale=8.0)
    losses = [float(step(x, y).asnumpy()) for _ in range(20)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert min(losses[10:]) < min(losses[:10])


def test_dynamic_loss_scale_overflow_and_growth():
    x, y = _data()
    net = _dense()
    opt = nn.Momentum(net.trainable_params(), 0.02, 0.9)
    step = TrainStep(MSELoss(net), opt, loss_scale=16.0, dynamic=True, scale_window=2)

    def scale():
        return float(step.loss_scale.asnumpy())

    bad = x.asnumpy().copy()
    bad[0, 0] = np.inf
    bad = ms.Tensor(bad)
    huge = x.asnumpy().copy()
    huge[0] = 1e30                                          # finite input, overflowing loss and grads
    huge = ms.Tensor(huge)

    # overflow: no update (weights and momentum untouched), scale halves
    w0, m0 = _weights(net), [m.asnumpy().copy() for m in opt.moments]
    step(bad, y)
    for a, b in zip(_weights(net), w0):
        np.testing.assert_array_equal(a, b)
    for a, b in zip([m.asnumpy() for m in opt.moments], m0):
        np.testing.assert_array_equal(a, b)
    assert scale() == 8.0
    step(huge, y)
    assert scale() == 4.0
    for a, b in zip(_weights(net), w0):
        np.testing.assert_array_equal(a, b)

    # finite steps update; the scale doubles after scale_window (2) of them in a row
    step(x, y)
    assert scale() == 4.0 and int(step.good_steps.asnumpy()) == 1
    assert any(np.abs(a - b).max() > 0 for a, b in zip(_weights(net), w0))
    step(x, y)
    assert scale() == 8.0 and int(step.good_steps.asnumpy()) == 0
    # an overflow resets the count of good steps
    step(x, y)
    step(bad, y)
    assert scale() == 4.0 and int(step.good_steps.asnumpy()) == 0
    step(x, y)
    assert scale() == 4.0
    step(x, y)
    assert scale() == 8.0


def test_dynamic_loss_scale_never_below_one():
    x, y = _data()
    net = _dense()
    step = TrainStep(MSELoss(net), nn.SGD(net.trainable_params(), 0.01), loss_scale=2.0, dynamic=True,
                     scale_window=100)
    bad = x.asnumpy().copy()
    bad[1, 2] = np.nan
    for expected in (1.0, 1.0):
        step(ms.Tensor(bad), y)
        assert float(step.loss_scale.asnumpy()) == expected


def _numpy_grads(w, b, x, y):
    """d/dw, d/db of mean((x w^T + b - y)^2)."""
    d = x @ w.T + b - y
    g = 2.0 * d / d.size
    return g.T @ x, g.sum(axis=0)


def test_clip_norm():
    x, y = _data()
    lr = 0.1
    # unclipped SGD step equals lr * analytic gradient (checks the reference below)
    net = _dense()
    w0, b0 = _weights(net)
    gw, gb = _numpy_grads(w0, b0, x.asnumpy(), y.asnumpy())
    gnorm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    TrainStep(MSELoss(net), nn.SGD(net.trainable_params(), lr), loss_scale=32.0)(x, y)
    w1, b1 = _weights(net)
    np.testing.assert_allclose(w0 - w1, lr * gw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b0 - b1, lr * gb, rtol=1e-4, atol=1e-6)

    clip = 0.01
    assert gnorm > 10 * clip
    net = _dense()
    TrainStep(MSELoss(net), nn.SGD(net.trainable_params(), lr), loss_scale=32.0, clip_norm=clip)(x, y)
    w2, b2 = _weights(net)
    dw, db = w0 - w2, b0 - b2
    change = np.sqrt((dw ** 2).sum() + (db ** 2).sum())
    assert change == pytest.approx(lr * clip, rel=1e-3)
    # clipping rescales, it does not change the direction
    np.testing.assert_allclose(dw, lr * gw * clip / gnorm, rtol=1e-3, atol=1e-7)

    # a clip_norm above the gradient norm changes nothing
    net = _dense()
    TrainStep(MSELoss(net), nn.SGD(net.trainable_params(), lr), clip_norm=gnorm * 10)(x, y)
    w3, _ = _weights(net)
    np.testing.assert_allclose(w3, w1, atol=1e-6)


def test_clip_by_global_norm_flat_dot_matches_mindspore():
    # Without flat_dot the helper is MindSpore's own clip; the dot-product path must agree with it.
    from src.engine.train_step import clip_by_global_norm

    class Clip(nn.Cell):
        def construct(self, grads):
            return clip_by_global_norm(grads, 0.5, flat_dot=True)

    rng = np.random.default_rng(0)
    grads = tuple(ms.Tensor(rng.standard_normal(shape).astype(np.float32))
                  for shape in [(8, 4, 3, 3), (16, 8), (5,)])
    got = Clip()(grads)
    want = ops.clip_by_global_norm(grads, 0.5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-7)
    clipped = np.sqrt(sum((g.asnumpy() ** 2).sum() for g in got))
    assert clipped == pytest.approx(0.5, rel=1e-5)
    # below the threshold nothing changes
    small = tuple(g * 1e-3 for g in grads)
    for g, w in zip(Clip()(small), small):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-6)


# ----------------------------------------------------------------------------- checkpoints

class TwoLayer(nn.Cell):
    def __init__(self, n_out=3, seed=0):
        super().__init__()
        rng = np.random.RandomState(seed)
        self.body = nn.Dense(4, 6, weight_init=ms.Tensor(rng.randn(6, 4).astype(np.float32)),
                             bias_init=ms.Tensor(rng.randn(6).astype(np.float32)))
        self.head = nn.Dense(6, n_out, weight_init=ms.Tensor(rng.randn(n_out, 6).astype(np.float32)),
                             bias_init=ms.Tensor(rng.randn(n_out).astype(np.float32)))

    def construct(self, x):
        return self.head(self.body(x))


def _params(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


@pytest.fixture
def saved(tmp_path):
    net = TwoLayer(seed=0)
    path = save_checkpoint_atomic(net, str(tmp_path / "ckpt" / "net.ckpt"), append_dict={"epoch_num": 7})
    return net, path


def test_save_atomic_final_name_only(saved, tmp_path):
    _, path = saved
    assert path == str(tmp_path / "ckpt" / "net.ckpt")
    assert os.listdir(tmp_path / "ckpt") == ["net.ckpt"]
    # overwriting an existing checkpoint also leaves nothing else behind
    save_checkpoint_atomic(TwoLayer(seed=1), path, append_dict={"epoch_num": 8})
    assert os.listdir(tmp_path / "ckpt") == ["net.ckpt"]
    assert int(read_checkpoint(path)["epoch_num"].asnumpy()) == 8


def test_read_checkpoint_values_and_append_dict(saved):
    net, path = saved
    params = read_checkpoint(path)
    assert int(params["epoch_num"].asnumpy()) == 7
    for name, value in _params(net).items():
        np.testing.assert_array_equal(params[name].asnumpy(), value)


def test_truncated_checkpoint(saved, tmp_path):
    _, path = saved
    data = open(path, "rb").read()
    bad = str(tmp_path / "truncated.ckpt")
    with open(bad, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        load_weights(TwoLayer(), bad)


def test_flipped_bytes_caught_by_crc(saved, tmp_path):
    net, path = saved
    data = bytearray(open(path, "rb").read())
    raw = _params(net)["head.weight"].tobytes()
    mid = data.find(raw) + len(raw) // 2                    # middle of a tensor's data: still parses
    assert mid > len(raw) // 2
    data[mid:mid + 4] = bytes(b ^ 0xFF for b in data[mid:mid + 4])
    bad = str(tmp_path / "flipped.ckpt")
    with open(bad, "wb") as f:
        f.write(bytes(data))
    # without the crc check MindSpore happily loads the damaged values ...
    damaged = ms.load_checkpoint(bad, crc_check=False)
    assert set(damaged) == set(read_checkpoint(path))
    assert not np.array_equal(damaged["head.weight"].asnumpy(), _params(net)["head.weight"])
    # ... so it is the crc that catches it, and the error names the file and the crc failure
    with pytest.raises(CheckpointError, match="flipped.ckpt") as e:
        read_checkpoint(bad)
    assert "crc" in str(e.value)


def test_missing_checkpoint(tmp_path):
    missing = str(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        read_checkpoint(missing)
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        load_weights(TwoLayer(), missing)


def test_load_weights_round_trip(saved):
    src_net, path = saved
    dst = TwoLayer(seed=5)
    expected = _params(src_net)
    assert any(not np.array_equal(v, _params(dst)[k]) for k, v in expected.items())
    report = load_weights(dst, path, strict=True)
    assert report == {"loaded": 4, "missing": [], "unexpected": [], "filtered": []}   # epoch_num is bookkeeping
    for name, value in _params(dst).items():
        np.testing.assert_array_equal(value, expected[name])
    # a dict of parameters works too
    dst2 = TwoLayer(seed=6)
    load_weights(dst2, read_checkpoint(path))
    for name, value in _params(dst2).items():
        np.testing.assert_array_equal(value, expected[name])


def test_load_weights_shape_mismatch(saved):
    _, path = saved                                         # head has 3 outputs
    dst = TwoLayer(n_out=5, seed=5)
    with pytest.raises(CheckpointError) as e:
        load_weights(dst, path)
    msg = str(e.value)
    assert path in msg
    assert "head.weight: checkpoint (3, 6) vs network (5, 6)" in msg
    assert "head.bias: checkpoint (3,) vs network (5,)" in msg
    assert "body." not in msg


def test_load_weights_filter_shape_mismatch(saved):
    src_net, path = saved
    dst = TwoLayer(n_out=5, seed=5)
    head_before = _params(dst)
    report = load_weights(dst, path, filter_shape_mismatch=True)
    assert sorted(report["filtered"]) == ["head.bias", "head.weight"]
    assert report["loaded"] == 2
    after, expected = _params(dst), _params(src_net)
    np.testing.assert_array_equal(after["body.weight"], expected["body.weight"])
    np.testing.assert_array_equal(after["body.bias"], expected["body.bias"])
    np.testing.assert_array_equal(after["head.weight"], head_before["head.weight"])    # kept initial values


def test_load_weights_dense_4x3_into_4x5(tmp_path):
    path = save_checkpoint_atomic(nn.Dense(4, 3), str(tmp_path / "d.ckpt"))
    with pytest.raises(CheckpointError, match=r"weight: checkpoint \(3, 4\) vs network \(5, 4\)") as e:
        load_weights(nn.Dense(4, 5), path)
    assert "bias: checkpoint (3,) vs network (5,)" in str(e.value)


def test_load_weights_strict_missing(saved):
    src_net, path = saved
    params = read_checkpoint(path)
    del params["head.bias"]
    params["stray.param"] = params["body.bias"]
    params["moments.body.weight"] = params["body.weight"]   # optimizer state: not "unexpected"
    with pytest.raises(CheckpointError, match="head.bias") as e:
        load_weights(TwoLayer(seed=5), dict(params), strict=True, source="my.ckpt")
    msg = str(e.value)
    assert "my.ckpt" in msg and "1 of 4" in msg and "stray.param" in msg
    assert "body.weight" not in msg.split("unexpected")[0]
    # not strict: loads the rest and reports
    dst = TwoLayer(seed=5)
    report = load_weights(dst, dict(params))
    assert report["missing"] == ["head.bias"] and report["unexpected"] == ["stray.param"]
    assert report["loaded"] == 3
    np.testing.assert_array_equal(_params(dst)["head.weight"], _params(src_net)["head.weight"])


def test_load_weights_drop_prefixes(saved):
    _, path = saved
    dst = TwoLayer(seed=5)
    before = _params(dst)
    report = load_weights(dst, path, drop_prefixes=("head.",))
    assert report["missing"] == ["head.bias", "head.weight"] and report["loaded"] == 2
    np.testing.assert_array_equal(_params(dst)["head.weight"], before["head.weight"])


def test_frozen_forward_matches_the_cell_and_keeps_its_weights():
    from src.engine.inference import frozen_forward
    net = nn.SequentialCell([nn.Conv2d(3, 4, 3, has_bias=True, bias_init="normal"), nn.ReLU()])
    net.set_train(False)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    forward = frozen_forward(net)
    first = forward(x).asnumpy()
    np.testing.assert_array_equal(first, net(x).asnumpy())
    y = ms.Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))  # another shape compiles again
    np.testing.assert_array_equal(forward(y).asnumpy(), net(y).asnumpy())
    # The weights are compiled in: why eval-while-training calls the cell instead.
    net[0].weight.set_data(ms.Tensor(net[0].weight.asnumpy() * 2))
    assert not np.allclose(net(x).asnumpy(), first)
    np.testing.assert_array_equal(forward(x).asnumpy(), first)
