"""Character sets of text recognizers: label normalisation, encoding and greedy CTC decoding."""
from __future__ import annotations

import string

import numpy as np

LOWERCASE_36 = string.digits + string.ascii_lowercase
# Every printable ASCII character except whitespace: 94 symbols.
PRINTABLE_94 = "".join(c for c in string.printable if not c.isspace())


class Alphabet:
    """Maps text to class ids and back. Characters are classes 0..K-1 and the CTC blank is K
    (the last class, as the model zoo's CRNN has it, so its checkpoints keep their meaning).

    case_sensitive=False lowercases labels first (the alphabet must then be lowercase).
    unknown="drop" rejects a label holding a character outside the alphabet; "strip" removes
    those characters and keeps the rest.
    """

    def __init__(self, characters: str, case_sensitive: bool = False, unknown: str = "drop"):
        if not characters:
            raise ValueError("the alphabet is empty")
        if len(set(characters)) != len(characters):
            dupes = sorted({c for c in characters if characters.count(c) > 1})
            raise ValueError(f"the alphabet repeats characters: {''.join(dupes)!r}")
        if not case_sensitive and characters != characters.lower():
            raise ValueError("a case-insensitive alphabet must be lowercase (labels are lowercased first)")
        if unknown not in ("drop", "strip"):
            raise ValueError(f"unknown-character policy must be 'drop' or 'strip', got '{unknown}'")
        self.characters = characters
        self.case_sensitive = case_sensitive
        self.unknown = unknown
        self.index = {c: i for i, c in enumerate(characters)}
        self.blank = len(characters)

    @property
    def num_classes(self) -> int:
        """Characters + the blank."""
        return len(self.characters) + 1

    def normalize(self, label: str, unknown: str | None = None) -> str | None:
        """The label as the model should learn it, or None when it must be skipped
        (empty, or holding unknown characters under the 'drop' policy)."""
        text = label if self.case_sensitive else label.lower()
        if (unknown or self.unknown) == "strip":
            text = "".join(c for c in text if c in self.index)
        elif any(c not in self.index for c in text):
            return None
        return text or None

    def encode(self, text: str) -> list[int]:
        """Class ids of a normalised text."""
        return [self.index[c] for c in text]

    def decode_ids(self, ids) -> str:
        return "".join(self.characters[i] for i in ids if 0 <= i < self.blank)

    def greedy_decode(self, probs: np.ndarray) -> list[tuple[str, float]]:
        """Best-path CTC decoding of (B, T, C) per-step class probabilities.

        Per sequence: the arg-max class of each step, repeats merged, blanks removed. The
        confidence is the mean probability of the steps that emitted a character (of all
        steps when the text is empty).
        """
        probs = np.asarray(probs)
        best = probs.argmax(-1)
        best_p = probs.max(-1)
        results = []
        for ids, p in zip(best, best_p):
            new = np.ones(len(ids), bool)
            new[1:] = ids[1:] != ids[:-1]
            emit = new & (ids != self.blank)
            text = "".join(self.characters[i] for i in ids[emit])
            conf = float(p[emit].mean()) if emit.any() else float(p.mean())
            results.append((text, conf))
        return results


def alphabet_from_config(cfg) -> Alphabet:
    """Alphabet from config keys `alphabet` (the characters, or the names lowercase_36 /
    printable_94), `case_sensitive` and `label_filter` (drop | strip)."""
    named = {"lowercase_36": LOWERCASE_36, "printable_94": PRINTABLE_94}
    chars = named.get(cfg.alphabet, cfg.alphabet)
    return Alphabet(str(chars), bool(cfg.case_sensitive), cfg.label_filter)
