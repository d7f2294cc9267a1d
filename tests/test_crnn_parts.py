"""CRNN's parts: parity with the official layer shapes, CTC loss against a numpy reference,
alphabet and greedy decoding, the accuracy metric, and bad LMDB records."""
from __future__ import annotations

import collections
import logging
import os

import cv2
import numpy as np
import pytest

from conftest import ROOT, shared_path

CRNN_CONFIG = os.path.join(ROOT, "configs", "crnn", "crnn.yaml")


def _cfg(*overrides):
    from src.model_utils.config import parse_cli
    return parse_cli(["--config_path", CRNN_CONFIG, *overrides])


def _reference(name: str) -> list[str]:
    """Shapes of the official parameters, without the BatchNorm `vgg.bn1` that the official
    network defines but never calls (ours does not have it)."""
    with open(shared_path("reference", "zoo_params", name), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    return [shape for param, shape in rows if not param.startswith("vgg.bn1.")]


def test_parity_with_official_trainable_and_nontrainable_shapes():
    from src.crnn import model
    net = model.build_network(_cfg())
    trainable = ["x".join(map(str, p.shape)) for p in net.trainable_params()]
    others = ["x".join(map(str, p.shape)) for p in net.untrainable_params()]
    # The official 8,333,157 less bn1's gamma and beta.
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == 8_333_157 - 2 * 512
    assert collections.Counter(trainable) == collections.Counter(_reference("crnn.trainable.txt"))
    assert collections.Counter(others) == collections.Counter(_reference("crnn.nontrainable.txt"))


def test_printable_config_has_95_classes_and_grey_input_works():
    import mindspore as ms
    from src.crnn import model
    cfg = _cfg("--alphabet", "printable_94", "--case_sensitive", "True", "--image_channels", "1")
    assert model.num_classes(cfg) == 95
    net = model.build_inference_network(cfg)
    net.set_train(False)
    (probs,) = net(*model.example_inputs(cfg, 2))
    assert probs.shape == (2, 24, 95) == model.output_shapes(cfg, 2)[0]
    np.testing.assert_allclose(probs.asnumpy().sum(-1), 1.0, atol=1e-5)
    assert isinstance(probs, ms.Tensor)


def _numpy_ctc_nll(log_probs: np.ndarray, target: list[int], blank: int) -> float:
    """-log p(target | x) by the CTC forward recursion over the blank-extended target."""
    ext = [blank]
    for c in target:
        ext += [c, blank]
    t_steps, s = log_probs.shape[0], len(ext)
    alpha = np.full((t_steps, s), -np.inf)
    alpha[0, 0] = log_probs[0, blank]
    if s > 1:
        alpha[0, 1] = log_probs[0, ext[1]]
    for t in range(1, t_steps):
        for i in range(s):
            terms = [alpha[t - 1, i]]
            if i > 0:
                terms.append(alpha[t - 1, i - 1])
            if i > 1 and ext[i] != blank and ext[i] != ext[i - 2]:
                terms.append(alpha[t - 1, i - 2])
            alpha[t, i] = np.logaddexp.reduce(terms) + log_probs[t, ext[i]]
    return float(-np.logaddexp(alpha[-1, -1], alpha[-1, -2] if s > 1 else -np.inf))


def _fixed_logits():
    """A 'network' whose input is its logits, so losses can be checked on chosen values."""
    import mindspore as ms

    class FixedLogits(ms.nn.Cell):
        def construct(self, x):
            return x
    return FixedLogits()


def test_ctc_loss_matches_numpy_forward_algorithm():
    import mindspore as ms
    from src.crnn.network import CRNNWithLoss

    rng = np.random.default_rng(0)
    t_steps, batch, classes = 24, 3, 6
    blank = classes - 1
    logits = rng.normal(size=(t_steps, batch, classes)).astype(np.float32)
    targets = [[0, 1, 1, 2], [3], [4, 0, 4, 0, 2, 2, 1]]  # repeats need a blank in between
    label = np.full((batch, 8), blank, np.int32)
    for i, t in enumerate(targets):
        label[i, :len(t)] = t
    lengths = np.array([len(t) for t in targets], np.int32)
    loss = CRNNWithLoss(_fixed_logits(), blank)(ms.Tensor(logits), ms.Tensor(label), ms.Tensor(lengths))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.mean([_numpy_ctc_nll(log_probs[:, i], targets[i], blank) for i in range(batch)])
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-4)


def test_aligned_loss_adds_a_cross_entropy_that_fades_out():
    import mindspore as ms
    from src.crnn.network import CRNNWithAlignedLoss, CRNNWithLoss
    from src.data.text.dataset import ctc_step_targets

    rng = np.random.default_rng(1)
    t_steps, batch, classes = 24, 2, 6
    blank = classes - 1
    logits = rng.normal(size=(t_steps, batch, classes)).astype(np.float32)
    label = np.array([[0, 1, 1, blank], [3, 2, blank, blank]], np.int32)
    lengths = np.array([3, 2], np.int32)
    targets = np.stack([ctc_step_targets([0.2, 0.5, 0.6], [0, 1, 1], t_steps, blank),
                        np.full(t_steps, -1, np.int32)])  # the second sample has no targets
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    cross_entropy = -sum(log_probs[t, 0, targets[0, t]] for t in range(t_steps) if targets[0, t] >= 0) / batch
    inputs = [ms.Tensor(v) for v in (logits, label, lengths)]
    ctc = float(CRNNWithLoss(_fixed_logits(), blank)(*inputs).asnumpy())
    net = CRNNWithAlignedLoss(_fixed_logits(), blank, fade_steps=2)
    assert [p.name for p in net.get_parameters()] == ["align_step"] and not net.trainable_params()
    losses = [float(net(*inputs, ms.Tensor(targets)).asnumpy()) for _ in range(4)]
    expected = [ctc + w * cross_entropy for w in (1.0, 0.5, 0.0, 0.0)]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert float(net.align_step.asnumpy()) == 4.0


def _collapse(path, blank):
    """Greedy CTC decoding of a path of class ids (-1 counts as blank)."""
    out, prev = [], None
    for c in path:
        if c >= 0 and c != blank and c != prev:
            out.append(int(c))
        prev = c if c >= 0 else blank
    return out


def test_ctc_step_targets_are_valid_paths_near_the_centres():
    from src.data.text.dataset import IGNORE, ctc_step_targets
    blank, steps = 36, 24
    target = ctc_step_targets([0.1, 0.3, 0.5, 0.7], [1, 2, 3, 4], steps, blank)
    # step t looks at (t + 1) / 25 of the width
    assert [int(np.flatnonzero(target == c)[0]) for c in (1, 2, 3, 4)] == [2, 6, 12, 16]
    assert target[1] == target[3] == IGNORE and target[9] == blank

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 13))
        ids = list(rng.integers(0, 3, n))  # three classes: many repeats
        centres = sorted(rng.uniform(0, 1, n))
        target = ctc_step_targets(centres, ids, steps, blank)
        assert target.shape == (steps,) and target.dtype == np.int32
        if (target == IGNORE).all():
            assert n + sum(a == b for a, b in zip(ids, ids[1:])) > steps
            continue
        # Every character exactly once, in order, and repeats stay apart after merging.
        assert [int(c) for c in target if c not in (blank, IGNORE)] == ids
        assert _collapse(target, blank) == ids

    # Too many characters for 24 steps, or centres that do not match the label: no targets.
    assert (ctc_step_targets(np.linspace(0, 1, 16), [1] * 16, steps, blank) == IGNORE).all()
    assert (ctc_step_targets([0.5, 0.6], [1], steps, blank) == IGNORE).all()


def test_step_targets_need_stored_character_centres(tmp_path):
    from src.data.text.alphabet import Alphabet, LOWERCASE_36
    from src.data.text.dataset import TextSamples, TextSet, TextSource
    from src.data.text.lmdb_io import TextLMDB, write_text_lmdb
    image = cv2.imencode(".png", np.full((32, 80, 3), 200, np.uint8))[1].tobytes()
    write_text_lmdb(str(tmp_path / "with"), [(image, "ab", [0.25, 0.75]), (image, "cd", None)], desc=False)
    write_text_lmdb(str(tmp_path / "without"), [(image, "ab")], desc=False)
    db = TextLMDB(str(tmp_path / "with"))
    assert db.has_positions() and db.positions(0) == [0.25, 0.75] and db.positions(1) is None
    abc = Alphabet(LOWERCASE_36)
    samples = TextSamples([TextSet("with", [str(tmp_path / "with")])], abc, 23, progress=False)
    source = TextSource(samples, range(2), (32, 100), 1, 23, training=True, time_steps=24)
    image_out, label, length, target = source[0]
    assert list(label[:length]) == abc.encode("ab")
    assert list(np.flatnonzero((target >= 0) & (target < abc.blank))) == [5, 18] and target[0] == abc.blank
    assert (source[1][3] == -1).all()  # no centres stored: no targets
    plain = TextSamples([TextSet("without", [str(tmp_path / "without")])], abc, 23, progress=False)
    with pytest.raises(ValueError, match=r"pos-%09d keys.*without.*align_loss_steps: 0"):
        TextSource(plain, range(1), (32, 100), 1, 23, training=True, time_steps=24)
    TextSource(plain, range(1), (32, 100), 1, 23, training=False, time_steps=24)  # evaluation needs none


def test_alphabet_normalize_encode_and_greedy_decode():
    from src.data.text.alphabet import LOWERCASE_36, PRINTABLE_94, Alphabet
    assert len(LOWERCASE_36) == 36 and len(PRINTABLE_94) == 94
    abc = Alphabet(LOWERCASE_36)
    assert abc.blank == 36 and abc.num_classes == 37
    assert abc.normalize("Hello") == "hello"
    assert abc.normalize("03/09/2009") is None
    assert abc.normalize("03/09/2009", unknown="strip") == "03092009"
    assert abc.normalize("") is None and abc.normalize("!!", unknown="strip") is None
    assert Alphabet(PRINTABLE_94, case_sensitive=True).normalize("Hi/5") == "Hi/5"
    with pytest.raises(ValueError, match="lowercase"):
        Alphabet("ABC")
    with pytest.raises(ValueError, match="repeats"):
        Alphabet("abca")
    # steps: h h blank e l blank l l o blank -> "hello"
    path = [abc.index["h"], abc.index["h"], 36, abc.index["e"], abc.index["l"], 36, abc.index["l"],
            abc.index["l"], abc.index["o"], 36]
    probs = np.full((1, len(path), 37), 0.01, np.float32)
    probs[0, np.arange(len(path)), path] = 0.9
    (text, conf), = abc.greedy_decode(probs)
    assert text == "hello" and conf == pytest.approx(0.9)
    assert abc.encode("hello") == [abc.index[c] for c in "hello"]
    (empty, _), = abc.greedy_decode(np.eye(37, dtype=np.float32)[[36, 36, 36]][None])
    assert empty == ""


def test_edit_distance_and_per_set_accuracy(capsys):
    from src.metric.text_accuracy import TextAccuracy, edit_distance
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    acc = TextAccuracy(["a", "b"])
    acc.update([{"text": "cat", "confidence": 0.9}, {"text": "dog", "confidence": 0.8},
                {"text": "bird", "confidence": 0.5}],
               [{"label": "cat", "set": 0}, {"label": "dig", "set": 1}, {"label": "bird", "set": 1}])
    m = acc.compute()
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["sets"]["a"]["accuracy"] == 1.0 and m["sets"]["b"]["accuracy"] == 0.5
    assert m["sets"]["b"]["norm_edit_distance"] == pytest.approx((1 - 1 / 3 + 1) / 2)
    assert "1-N.E.D." in capsys.readouterr().out


def _write_lmdb_with_bad_records(path: str) -> None:
    """7 samples: 3 good, a corrupt image, an empty label, an unknown character, a label
    without its image; and a key gap (num-samples says 8, sample 8 has no label)."""
    import lmdb
    from src.data.text.lmdb_io import image_key, label_key
    good = cv2.imencode(".png", np.full((32, 80, 3), 200, np.uint8))[1].tobytes()
    records = {1: (good, "abc"), 2: (b"\xff\xd8 not a jpeg", "bad"), 3: (good, ""), 4: (good, "a~b"),
               5: (None, "lost"), 6: (good, "de"), 7: (good, "f9")}
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (img, label) in records.items():
            if img is not None:
                txn.put(image_key(i), img)
            txn.put(label_key(i), label.encode())
        txn.put(b"num-samples", b"8")
    env.close()


def test_bad_records_are_skipped_counted_and_named(tmp_path, caplog):
    from src.data.text.alphabet import Alphabet, LOWERCASE_36
    from src.data.text.dataset import TextSamples, TextSet, TextSource
    path = str(tmp_path / "bad.lmdb")
    _write_lmdb_with_bad_records(path)
    with caplog.at_level(logging.WARNING, logger="src.data"):
        samples = TextSamples([TextSet("bad", [path])], Alphabet(LOWERCASE_36), max_length=23, progress=False)
        assert [r[2] for r in samples.rows] == ["abc", "bad", "lost", "de", "f9"]
        assert samples.log.counts == {"empty label": 1, "characters outside the alphabet": 1, "missing label": 1}
        source = TextSource(samples, range(len(samples)), (32, 100), 3, 23, training=True)
        labels = [tuple(source[i][1][:source[i][2]]) for i in range(len(source))]
    # the corrupt image (row 1) and the missing one (row 2) are replaced by the next good sample
    abc = Alphabet(LOWERCASE_36)
    assert labels == [tuple(abc.encode(t)) for t in ["abc", "de", "de", "de", "f9"]]
    assert samples.log.counts["undecodable image"] >= 1 and samples.log.counts["missing image"] >= 1
    text = caplog.text
    assert "label-000000003" in text and "label-000000008" in text and "image-000000002" in text
    assert "image-000000005" in text and "'a~b'" in text


def test_lmdb_without_num_samples_is_named(tmp_path):
    import lmdb
    from src.data.text.lmdb_io import TextLMDB
    env = lmdb.open(str(tmp_path / "x"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"label-000000001", b"a")
    env.close()
    with pytest.raises(ValueError, match=r"x has no 'num-samples'"):
        TextLMDB(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="LMDB root not found: .*missing"):
        TextLMDB(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no LMDB"):
        TextLMDB(str(tmp_path / "empty"))


def test_several_roots_are_concatenated_and_the_writer_is_atomic(tmp_path):
    from src.data.text.lmdb_io import TextLMDB, write_text_lmdb
    write_text_lmdb(str(tmp_path / "a" / "one"), [(b"x1", "a1"), (b"x2", "a2")], desc=False)
    write_text_lmdb(str(tmp_path / "a" / "two"), [(b"y1", "b1")], desc=False)
    write_text_lmdb(str(tmp_path / "c"), [(b"z1", "c1")], desc=False)
    db = TextLMDB([str(tmp_path / "a"), str(tmp_path / "c")])
    assert len(db) == 4 and [db.label(i) for i in range(4)] == ["a1", "a2", "b1", "c1"]
    assert db.image(2) == b"y1" and db.describe(3).endswith("c:image-000000001")

    def broken():
        yield b"q", "q"
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        write_text_lmdb(str(tmp_path / "c"), broken(), desc=False)
    assert TextLMDB(str(tmp_path / "c")).label(0) == "c1"  # the old LMDB is intact
    assert sorted(os.listdir(tmp_path)) == ["a", "c"]  # no temp folder left behind


def test_data_parallel_shards_are_disjoint_and_equal():
    from src.crnn.model import _shard
    shards = [_shard(11, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
