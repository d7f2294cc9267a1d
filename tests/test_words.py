"""Tests of the embedded word-crop dataset (src/data/synthetic/words.py)."""
import json
import os
import string

import cv2
import lmdb
import numpy as np
import pytest

from conftest import run_concurrently
from src.data.synthetic import words
from src.data.synthetic.words import (DEFAULT_CHARSET, PRINTABLE_CHARSET, WORDS, ensure_word_crops,
                                      render_word)
from src.data.text.lmdb_io import TextLMDB

SMALL = dict(num_train=24, num_val=8, seed=0, progress=False)


def _read(path):
    """[(image bytes, label)] of an LMDB, read with a fresh environment.

    TextLMDB keeps environments open per process, which would serve a replaced LMDB's old
    contents to a test that regenerates the same folder.
    """
    env = lmdb.open(path, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            n = int(txn.get(b"num-samples"))
            return [(txn.get(b"image-%09d" % i), txn.get(b"label-%09d" % i).decode()) for i in range(1, n + 1)]
    finally:
        env.close()


def _decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _mtimes(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    root = tmp_path_factory.mktemp("words") / "wc"
    return ensure_word_crops(str(root), **SMALL)


@pytest.fixture(scope="module")
def samples(crops):
    return {split: _read(path) for split, path in crops.items()}


def test_layout(crops, samples):
    root = os.path.dirname(crops["train"])
    assert crops == {"train": os.path.join(root, "train"), "val": os.path.join(root, "val")}
    assert len(samples["train"]) == 24 and len(samples["val"]) == 8
    with open(os.path.join(root, "COMPLETE"), encoding="utf-8") as f:
        marker = json.load(f)
    assert marker["num_train"] == 24 and marker["num_val"] == 8 and marker["seed"] == 0
    assert marker["charset"] == DEFAULT_CHARSET and marker["case_sensitive"] is False
    # No temp folder is left next to the cache.
    assert os.listdir(os.path.dirname(root)) == ["wc"]
    # The project's reader understands it.
    assert len(TextLMDB(crops["train"])) == 24


def test_deterministic(tmp_path, samples):
    again = ensure_word_crops(str(tmp_path / "same"), **SMALL)
    assert _read(again["train"]) == samples["train"]
    assert _read(again["val"]) == samples["val"]
    other = _read(ensure_word_crops(str(tmp_path / "other"), **dict(SMALL, seed=1))["train"])
    assert sum(a != b for a, b in zip(other, samples["train"])) >= 20


def test_train_and_val_differ(samples):
    train_images = {img for img, _ in samples["train"]}
    assert not train_images & {img for img, _ in samples["val"]}
    assert [lab for _, lab in samples["train"][:8]] != [lab for _, lab in samples["val"]]


def test_images_decode_at_plausible_size(samples):
    for split in ("train", "val"):
        for img, label in samples[split]:
            image = _decode(img)
            assert image is not None and image.dtype == np.uint8 and image.shape[2] == 3
            h, w = image.shape[:2]
            assert 32 <= h <= 64
            # Wider for longer words, never a sliver.
            assert 0.3 * h <= w <= 2.0 * h * max(2, len(label)), (label, w, h)


def test_labels_within_default_charset(samples):
    for split in ("train", "val"):
        for _, label in samples[split]:
            assert label and set(label.lower()) <= set(DEFAULT_CHARSET), label


def test_token_distribution():
    vocab = words._vocabulary(DEFAULT_CHARSET, False)
    rng = np.random.default_rng(123)
    texts = [words._sample_text(rng, vocab) for _ in range(400)]
    assert all(set(t.lower()) <= set(DEFAULT_CHARSET) and 1 <= len(t) <= 16 for t in texts)
    assert any(t.islower() for t in texts)
    assert any(t.isupper() for t in texts)
    assert any(t[0].isupper() and t[1:].islower() for t in texts)
    assert any(t.isdigit() for t in texts)
    lexicon = set(WORDS)
    in_lexicon = sum(t.lower() in lexicon for t in texts)
    # Mostly real words, but enough other tokens that a lexicon cannot be memorised.
    assert 0.4 * len(texts) <= in_lexicon <= 0.75 * len(texts)


def test_printable_charset(tmp_path):
    vocab = words._vocabulary(PRINTABLE_CHARSET, True)
    rng = np.random.default_rng(7)
    texts = [words._sample_text(rng, vocab) for _ in range(400)]
    assert len(PRINTABLE_CHARSET) == 94
    assert all(set(t) <= set(PRINTABLE_CHARSET) for t in texts)
    assert sum(any(c in string.punctuation for c in t) for t in texts) >= 40
    paths = ensure_word_crops(str(tmp_path / "p"), num_train=6, num_val=2, charset=PRINTABLE_CHARSET,
                              case_sensitive=True, progress=False)
    for _, label in _read(paths["train"]):
        assert set(label) <= set(PRINTABLE_CHARSET)


def test_narrow_charset():
    # A case-sensitive upper-only charset must still give valid labels (no lowercase).
    vocab = words._vocabulary(string.ascii_uppercase, True)
    rng = np.random.default_rng(0)
    for _ in range(100):
        text = words._sample_text(rng, vocab)
        assert text and set(text) <= set(string.ascii_uppercase)


def test_render_word_matches_stored_sample(samples):
    # Train sample 3 (key 4): the stored bytes decode to what render_word draws from that stream.
    rng = np.random.default_rng([0, 1, 3])
    text = words._sample_text(rng, words._vocabulary(DEFAULT_CHARSET, False))
    img, label = samples["train"][3]
    assert text == label
    rgb = render_word(text, rng)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    np.testing.assert_array_equal(rgb, _decode(img)[..., ::-1])
    with pytest.raises(ValueError):
        render_word("", np.random.default_rng(0))


def test_character_centres_are_stored_with_every_crop(crops, samples):
    db = TextLMDB(crops["train"])
    assert db.has_positions()
    for i, (_, label) in enumerate(samples["train"]):
        centres = db.positions(i)
        assert len(centres) == len(label), label
        assert all(0.0 <= c <= 1.0 for c in centres)
        # Rotation stays within 4 degrees, so the characters keep their left-to-right order.
        assert centres == sorted(centres), (label, centres)


@pytest.mark.parametrize("tracking", [0.0, 6.0])
def test_character_centres_match_the_drawn_glyphs(tracking):
    # Each character's ink is what drawing one more character adds; its column centroid must
    # lie at the computed centre.
    font = words._font(words.font_table()[0][0], 40)
    text = "wil0mx"
    centres = words._char_centres(text, font, 10.0, tracking)
    previous = np.zeros((60, 400), np.float64)
    for i in range(len(text)):
        mask = words._draw_mask(text[:i + 1], font, (400, 60), (10.0, 5.0), tracking).astype(np.float64)
        ink = np.clip(mask - previous, 0, None).sum(0)
        centroid = (ink * np.arange(400)).sum() / ink.sum()
        assert abs(centroid - centres[i]) < 2.5, (text[i], centroid, centres[i])
        previous = mask


def test_fonts():
    names = {os.path.basename(p) for p, _ in words.font_table()}
    assert {"DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
            "DejaVuSans-Oblique.ttf"} <= names
    usable = {os.path.basename(p) for p in words._fonts_for(PRINTABLE_CHARSET)}
    # The Display fonts hold a few glyphs only and must never be picked for text.
    assert not any("Display" in n for n in usable)
    assert len(usable) >= 10


def test_variety(monkeypatch):
    fonts, colours = [], []
    real_font, real_colours = words._font, words._colours

    def font_spy(path, size):
        fonts.append(path)
        return real_font(path, size)

    def colours_spy(rng):
        bg, fg = real_colours(rng)
        colours.append((tuple(np.round(bg)), tuple(np.round(fg))))
        return bg, fg

    monkeypatch.setattr(words, "_font", font_spy)
    monkeypatch.setattr(words, "_colours", colours_spy)
    means = []
    for i in range(50):
        data = words._make_sample(0, "train", DEFAULT_CHARSET, False, i)[0]
        means.append(_decode(data).reshape(-1, 3).mean(0))
    assert len(set(fonts)) >= 6
    assert len({bg for bg, _ in colours}) >= 20 and len({fg for _, fg in colours}) >= 20
    # Dark-on-light and light-on-dark both occur.
    lum = np.array(means) @ np.array([0.114, 0.587, 0.299])
    assert lum.min() < 90 and lum.max() > 170


def test_word_list():
    assert 300 <= len(WORDS) <= 2000
    assert all(w.isascii() and w.isalpha() and w.islower() and 2 <= len(w) <= 12 for w in WORDS)
    assert list(WORDS) == sorted(set(WORDS))


def test_reuse_does_not_rewrite(crops, monkeypatch):
    root = os.path.dirname(crops["train"])
    before = _mtimes(root)

    def boom(*args, **kwargs):
        raise AssertionError("reuse must not render")

    monkeypatch.setattr(words, "_render", boom)
    assert ensure_word_crops(root, **SMALL) == crops
    assert _mtimes(root) == before


def test_different_parameters_regenerate(tmp_path, samples):
    root = str(tmp_path / "wc")
    ensure_word_crops(root, **SMALL)
    paths = ensure_word_crops(root, **dict(SMALL, num_val=3, seed=5))
    with open(os.path.join(root, "COMPLETE"), encoding="utf-8") as f:
        marker = json.load(f)
    assert marker["num_val"] == 3 and marker["seed"] == 5
    assert len(_read(paths["val"])) == 3
    assert _read(paths["train"]) != samples["train"]
    paths = ensure_word_crops(root, **dict(SMALL, charset=DEFAULT_CHARSET + "-"))
    with open(os.path.join(root, "COMPLETE"), encoding="utf-8") as f:
        assert json.load(f)["charset"] == DEFAULT_CHARSET + "-"
    # Back to the original parameters: the original samples again.
    paths = ensure_word_crops(root, **SMALL)
    assert _read(paths["train"]) == samples["train"]
    assert sorted(os.listdir(tmp_path)) == ["wc"]


def _complete_lmdbs(folder):
    """LMDB folders under `folder` that carry a num-samples key."""
    found = []
    for dirpath, _, names in os.walk(folder):
        if "data.mdb" in names:
            env = lmdb.open(dirpath, readonly=True, lock=False)
            try:
                with env.begin() as txn:
                    if txn.get(b"num-samples") is not None:
                        found.append(dirpath)
            finally:
                env.close()
    return found


@pytest.mark.parametrize("split_to_fail", ["train", "val"])
def test_interrupted_generation_leaves_nothing_complete(tmp_path, monkeypatch, split_to_fail):
    root = str(tmp_path / "wc")
    real = words._render
    calls = []
    fail_at = 10 if split_to_fail == "train" else 24 + 3

    def flaky(text, rng):
        calls.append(text)
        if len(calls) == fail_at:
            raise RuntimeError("simulated crash")
        return real(text, rng)

    monkeypatch.setattr(words, "_render", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_word_crops(root, **SMALL)
    assert not os.path.exists(root)
    assert _complete_lmdbs(str(tmp_path)) == []
    assert os.listdir(tmp_path) == []

    # A finished cache with other parameters survives a failed regeneration untouched.
    monkeypatch.setattr(words, "_render", real)
    ensure_word_crops(root, **dict(SMALL, seed=3))
    before = _mtimes(root)
    calls.clear()
    monkeypatch.setattr(words, "_render", flaky)
    with pytest.raises(RuntimeError):
        ensure_word_crops(root, **SMALL)
    assert _mtimes(root) == before
    assert sorted(os.listdir(tmp_path)) == ["wc"]
    monkeypatch.setattr(words, "_render", real)
    assert len(_read(ensure_word_crops(root, **SMALL)["train"])) == 24


def test_process_pool_gives_the_same_lmdb(tmp_path, monkeypatch, samples):
    monkeypatch.setattr(words, "_PARALLEL_MIN", 0)
    paths = ensure_word_crops(str(tmp_path / "wc"), workers=2, **SMALL)
    assert _read(paths["train"]) == samples["train"]
    assert _read(paths["val"]) == samples["val"]


def test_concurrent_processes(tmp_path, samples):
    root = str(tmp_path / "wc")
    outputs = run_concurrently(f"""
        from src.data.synthetic.words import ensure_word_crops
        p = ensure_word_crops({root!r}, num_train=24, num_val=8, seed=0, progress=False)
        print(p["train"])
    """)
    assert outputs == [os.path.join(root, "train")] * 3
    assert _read(os.path.join(root, "train")) == samples["train"]
    assert _read(os.path.join(root, "val")) == samples["val"]
    assert sorted(os.listdir(tmp_path)) == ["wc"]


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        ensure_word_crops(str(tmp_path / "a"), -1, 2, progress=False)
    with pytest.raises(ValueError):
        ensure_word_crops(str(tmp_path / "b"), 2, 2, seed=-1, progress=False)
    with pytest.raises(ValueError):
        ensure_word_crops(str(tmp_path / "c"), 2, 2, charset=" \t", progress=False)
    assert os.listdir(tmp_path) == []
