"""Raw text-recognition datasets -> text LMDB: each source, the CLI and every bad-input rule."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

import convert_text_lmdb
from conftest import ROOT, shared_path
from src.data.text import converters as tc
from src.data.text.lmdb_io import TextLMDB


def _image(path, width=40, height=16, seed=0, ext=None) -> bytes:
    """Write a small noisy image (random, so crops and round-trips are checked for real)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, enc = cv2.imencode(ext or os.path.splitext(path)[1], img)
    assert ok
    with open(path, "wb") as f:
        f.write(enc.tobytes())
    return enc.tobytes()


def _write(path, text: str, bom: bool = False) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


def _lmdb(path) -> list[tuple[bytes, str]]:
    db = TextLMDB(str(path))
    return [(db.image(i), db.label(i)) for i in range(len(db))]


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records
                     if r.name == "src.data" and r.levelno == logging.WARNING)


# ---------------------------------------------------------------------------------------------
# list

@pytest.fixture
def list_dataset(tmp_path):
    root = tmp_path / "ds"
    good = {name: _image(str(root / "img" / name), seed=i) for i, name in enumerate(["a.png", "b.jpg", "c.png"])}
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = [
        "img/a.png\tNew York",       # tab form: spaces allowed
        "img/b.jpg Hello",            # space form
        "",                           # blank lines are ignored
        "img/c.png two words",        # space form with a space in the label: ambiguous
        "img/missing.png\tGone",
        "img/broken.png\tBroken",
        "img/c.png\t",                # empty label
        "img/c.png\tLast,one",
    ]
    list_file = _write(root / "labels.txt", "\n".join(lines) + "\n")
    return {"root": root, "list": list_file, "good": good}


def test_list_round_trip_and_bad_lines(list_dataset, tmp_path, caplog, capsys):
    caplog.set_level(logging.WARNING, logger="src.data")
    out = tmp_path / "out_lmdb"
    stats = tc.convert("list", list_dataset["list"], str(out), progress=False)
    good = list_dataset["good"]
    assert _lmdb(out) == [(good["a.png"], "New York"), (good["b.jpg"], "Hello"), (good["c.png"], "Last,one")]
    assert (stats.entries, stats.written, stats.skipped) == (7, 3, 4)
    assert (stats.malformed, stats.missing_images, stats.undecodable_images, stats.empty_labels) == (1, 1, 1, 1)
    text = _warnings(caplog)
    list_file = list_dataset["list"]
    assert f"{list_file}:4:" in text                       # malformed line: file and line number
    assert "missing.png" in text and f"{list_file}:5:" in text
    assert "broken.png" in text and "cannot be decoded" in text
    assert f"{list_file}:7: empty label" in text
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "written=3" in summary and "skipped=4" in summary and "malformed=1" in summary


def test_list_image_root(tmp_path):
    img = _image(str(tmp_path / "images" / "w.png"))
    list_file = _write(tmp_path / "lists" / "l.txt", "w.png\tword\n")
    out = tmp_path / "lmdb"
    tc.convert("list", list_file, str(out), image_root=str(tmp_path / "images"), progress=False)
    assert _lmdb(out) == [(img, "word")]


def test_no_usable_sample_writes_nothing(tmp_path):
    list_file = _write(tmp_path / "l.txt", "missing.png\tword\n")
    out = tmp_path / "lmdb"
    with pytest.raises(ValueError, match="no sample could be converted"):
        tc.convert("list", list_file, str(out), progress=False)
    assert not out.exists()
    assert os.listdir(tmp_path) == ["l.txt"]  # no temporary folder left behind


def test_failure_midway_leaves_no_lmdb(list_dataset, tmp_path, monkeypatch):
    real = tc._read_image
    calls = []

    def flaky(path, where, stats):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk went away")
        return real(path, where, stats)

    monkeypatch.setattr(tc, "_read_image", flaky)
    out = tmp_path / "out_lmdb"
    with pytest.raises(OSError, match="disk went away"):
        tc.convert("list", list_dataset["list"], str(out), progress=False)
    assert len(calls) == 2  # one sample was already in the (temporary) LMDB
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["ds"]

    # an existing LMDB at the target survives a failed rebuild
    monkeypatch.setattr(tc, "_read_image", real)
    tc.convert("list", list_dataset["list"], str(out), progress=False)
    before = _lmdb(out)
    calls.clear()
    monkeypatch.setattr(tc, "_read_image", flaky)
    with pytest.raises(OSError):
        tc.convert("list", list_dataset["list"], str(out), progress=False)
    assert _lmdb(out) == before


# ---------------------------------------------------------------------------------------------
# mjsynth

@pytest.fixture
def mjsynth(tmp_path):
    top = tmp_path / "mjsynth"
    root = top / "mnt" / "ramdisk" / "max" / "90kDICT32px"
    imgs = {rel: _image(str(root / rel), seed=i) for i, rel in enumerate(
        ["1/1/1_Hello_0.jpg", "1/1/2_WORLD_1.jpg", "1/2/3_mistake_2.jpg", "2/1/4_val_3.jpg"])}
    _write(root / "lexicon.txt", "hello\nworld\ncat\nval\n")
    _write(root / "annotation_train.txt", "\n".join([
        "./1/1/1_Hello_0.jpg 0",
        "./1/1/2_WORLD_1.jpg 1",
        "./1/2/3_mistake_2.jpg 2",   # lexicon says 'cat': trusted, counted as a mismatch
        "./1/2/9_world_1.jpg 1",     # missing image
        "./1/1/1_Hello_0.jpg",       # malformed: no lexicon index
        "./1/1/1_Hello_0.jpg 99",    # index outside the lexicon
    ]) + "\n")
    _write(root / "annotation_val.txt", "./2/1/4_val_3.jpg 3\n")
    return {"top": top, "root": root, "imgs": imgs}


def test_mjsynth_lexicon_and_file_names(mjsynth, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="src.data")
    out = tmp_path / "mj_train"
    stats = tc.convert("mjsynth", str(mjsynth["top"]), str(out), progress=False)  # default split: train
    imgs = mjsynth["imgs"]
    # the file name keeps the rendered case when it matches the lexicon up to case
    assert _lmdb(out) == [(imgs["1/1/1_Hello_0.jpg"], "Hello"), (imgs["1/1/2_WORLD_1.jpg"], "WORLD"),
                          (imgs["1/2/3_mistake_2.jpg"], "cat")]
    assert (stats.lexicon_mismatches, stats.missing_images, stats.malformed, stats.written) == (1, 1, 2, 3)
    ann = str(mjsynth["root"] / "annotation_train.txt")
    text = _warnings(caplog)
    assert f"{ann}:3:" in text and "'cat'" in text and "'mistake'" in text
    assert f"{ann}:5:" in text and f"{ann}:6:" in text and "1/2/9_world_1.jpg" in text

    out_val = tmp_path / "mj_val"
    tc.convert("mjsynth", str(mjsynth["root"]), str(out_val), split="val", progress=False)
    assert _lmdb(out_val) == [(imgs["2/1/4_val_3.jpg"], "val")]


def test_mjsynth_without_lexicon_uses_file_names(mjsynth, tmp_path):
    os.remove(mjsynth["root"] / "lexicon.txt")
    out = tmp_path / "mj"
    stats = tc.convert("mjsynth", str(mjsynth["root"] / "annotation_train.txt"), str(out), progress=False)
    assert [label for _, label in _lmdb(out)] == ["Hello", "WORLD", "mistake", "Hello"]  # last: index 99 unused
    assert stats.lexicon_mismatches == 0 and stats.malformed == 1


# ---------------------------------------------------------------------------------------------
# iiit5k

def _iiit5k_mat(path, name: str, rows: list[tuple[str, str]]) -> None:
    """A .mat shaped like the real IIIT5K files: a (1, N) struct array of string fields."""
    from scipy.io import savemat
    table = np.zeros((1, len(rows)), dtype=[("ImgName", "O"), ("GroundTruth", "O"), ("smallLexi", "O")])
    for i, (img, word) in enumerate(rows):
        lexi = np.empty((1, 2), dtype=object)
        lexi[0, 0], lexi[0, 1] = np.array([word or "x"]), np.array(["OTHER"])
        table[0, i]["ImgName"], table[0, i]["GroundTruth"], table[0, i]["smallLexi"] = \
            np.array([img]), np.array([word]), lexi
    savemat(str(path), {name: table})


def test_iiit5k(tmp_path, caplog):
    from scipy.io import loadmat
    caplog.set_level(logging.WARNING, logger="src.data")
    root = tmp_path / "IIIT5K"
    a = _image(str(root / "test" / "1_1.png"), seed=1)
    b = _image(str(root / "test" / "2_1.png"), seed=2)
    _iiit5k_mat(root / "testdata.mat", "testdata", [("test/1_1.png", "PRIVATE"), ("test/2_1.png", "Sale"),
                                                     ("test/3_1.png", "gone"), ("test/1_1.png", "")])
    # same nesting as the real release: (1, N) struct array, each field a 1-element str array
    table = loadmat(str(root / "testdata.mat"))["testdata"]
    assert table.shape == (1, 4) and table[0, 0]["ImgName"].dtype.kind == "U"
    assert table[0, 0]["ImgName"].tolist() == ["test/1_1.png"]

    out = tmp_path / "iiit"
    stats = tc.convert("iiit5k", str(root), str(out), progress=False)
    assert _lmdb(out) == [(a, "PRIVATE"), (b, "Sale")]
    assert (stats.missing_images, stats.empty_labels) == (1, 1)
    assert "3_1.png" in _warnings(caplog)

    c = _image(str(root / "train" / "9_3.png"), seed=3)
    _iiit5k_mat(root / "traindata.mat", "traindata", [("train/9_3.png", "YOU")])
    out_train = tmp_path / "iiit_train"
    tc.convert("iiit5k", str(root), str(out_train), split="train", progress=False)
    assert _lmdb(out_train) == [(c, "YOU")]
    with pytest.raises(ValueError, match="splits"):
        tc.convert("iiit5k", str(root), str(out_train), split="val", progress=False)


# ---------------------------------------------------------------------------------------------
# svt

SVT_XML = """<?xml version="1.0" encoding="utf-8"?>
<tagset>
  <image>
    <imageName>img/14_03.jpg</imageName>
    <Resolution x="100" y="60"/>
    <taggedRectangles>
      <taggedRectangle height="20" width="30" x="10" y="5"><tag>LIVING</tag></taggedRectangle>
      <taggedRectangle height="20" width="40" x="80" y="50"><tag>EDGE</tag></taggedRectangle>
      <taggedRectangle height="20" width="0" x="10" y="5"><tag>FLAT</tag></taggedRectangle>
      <taggedRectangle height="20" width="30" x="200" y="5"><tag>AWAY</tag></taggedRectangle>
      <taggedRectangle height="20" width="30" x="abc" y="5"><tag>BAD</tag></taggedRectangle>
      <taggedRectangle height="20" width="30" x="10" y="5"><tag> </tag></taggedRectangle>
    </taggedRectangles>
  </image>
  <image>
    <imageName>img/missing.jpg</imageName>
    <taggedRectangles>
      <taggedRectangle height="10" width="10" x="0" y="0"><tag>LOST</tag></taggedRectangle>
    </taggedRectangles>
  </image>
</tagset>
"""


@pytest.fixture
def svt(tmp_path):
    root = tmp_path / "svt1"
    _image(str(root / "img" / "14_03.jpg"), width=100, height=60, ext=".png")  # PNG bytes: exact pixels
    _write(root / "test.xml", SVT_XML)
    return root


def test_svt_crops(svt, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="src.data")
    out = tmp_path / "svt_lmdb"
    stats = tc.convert("svt", str(svt), str(out), progress=False, crop_format="png")
    samples = _lmdb(out)
    assert [label for _, label in samples] == ["LIVING", "EDGE"]
    full = cv2.imread(str(svt / "img" / "14_03.jpg"))
    crops = [cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR) for img, _ in samples]
    assert crops[0].shape == (20, 30, 3) and np.array_equal(crops[0], full[5:25, 10:40])
    assert crops[1].shape == (10, 20, 3) and np.array_equal(crops[1], full[50:60, 80:100])  # clipped
    assert (stats.entries, stats.written, stats.clipped_boxes, stats.degenerate_boxes) == (7, 2, 1, 2)
    assert (stats.malformed, stats.empty_labels, stats.missing_images, stats.skipped) == (1, 1, 1, 5)
    xml = str(svt / "test.xml")
    text = _warnings(caplog)
    assert f"{xml}:9:" in text and f"{xml}:10:" in text   # the two degenerate boxes
    assert f"{xml}:11:" in text                           # non-numeric x
    assert f"{xml}:12: empty <tag>" in text
    assert "missing.jpg" in text


def test_svt_jpeg_crops(svt, tmp_path):
    samples, stats = tc.svt_samples(str(svt / "test.xml"))
    images = [img for img, _ in samples]
    assert images[0][:3] == b"\xff\xd8\xff"  # JPEG by default
    assert cv2.imdecode(np.frombuffer(images[0], np.uint8), cv2.IMREAD_COLOR).shape == (20, 30, 3)


def test_bad_xml_names_file_and_line(tmp_path):
    xml = _write(tmp_path / "test.xml", "<tagset>\n<image>\n<imageName>a.jpg</imageName>\n</tagset>\n")
    with pytest.raises(ValueError, match=r"test\.xml:4: not well-formed"):
        tc.svt_samples(xml)


# ---------------------------------------------------------------------------------------------
# ic03 and ic13

def test_ic03(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="src.data")
    root = tmp_path / "ic03"
    a = _image(str(root / "word" / "1" / "1.jpg"), seed=4)
    b = _image(str(root / "word" / "1" / "2.jpg"), seed=5)
    xml = _write(root / "word.xml", "\n".join([
        '<?xml version="1.0" encoding="utf-8"?>',
        "<imagelist>",
        '<image file="word/1/1.jpg" tag="Tiredness" />',
        '<image file="word/1/2.jpg" tag="kills &amp; more" />',
        '<image tag="NoFile" />',
        '<image file="word/1/2.jpg" tag="" />',
        "</imagelist>",
    ]))
    out = tmp_path / "ic03_lmdb"
    stats = tc.convert("ic03", str(root), str(out), progress=False)
    assert _lmdb(out) == [(a, "Tiredness"), (b, "kills & more")]
    assert (stats.malformed, stats.empty_labels) == (1, 1)
    assert f"{xml}:5:" in _warnings(caplog)


def test_ic13(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="src.data")
    root = tmp_path / "ic13"
    imgs = [_image(str(root / "images" / f"word_{i}.png"), seed=10 + i) for i in (1, 2, 3)]
    gt = _write(root / "gt" / "gt.txt", "\r\n".join([
        'word_1.png, "Tiredness"',
        'word_2.png, "say "hi", ok"',   # quotes and a comma inside the label
        'word_3.png, Unquoted',          # malformed
        'word_3.png, "\\"Sale"',         # ICDAR 2015-style escaped quote
        'word_9.png, "Missing"',
    ]) + "\r\n", bom=True)
    out = tmp_path / "ic13_lmdb"
    stats = tc.convert("ic13", gt, str(out), image_root=str(root / "images"), progress=False)
    assert _lmdb(out) == [(imgs[0], "Tiredness"), (imgs[1], 'say "hi", ok'), (imgs[2], '"Sale')]
    assert (stats.malformed, stats.missing_images, stats.entries) == (1, 1, 5)
    text = _warnings(caplog)
    assert f"{gt}:3:" in text and "word_9.png" in text


# ---------------------------------------------------------------------------------------------
# missing annotation files, the CLI

@pytest.mark.parametrize("kind, name", [("list", "labels.txt"), ("mjsynth", "annotation_train.txt"),
                                        ("iiit5k", "testdata.mat"), ("svt", "test.xml"),
                                        ("ic03", "word.xml"), ("ic13", "gt.txt")])
def test_missing_annotation_file(kind, name, tmp_path):
    path = tmp_path / "empty_dataset"
    path.mkdir()
    target = str(path / name) if kind == "list" else str(path)
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        tc.convert(kind, target, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_cli(list_dataset, tmp_path, capsys):
    out = tmp_path / "cli_lmdb"
    stats = convert_text_lmdb.main(["--kind", "list", "--input", list_dataset["list"], "--output", str(out)])
    assert stats.written == 3 and len(TextLMDB(str(out))) == 3
    assert f"wrote 3 samples to {out}" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:
        convert_text_lmdb.main(["--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for kind in tc.KINDS:
        assert f"\n  {kind} " in help_text
    with pytest.raises(ValueError, match="takes no split"):
        convert_text_lmdb.main(["--kind", "ic13", "--input", list_dataset["list"], "--output", str(out),
                                "--split", "test"])


# ---------------------------------------------------------------------------------------------
# LMDB -> image files for the Ascend 310 program

CRNN_CONFIG = os.path.join(ROOT, "configs", "crnn", "crnn.yaml")


def _encoded(ext: str, seed: int, height: int = 16, width: int = 40) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, enc = cv2.imencode(ext, img)
    assert ok
    return enc.tobytes()


def _eval_stems(root: str) -> list[str]:
    """The stems CRNN's evaluation (and so postprocess.py) uses for the samples of `root`."""
    from src.crnn.model import eval_items  # imports MindSpore: only the tests that need it
    from src.model_utils.config import parse_cli
    cfg = parse_cli(["--config_path", CRNN_CONFIG, "--eval_lmdb", root])
    return [stem for stem, _ in eval_items(cfg)]


def _exported(out_dir) -> dict[str, str]:
    """stem -> file name of every file in `out_dir`."""
    return {os.path.splitext(name)[0]: name for name in sorted(os.listdir(out_dir))}


def test_export_lmdb_images_names_match_eval_items(tmp_path):
    # A root holding two LMDBs: the index runs on across them, as TextLMDB and eval_items see it.
    root = tmp_path / "IC13_mini"
    first = [(_encoded(".jpg", 0), "Hello"), (_encoded(".png", 1), "world"), (_encoded(".bmp", 2), "abc123")]
    second = [(_encoded(".png", 3, 32, 100), "Tiredness"), (_encoded(".jpg", 4, 20, 7), "x")]
    tc.write_text_lmdb(str(root / "part1"), first, desc=False)
    tc.write_text_lmdb(str(root / "part2"), second, desc=False)
    out = tmp_path / "images"

    assert tc.export_lmdb_images(str(root), str(out)) == 5
    files = _exported(out)
    stems = _eval_stems(str(root))
    assert len(stems) == 5
    # The 310 program reads the folder in file-name order; zero padding keeps that the index order.
    assert list(files) == stems == [f"IC13_mini_{i:09d}" for i in range(1, 6)]
    for (data, _), name in zip(first + second, files.values()):
        assert (out / name).read_bytes() == data  # unchanged bytes, extension from the magic number
    assert [os.path.splitext(n)[1] for n in files.values()] == [".jpg", ".png", ".bmp", ".png", ".jpg"]
    # Re-running replaces the files and adds nothing.
    assert tc.export_lmdb_images(str(root) + "/", str(out)) == 5
    assert _exported(out) == files


def test_export_real_lmdb_names_match_eval_items(tmp_path):
    root = shared_path("data", "rec_lmdb_mmocr", "imgs.lmdb")
    out = tmp_path / "images"
    db = TextLMDB(root)
    assert tc.export_lmdb_images(root, str(out)) == len(db)
    files = _exported(out)
    assert list(files) == _eval_stems(root)
    for i, name in enumerate(files.values()):
        assert (out / name).read_bytes() == db.image(i)


def test_export_lmdb_images_bad_and_foreign_images(tmp_path, caplog, capsys):
    import lmdb
    caplog.set_level(logging.WARNING, logger="src.data")
    tiff = _encoded(".tiff", 5)
    samples = [(_encoded(".jpg", 6), "one"),
               (b"never written", "two"),                      # deleted below: a missing image
               (b"\xff\xd8\xff\xe0 not really a jpeg", "three"),  # JPEG magic, undecodable
               (tiff, "four"),                                  # not a format the 310 program lists
               (b"garbage", "five")]
    root = tmp_path / "lmdb"
    tc.write_text_lmdb(str(root), samples, desc=False)
    env = lmdb.open(str(root))
    with env.begin(write=True) as txn:
        assert txn.delete(b"image-000000002")
    env.close()
    out = tmp_path / "images"

    assert tc.export_lmdb_images(str(root), str(out), set_name="mine") == 2
    assert sorted(os.listdir(out)) == ["mine_000000001.jpg", "mine_000000004.png"]
    assert (out / "mine_000000001.jpg").read_bytes() == samples[0][0]
    # Re-encoded losslessly from what the evaluation decodes (IMREAD_COLOR): the same pixels.
    png = cv2.imread(str(out / "mine_000000004.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(png, cv2.imdecode(np.frombuffer(tiff, np.uint8), cv2.IMREAD_COLOR))
    text = _warnings(caplog)
    assert f"{root}:image-000000002: image missing" in text
    assert f"{root}:image-000000003: image cannot be decoded" in text
    assert f"{root}:image-000000005: image cannot be decoded" in text
    summary = capsys.readouterr().out
    assert "exported 2 of 5 images" in summary and "missing_images=1 undecodable_images=2" in summary
    assert "1 re-encoded as PNG" in summary


def test_export_lmdb_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tc.export_lmdb_images(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    root = tmp_path / "lmdb"
    tc.write_text_lmdb(str(root), [(_encoded(".png", 7), "a")], desc=False)
    with pytest.raises(ValueError, match="set_name"):
        tc.export_lmdb_images(str(root), str(tmp_path / "out"), set_name="a/b")


def test_cli_export_images(tmp_path, capsys):
    root = tmp_path / "SVT_mini"
    data = [_encoded(".jpg", 8), _encoded(".png", 9)]
    tc.write_text_lmdb(str(root), [(d, "w") for d in data], desc=False)
    out = tmp_path / "images"
    assert convert_text_lmdb.main(["--export_images", "--input", str(root), "--output", str(out)]) == 2
    assert [(out / n).read_bytes() for n in sorted(os.listdir(out))] == data
    assert sorted(os.listdir(out)) == ["SVT_mini_000000001.jpg", "SVT_mini_000000002.png"]
    assert f"exported 2 of 2 images of {root}" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:
        convert_text_lmdb.main(["--help"])
    assert exc.value.code == 0
    assert "--export_images writes every image" in capsys.readouterr().out
    for bad in (["--export_images", "--kind", "list"], []):  # conversion flag given / no --kind
        with pytest.raises(SystemExit) as exc:
            convert_text_lmdb.main(bad + ["--input", str(root), "--output", str(out)])
        assert exc.value.code == 2
    assert "--kind is required" in capsys.readouterr().err
