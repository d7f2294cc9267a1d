"""Dataset kinds: the value of config key `dataset` -> what the config glue needs to get that data.

The glue (detection/sources.py, which builds and names MindRecords, and the CRNN's
`text_sets`) knows no format; it asks :func:`kind_of` and calls the entry's functions, so a
format lives in its reader module and in one entry here, and nowhere else.

To add a format (say ICDAR 2013 for CTPN):

1. Write the reader module beside its task's others, e.g. ``detection/icdar2013.py``: the
   reader, which knows only files and returns ``(records, class_names, cat_ids)`` (see
   detection/records.py), then, in a last section, the few functions the entry names, which
   know the config keys: ``describe``, ``read_split`` and, if the format knows its classes,
   ``categories`` (signatures in :class:`DatasetKind`). New config keys go, with their
   defaults, into the config that uses them (detection: configs/_base_/detection_data.yaml).
2. Register it at the end of this file under its task:
   ``register(DatasetKind("icdar2013", DETECTION, read=icdar2013.read_split,
   describe=icdar2013.describe, categories=icdar2013.categories))``.

Its MindRecords are then named by a hash of what ``describe`` returns (so they never collide
with another kind's or with older inputs), and the error for an unknown `dataset` lists it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from src.data.detection import coco, txt, voc
from src.data.synthetic import shapes, words
from src.data.text import dataset as text_dataset
from src.errors import ConfigError
from src.model_utils.config import Config

DETECTION = "detection"
TEXT = "text"
TASKS = (DETECTION, TEXT)


@dataclass(frozen=True)
class DatasetKind:
    """One value of config key `dataset` and the functions the config glue calls for it.

    read: detection: ``read(cfg, split, source, class_names, stats) -> (records, class_names,
        cat_ids)``, reading what `describe` returned (``source``, with ``"kind"`` added);
        ``class_names`` is the config's list or None. Text: ``read(cfg, split) -> [TextSet]``.
    describe (detection): ``describe(cfg, split) -> dict``, the inputs that define the split
        (resolved paths, sizes, seeds; JSON values). Its hash names the split's MindRecord, so
        changing what an existing kind returns makes every cache of that kind be rebuilt.
    categories (detection): ``categories(cfg) -> (names, ids)``, every foreground class of the
        source in id order, used when the config lists no `class_names`. None when the format
        has no class list of its own: the config must then list `class_names`.
    source_category_ids (detection): the reader reports the source's own category ids (COCO),
        so configured `class_names` are looked up among `categories`; otherwise a class's id
        is its label (1..K in `class_names` order).
    """

    name: str
    task: str
    read: Callable
    describe: Callable[[Config, str], dict] | None = None
    categories: Callable[[Config], tuple[list[str], list[int]]] | None = None
    source_category_ids: bool = False


_KINDS: dict[str, DatasetKind] = {}


def register(kind: DatasetKind) -> DatasetKind:
    """Add a kind; its name must be new (a second format under one name would silently win)."""
    if kind.name in _KINDS:
        raise ValueError(f"dataset kind '{kind.name}' is registered already")
    if kind.task not in TASKS:
        raise ValueError(f"dataset kind '{kind.name}': task must be one of {', '.join(TASKS)}, got '{kind.task}'")
    if kind.task == DETECTION and kind.describe is None:
        raise ValueError(f"dataset kind '{kind.name}': a detection kind needs `describe` (it names the MindRecord)")
    _KINDS[kind.name] = kind
    return kind


def kind_names(task: str) -> list[str]:
    """The kinds of one task, in registration order."""
    return [k.name for k in _KINDS.values() if k.task == task]


def kind_of(cfg: Config, task: str) -> DatasetKind:
    """The kind config key `dataset` names; it must serve `task` (a text set cannot feed SSD)."""
    kind = _KINDS.get(cfg.dataset)
    if kind is None or kind.task != task:
        raise ConfigError(f"config key 'dataset' is '{cfg.dataset}'; expected one of {', '.join(kind_names(task))}")
    return kind


register(DatasetKind("shapes", DETECTION, read=shapes.read_split, describe=shapes.describe,
                     categories=shapes.categories, source_category_ids=True))
register(DatasetKind("coco", DETECTION, read=coco.read_split, describe=coco.describe_tree,
                     categories=coco.tree_categories, source_category_ids=True))
register(DatasetKind("coco_json", DETECTION, read=coco.read_split, describe=coco.describe_files,
                     categories=coco.files_categories, source_category_ids=True))
register(DatasetKind("voc", DETECTION, read=voc.read_split, describe=voc.describe, categories=voc.categories))
register(DatasetKind("txt", DETECTION, read=txt.read_split, describe=txt.describe))

register(DatasetKind("words", TEXT, read=words.word_sets))
register(DatasetKind("lmdb", TEXT, read=text_dataset.lmdb_sets))
