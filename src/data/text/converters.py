"""Converters from raw text-recognition datasets to the text LMDB layout (see lmdb_io.py).

Every source function reads its annotation file when it is called (so a missing annotation
raises :class:`FileNotFoundError` at once, naming it) and returns ``(samples, stats)``:
``samples`` lazily yields ``(image_bytes, label)`` pairs, ``stats`` is a :class:`ConvertStats`
that the iteration fills. :func:`convert` runs one source into :func:`write_text_lmdb`.

Kinds (``input`` is what :func:`convert` and ``convert_text_lmdb.py --input`` expect):

list      a text file of ``image path<TAB>label`` lines, or ``image path label`` (one space,
          no tab; the label then cannot hold a space). Paths relative to the list's folder.
mjsynth   the MJSynth folder ``mnt/ramdisk/max/90kDICT32px`` (or the folder holding ``mnt``,
          or one annotation file): ``annotation_<split>.txt`` lines ``./2911/6/77_heretical_35885.jpg
          35885``, the number being a 0-based line of ``lexicon.txt``.
iiit5k    the IIIT5K folder holding ``<split>data.mat`` (or that file); images under the folder.
svt       the SVT folder holding ``<split>.xml`` (or that file); word boxes are cropped out.
ic03      ICDAR 2003 word recognition ``word.xml`` (or its folder).
ic13      ICDAR 2013 word recognition ``gt.txt`` lines ``word_1.png, "Tiredness"`` (or its folder).

Bad entries never stop a conversion: a missing or undecodable image, an empty label, a
malformed line and a degenerate box are skipped, counted and named in a warning on the
``src.data`` logger (the first few; later ones are only counted, see message_log.py).

The other direction, :func:`export_lmdb_images`, writes an LMDB's images out as files named
like CRNN's evaluation samples, for programs that read image folders (the Ascend 310 one).
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Iterator
from xml.parsers import expat

import cv2
import numpy as np

from src.data.message_log import MessageLog
from src.data.text.lmdb_io import TextLMDB, write_text_lmdb

logger = logging.getLogger("src.data")

KINDS = ("list", "mjsynth", "iiit5k", "svt", "ic03", "ic13")
# Which splits each kind knows, the first being the default; None: the kind takes no split.
SPLITS: dict[str, tuple[str, ...] | None] = {
    "list": None, "mjsynth": ("train", "val", "test"), "iiit5k": ("test", "train"),
    "svt": ("test", "train"), "ic03": None, "ic13": None,
}
Samples = Iterator[tuple[bytes, str]]


@dataclass
class ConvertStats(MessageLog):
    """Counters of one conversion, plus the messages naming the bad entries."""

    source: str = ""
    entries: int = 0              # annotation entries (words) found; the progress-bar total
    written: int = 0              # samples yielded to the writer
    missing_images: int = 0       # image files (for svt: source images) that do not exist
    undecodable_images: int = 0   # image files that cv2.imdecode rejects
    empty_labels: int = 0
    malformed: int = 0            # lines / entries that cannot be parsed
    degenerate_boxes: int = 0     # svt boxes with no area inside their image
    clipped_boxes: int = 0        # svt boxes cut to the image (still written)
    lexicon_mismatches: int = 0   # mjsynth: lexicon word differs from the file-name word
    skipped: int = 0              # samples not written, whatever the reason

    def skip(self, counter: str, msg: str | None = None, samples: int = 1) -> None:
        """Count `samples` skipped samples under `counter` (a field name), noting `msg`."""
        setattr(self, counter, getattr(self, counter) + 1)
        self.skipped += samples
        if msg:
            self.note(msg)

    def summary(self) -> str:
        """One line with every counter."""
        return (f"{self.source}: entries={self.entries} written={self.written} skipped={self.skipped} "
                f"(missing_images={self.missing_images} undecodable_images={self.undecodable_images} "
                f"empty_labels={self.empty_labels} malformed={self.malformed} "
                f"degenerate_boxes={self.degenerate_boxes}) clipped_boxes={self.clipped_boxes} "
                f"lexicon_mismatches={self.lexicon_mismatches}")


# ---------------------------------------------------------------------------------------------
# shared helpers

def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise FileNotFoundError(f"{what} is a folder, expected a file: {path}")
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _is_decodable(data: bytes) -> bool:
    if not data:
        return False  # cv2.imdecode asserts on an empty buffer instead of returning None
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return False
    return img is not None and img.size > 0


def _read_image(path: str, where: str, stats: ConvertStats) -> bytes | None:
    """The file's bytes if it exists and decodes; else None, counted and noted with `where`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        stats.skip("missing_images", f"{where}: image file missing: {path}; skipped")
        return None
    except IsADirectoryError:
        stats.skip("missing_images", f"{where}: image path is a folder: {path}; skipped")
        return None
    if not _is_decodable(data):
        stats.skip("undecodable_images", f"{where}: image cannot be decoded: {path}; skipped")
        return None
    return data


def _text_lines(path: str, stats: ConvertStats) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end) of every non-blank line.

    Lines are decoded one at a time, so one line in a foreign encoding costs that line (a
    malformed-line warning) rather than the whole multi-million-line file.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 BOM that Windows editors (and the IC13 gt) put first
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError:
                stats.skip("malformed", f"{path}:{lineno}: not UTF-8 text; skipped")


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def _yield_labelled(items: Iterator[tuple[str, str | None, str]], stats: ConvertStats) -> Samples:
    """Turn (image path, label, where) items into samples, applying the shared skip rules."""
    for path, label, where in items:
        if not label:
            stats.skip("empty_labels", f"{where}: empty label for {path}; skipped")
            continue
        data = _read_image(path, where, stats)
        if data is None:
            continue
        stats.written += 1
        yield data, label


def _parse_xml(path: str) -> tuple[ET.Element, dict[ET.Element, int]]:
    """Parse an XML file into ElementTree elements plus each element's start line.

    ElementTree's C parser keeps no line numbers, and a warning that says "entry 731" is
    useless in a 4000-line file, so expat drives a TreeBuilder and records them.
    """
    builder = ET.TreeBuilder()
    lines: dict[ET.Element, int] = {}
    parser = expat.ParserCreate()
    parser.buffer_text = True

    def start(tag: str, attrs: dict) -> None:
        lines[builder.start(tag, attrs)] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except expat.ExpatError as err:
            raise ValueError(f"{path}:{err.lineno}: not well-formed XML "
                             f"({expat.errors.messages[err.code]})") from None
    return builder.close(), lines


def _pick_file(path: str, names: list[str], what: str) -> str:
    """`path` itself when it is a file, else the first of `names` inside the folder `path`."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    for name in names:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{what} not found: {os.path.join(path, names[0])}")


# ---------------------------------------------------------------------------------------------
# sources

def list_samples(list_file: str, image_root: str | None = None,
                 stats: ConvertStats | None = None) -> tuple[Samples, ConvertStats]:
    """Samples of a ``path<TAB>label`` (or ``path label``) list file.

    The tab form splits at the first tab, so its label may hold spaces. Without a tab the line
    must be exactly two fields separated by one space (MJSynth-style ``path label``); any other
    space-only line is ambiguous and counted as malformed. Paths are relative to `image_root`
    or, by default, to the list file's folder.
    """
    _require_file(list_file, "list file")
    stats = stats if stats is not None else ConvertStats()
    stats.source = stats.source or list_file
    stats.entries += _count_lines(list_file)
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(list_file))

    def items():
        for lineno, line in _text_lines(list_file, stats):
            where = f"{list_file}:{lineno}"
            if "\t" in line:
                rel, label = line.split("\t", 1)
            else:
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0]:
                    stats.skip("malformed", f"{where}: expected 'path<TAB>label' or 'path label' "
                                            f"(a label with spaces needs the tab form); skipped")
                    continue
                rel, label = parts
            if not rel.strip():
                stats.skip("malformed", f"{where}: no image path; skipped")
                continue
            yield os.path.normpath(os.path.join(root, rel.strip())), label, where

    return _yield_labelled(items(), stats), stats


def _mjsynth_name_word(rel_path: str) -> str | None:
    # <index>_<word>_<lexicon index>.jpg; split at the outer underscores in case a word has one
    stem = os.path.splitext(os.path.basename(rel_path))[0]
    first, last = stem.find("_"), stem.rfind("_")
    if first < 0 or last <= first:
        return None
    return stem[first + 1:last]


def _resolve_mjsynth(path: str, split: str) -> str:
    """The annotation file for `split` from a file, the 90kDICT32px folder or the folder above."""
    if os.path.isfile(path):
        return path
    nested = os.path.join(path, "mnt", "ramdisk", "max", "90kDICT32px")
    folder = nested if os.path.isdir(nested) else path
    return os.path.join(folder, f"annotation_{split}.txt")


def mjsynth_samples(path: str, split: str = "train", image_root: str | None = None,
                    stats: ConvertStats | None = None) -> tuple[Samples, ConvertStats]:
    """Samples of the raw MJSynth (Synth90k) release.

    `path` is the ``90kDICT32px`` folder (or the folder holding ``mnt/``, or one annotation
    file); `split` picks ``annotation_<split>.txt``. The label is line N (0-based) of
    ``lexicon.txt`` when that file exists, else the word in the image file name. When both
    exist and differ only in case, the file-name word is kept: it carries the case the word
    was rendered in (upper, lower or capitalised), which a lexicon entry cannot. A difference
    beyond case is counted in ``lexicon_mismatches`` and the lexicon word is used.
    """
    ann = _require_file(_resolve_mjsynth(path, split), "MJSynth annotation file")
    folder = os.path.dirname(os.path.abspath(ann))
    root = image_root if image_root is not None else folder
    stats = stats if stats is not None else ConvertStats()
    stats.source = stats.source or ann
    lexicon: list[str] | None = None
    lex_path = os.path.join(folder, "lexicon.txt")
    if os.path.isfile(lex_path):
        with open(lex_path, "rb") as f:
            # keep blank lines: the annotation's numbers are raw line indices
            lexicon = [raw.rstrip(b"\r\n").decode("utf-8", errors="replace") for raw in f]
    else:
        logger.info("%s not found: labels come from the image file names", lex_path)
    stats.entries += _count_lines(ann)

    def items():
        for lineno, line in _text_lines(ann, stats):
            where = f"{ann}:{lineno}"
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                stats.skip("malformed", f"{where}: expected './dir/dir/N_word_K.jpg K'; skipped")
                continue
            rel, index = parts[0], int(parts[1])
            name_word = _mjsynth_name_word(rel)
            label = name_word
            if lexicon is not None:
                if not 0 <= index < len(lexicon):
                    stats.skip("malformed", f"{where}: lexicon index {index} outside "
                                            f"0..{len(lexicon) - 1} of {lex_path}; skipped")
                    continue
                lex_word = lexicon[index]
                if name_word is None or name_word.lower() != lex_word.lower():
                    if name_word is not None:
                        stats.lexicon_mismatches += 1
                        stats.note(f"{where}: lexicon word '{lex_word}' differs from file name "
                                   f"word '{name_word}'; using the lexicon")
                    label = lex_word
            elif name_word is None:
                stats.skip("malformed", f"{where}: no word in file name '{rel}' and no lexicon; skipped")
                continue
            yield os.path.normpath(os.path.join(root, rel)), label, where

    return _yield_labelled(items(), stats), stats


def _mat_text(value) -> str | None:
    """A MATLAB string as loadmat returns it (array(['text']), possibly object-wrapped)."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return ""  # savemat/MATLAB store '' as a 0-length char array
        if value.dtype.kind == "U":
            return "".join(str(s) for s in value.ravel())
        if value.dtype.kind != "O" or value.size != 1:
            return None
        value = value.ravel()[0]
    return value if isinstance(value, str) else None


def iiit5k_samples(path: str, split: str = "test", image_root: str | None = None,
                   stats: ConvertStats | None = None) -> tuple[Samples, ConvertStats]:
    """Samples of IIIT 5K-word from ``<split>data.mat`` (struct ``<split>data``).

    `path` is the dataset folder or the .mat file. The struct's ``ImgName`` (e.g.
    ``test/1_1.png``, relative to the dataset folder) and ``GroundTruth`` fields are used; the
    lexicon fields are ignored.
    """
    from scipy.io import loadmat  # only this source needs scipy

    mat = _pick_file(path, [f"{split}data.mat"], "IIIT5K annotation file")
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(mat))
    stats = stats if stats is not None else ConvertStats()
    stats.source = stats.source or mat
    try:
        data = loadmat(mat)
    except Exception as err:  # scipy raises several unrelated types for a non-MATLAB file
        raise ValueError(f"{mat}: cannot be read as a MATLAB file ({err})") from None
    keys = [k for k in data if not k.startswith("__")]
    name = f"{split}data" if f"{split}data" in data else None
    if name is None:
        found = [k for k in keys if k in ("testdata", "traindata")]
        if len(found) != 1:
            raise ValueError(f"{mat}: expected a struct named '{split}data', found variables {keys}")
        name = found[0]
    table = data[name]
    fields = table.dtype.names or ()
    if "ImgName" not in fields or "GroundTruth" not in fields:
        raise ValueError(f"{mat}: struct '{name}' has fields {list(fields)}, "
                         "expected 'ImgName' and 'GroundTruth'")
    entries = []
    for i, rec in enumerate(table.ravel(), 1):
        where = f"{mat}:{name}({i})"
        rel, label = _mat_text(rec["ImgName"]), _mat_text(rec["GroundTruth"])
        if not rel or label is None:
            stats.skip("malformed", f"{where}: ImgName/GroundTruth are not strings; skipped")
            continue
        entries.append((os.path.join(root, rel), label, where))
    stats.entries += table.size
    return _yield_labelled(iter(entries), stats), stats


def _box_number(elem: ET.Element, key: str) -> int:
    return int(round(float(elem.attrib[key])))


def svt_samples(path: str, split: str = "test", image_root: str | None = None,
                stats: ConvertStats | None = None, crop_format: str = "jpg") -> tuple[Samples, ConvertStats]:
    """Word crops of the Street View Text set from ``<split>.xml``.

    `path` is the SVT folder or the xml. Each ``taggedRectangle`` (x, y, width, height in
    pixels) is clipped to its image and cropped out; a box with no area inside the image is
    skipped and counted. Crops are encoded as `crop_format`: ``jpg`` (quality 95) or ``png``.
    """
    if crop_format not in ("jpg", "png"):
        raise ValueError(f"crop_format must be 'jpg' or 'png', got '{crop_format}'")
    xml = _pick_file(path, [f"{split}.xml"], "SVT annotation file")
    root_dir = image_root if image_root is not None else os.path.dirname(os.path.abspath(xml))
    stats = stats if stats is not None else ConvertStats()
    stats.source = stats.source or xml
    tree, lines = _parse_xml(xml)
    images = []  # (image path, where, [(box, label, where)])
    for image in tree.iter("image"):
        where = f"{xml}:{lines[image]}"
        rects = list(image.iter("taggedRectangle"))
        stats.entries += len(rects)
        rel = (image.findtext("imageName") or "").strip()
        if not rel:
            stats.skip("malformed", f"{where}: <image> without <imageName>; its {len(rects)} word(s) skipped",
                       samples=len(rects))
            continue
        words = []
        for rect in rects:
            rwhere = f"{xml}:{lines[rect]}"
            try:
                box = tuple(_box_number(rect, k) for k in ("x", "y", "width", "height"))
            except (KeyError, ValueError, OverflowError):
                stats.skip("malformed", f"{rwhere}: taggedRectangle needs numeric x, y, width, height "
                                        f"(got {dict(rect.attrib)}); skipped")
                continue
            words.append((box, (rect.findtext("tag") or "").strip(), rwhere))
        images.append((os.path.join(root_dir, rel), where, words))
    ext = ".jpg" if crop_format == "jpg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if crop_format == "jpg" else []

    def samples():
        for img_path, where, words in images:
            labelled = []
            for word in words:
                if word[1]:
                    labelled.append(word)
                else:
                    stats.skip("empty_labels", f"{word[2]}: empty <tag> in {img_path}; skipped")
            words = labelled
            if not words:
                continue
            if not os.path.isfile(img_path):
                stats.skip("missing_images", f"{where}: image file missing: {img_path}; "
                                             f"its {len(words)} word(s) skipped", samples=len(words))
                continue
            with open(img_path, "rb") as f:
                buf = np.frombuffer(f.read(), np.uint8)
            # The boxes were drawn on the stored pixels, so EXIF rotation must not be applied.
            img = (cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
                   if buf.size else None)
            if img is None:
                stats.skip("undecodable_images", f"{where}: image cannot be decoded: {img_path}; "
                                                 f"its {len(words)} word(s) skipped", samples=len(words))
                continue
            height, width = img.shape[:2]
            for (x, y, w, h), label, rwhere in words:
                x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
                if w <= 0 or h <= 0 or x2 <= x1 or y2 <= y1:
                    stats.skip("degenerate_boxes", f"{rwhere}: box x={x} y={y} w={w} h={h} has no area "
                                                   f"inside {img_path} ({width}x{height}); skipped")
                    continue
                if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                    stats.clipped_boxes += 1
                ok, enc = cv2.imencode(ext, img[y1:y2, x1:x2], params)
                if not ok:
                    raise RuntimeError(f"{rwhere}: cv2 could not encode the crop as {crop_format}")
                stats.written += 1
                yield enc.tobytes(), label

    return samples(), stats


def ic03_samples(path: str, image_root: str | None = None,
                 stats: ConvertStats | None = None) -> tuple[Samples, ConvertStats]:
    """Samples of ICDAR 2003 word recognition: ``<image file="word/1/1.jpg" tag="Tiredness" />``.

    `path` is ``word.xml`` or its folder; image paths are relative to that folder.
    """
    xml = _pick_file(path, ["word.xml"], "ICDAR 2003 annotation file")
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(xml))
    stats = stats if stats is not None else ConvertStats()
    stats.source = stats.source or xml
    tree, lines = _parse_xml(xml)
    entries = []
    for image in tree.iter("image"):
        stats.entries += 1
        where = f"{xml}:{lines[image]}"
        rel, label = image.get("file"), image.get("tag")
        if not rel or label is None:
            stats.skip("malformed", f"{where}: <image> needs 'file' and 'tag' attributes "
                                    f"(got {dict(image.attrib)}); skipped")
            continue
        entries.append((os.path.join(root, rel), label, where))
    return _yield_labelled(iter(entries), stats), stats


def _ic13_line(line: str) -> tuple[str, str] | None:
    # Only the first comma separates: the quoted label may itself hold commas and quotes.
    rel, sep, rest = line.partition(",")
    rest = rest.strip()
    if not sep or not rel.strip() or len(rest) < 2 or rest[0] != '"' or rest[-1] != '"':
        return None
    # The ICDAR 2015 edition of this format escapes inner quotes as \" ; 2013 leaves them bare.
    return rel.strip(), rest[1:-1].replace('\\"', '"')


def ic13_samples(path: str, image_root: str | None = None,
                 stats: ConvertStats | None = None) -> tuple[Samples, ConvertStats]:
    """Samples of ICDAR 2013 word recognition: ``gt.txt`` lines ``word_1.png, "Tiredness"``.

    `path` is the gt file or a folder holding ``gt.txt``; images are relative to the gt file's
    folder unless `image_root` is given (the test set's gt file sits apart from its images).
    """
    gt = _pick_file(path, ["gt.txt"], "ICDAR 2013 gt file")
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(gt))
    stats = stats if stats is not None else ConvertStats()
    stats.source = stats.source or gt
    entries = []
    for lineno, line in _text_lines(gt, stats):
        stats.entries += 1
        where = f"{gt}:{lineno}"
        parsed = _ic13_line(line)
        if parsed is None:
            stats.skip("malformed", f'{where}: expected \'word_N.png, "label"\'; skipped')
            continue
        entries.append((os.path.join(root, parsed[0]), parsed[1], where))
    return _yield_labelled(iter(entries), stats), stats


# ---------------------------------------------------------------------------------------------
# dispatcher

def _source(kind: str) -> Callable[..., tuple[Samples, ConvertStats]]:
    return {"list": list_samples, "mjsynth": mjsynth_samples, "iiit5k": iiit5k_samples,
            "svt": svt_samples, "ic03": ic03_samples, "ic13": ic13_samples}[kind]


def open_source(kind: str, input_path: str, image_root: str | None = None,
                split: str | None = None, **options) -> tuple[Samples, ConvertStats]:
    """The (samples, stats) of one source; `split` defaults to the kind's usual split."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
    splits = SPLITS[kind]
    kwargs = dict(options, image_root=image_root)
    if splits is None:
        if split is not None:
            raise ValueError(f"kind '{kind}' takes no split (its input is the annotation file itself); "
                             f"got split '{split}'")
    else:
        split = splits[0] if split is None else split
        if split not in splits:
            raise ValueError(f"kind '{kind}' has splits {', '.join(splits)}; got '{split}'")
        kwargs["split"] = split
    return _source(kind)(input_path, **kwargs)


def _require_some(samples: Samples, stats: ConvertStats) -> Samples:
    yield from samples
    if stats.written == 0:
        # Raised inside the writer's loop, so no empty LMDB replaces a good one.
        raise ValueError(f"no sample could be converted from {stats.source}: {stats.summary()}")


def convert(kind: str, input_path: str, output: str, image_root: str | None = None,
            split: str | None = None, progress: bool = True, **options) -> ConvertStats:
    """Convert one raw dataset into a text LMDB at `output`; returns the counters.

    `kind` is one of :data:`KINDS`; `options` go to the source function (``crop_format`` for
    svt). The LMDB appears only once complete: an error midway (or a source with no usable
    sample, a ValueError) leaves any existing `output` untouched. Prints a one-line summary.
    """
    samples, stats = open_source(kind, input_path, image_root=image_root, split=split, **options)
    count = write_text_lmdb(output, _require_some(samples, stats), total=stats.entries or None,
                            desc=f"{kind} -> {os.path.basename(os.path.normpath(output))}" if progress else False)
    assert count == stats.written, (count, stats.written)
    print(f"wrote {count} samples to {output}; {stats.summary()}", flush=True)
    return stats


# ---------------------------------------------------------------------------------------------
# LMDB -> image files

# Magic numbers of the formats the 310 program lists (ascend310_infer ListImages: .jpg/.jpeg,
# .png, .bmp); bytes starting with one of them are written unchanged.
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str | None:
    """'jpg', 'png' or 'bmp' from the magic number of encoded image bytes; None otherwise."""
    for magic, ext in _IMAGE_MAGIC:
        if data.startswith(magic):
            return ext
    return None


def _write_file_atomically(path: str, data: bytes) -> None:
    # The temporary name has no image extension, so an interrupted export never leaves a
    # truncated picture that the 310 program would list and then fail to decode.
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_lmdb_images(root: str, out_dir: str, set_name: str | None = None) -> int:
    """Write every image of ``TextLMDB(root)`` to `out_dir`; returns how many were written.

    Files are named ``<set_name>_<index + 1:09d>.<ext>``, `index` being the 0-based global
    TextLMDB index of `root`: exactly the stems ``src.crnn.model.eval_items`` gives the
    evaluation samples of an ``eval_lmdb`` root, so ``postprocess.py`` finds the 310 program's
    ``<stem>_<i>.bin`` outputs. `set_name` defaults to the root's folder name, as there.

    JPEG, PNG and BMP bytes are written unchanged (the 310 program then decodes the same bytes
    the Python evaluation does). Anything else is decoded the way the evaluation decodes it
    (``cv2.IMREAD_COLOR``) and re-encoded as lossless PNG, which gives the same pixels. Every
    image is checked to decode first: one bad file would stop the whole 310 run, whereas the
    Python evaluation merely skips it. Missing and undecodable images are skipped, counted and
    named (LMDB folder and key) in a warning on the ``src.data`` logger. Files of the same name
    already in `out_dir` are replaced; nothing else there is touched.

    The evaluation may still leave some exported samples out (labels that are missing, too
    long, or empty after filtering): their outputs are simply not read.
    """
    db = TextLMDB(root)
    if set_name is None:
        # os.path.abspath also normalises: "sets/IIIT5k/" and "." name their folder, just as the
        # resolved (absolute, normalised) eval_lmdb paths do in src/data/text/dataset.py:lmdb_sets.
        set_name = os.path.basename(os.path.abspath(root))
    if not set_name or os.sep in set_name or (os.altsep and os.altsep in set_name):
        raise ValueError(f"cannot name the exported images after '{set_name}' (root {root}); pass set_name")
    os.makedirs(out_dir, exist_ok=True)
    stats = ConvertStats(source=root, entries=len(db))
    reencoded = 0
    for index in range(len(db)):
        data = db.image(index)
        if data is None:
            stats.skip("missing_images", f"{db.describe(index)}: image missing; skipped")
            continue
        if not _is_decodable(data):
            stats.skip("undecodable_images", f"{db.describe(index)}: image cannot be decoded; skipped")
            continue
        ext = image_extension(data)
        if ext is None:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            ok, enc = (False, None) if img is None else cv2.imencode(".png", img)
            if not ok:
                stats.skip("undecodable_images", f"{db.describe(index)}: image cannot be decoded "
                                                 "as colour for PNG re-encoding; skipped")
                continue
            data, ext = enc.tobytes(), "png"
            reencoded += 1
        _write_file_atomically(os.path.join(out_dir, f"{set_name}_{index + 1:09d}.{ext}"), data)
        stats.written += 1
    print(f"exported {stats.written} of {len(db)} images of {root} to {out_dir} as {set_name}_<index>.<ext> "
          f"({reencoded} re-encoded as PNG); skipped {stats.skipped} (missing_images={stats.missing_images} "
          f"undecodable_images={stats.undecodable_images})", flush=True)
    return stats.written
