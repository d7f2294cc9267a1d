"""Embedded word-crop dataset (text-recognition LMDBs) for the CRNN recognizer.

The crops are generated on first use into a cache folder, so that the recognizer trains on a
fresh machine without downloads. Each crop shows one token (a common English word, a
number, a pronounceable non-word, a word with digits or a random string) rendered with one
of the DejaVu fonts matplotlib ships, in random colours on a flat, gradient or textured
background, slightly rotated and perspective-warped, cropped with random padding, then
degraded by blur, noise and JPEG compression, the way real scene-text word crops look.

Layout of a generated cache::

    cache_dir/COMPLETE    generation parameters (json); written after both LMDBs
    cache_dir/train/      text LMDB (``num-samples``, ``image-%09d``, ``label-%09d``)
    cache_dir/val/

Every image comes from its own random stream seeded by (seed, split, index), so a sample can
be regenerated alone and the output does not depend on generation order or worker count.
Labels are the text exactly as drawn (mixed case even for the case-insensitive default; the
recognizer lowercases them).
"""
from __future__ import annotations

import contextlib
import functools
import glob
import multiprocessing
import os
import string
import threading
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The cache protocol (temp folder, completion marker, locked rename) is the one of the
# shapes dataset; sharing it keeps the concurrency handling in one place.
from src.data.cache import build_cached
from src.data.text.alphabet import alphabet_from_config
from src.data.text.dataset import TextSet
from src.data.text.lmdb_io import write_text_lmdb
from src.model_utils.config import Config

DEFAULT_CHARSET = string.digits + string.ascii_lowercase
PRINTABLE_CHARSET = string.digits + string.ascii_letters + string.punctuation

# Bump whenever token sampling or rendering changes, so caches made by an older generator
# are regenerated instead of silently reused.
_GENERATOR_VERSION = 2  # 2: character centres (pos-%09d keys)

_SPLIT_CODES = {"train": 1, "val": 2}
_JPEG_QUALITY = (35, 95)
_HEIGHT = (32, 64)
_FONT_SIZE = (20, 48)
_MAX_TOKEN_LEN = 16
# Luminance gap (0..255) kept between text and nearly all of the background behind it.
_MIN_CONTRAST = 60.0
# Below this many samples per split a process pool costs more than it saves.
_PARALLEL_MIN = 2000

_WORDS_TEXT = """
about above accept access accident account across act action active actor add address
admit adult advice affect afraid after afternoon again against age agency agent ago agree
ahead air airport alarm album alcohol alive all allow almost alone along already also
always amazing among amount ancient and anger angle angry animal ankle announce annual
another answer anxious any anyone anything apart apartment appear apple apply approve
april area argue arm army around arrange arrive arrow art article artist ask asleep
attack attempt attend august aunt author auto autumn available avenue average avoid awake
award aware away baby back bacon bad badge bag bake bakery balance ball banana band bank
bar barber base basic basket bath battery battle beach bean bear beat beautiful beauty
because become bed bedroom bee beef beer before begin behind believe bell belong below
belt bench bend benefit berry beside best better between beyond bicycle big bike bill
bird birth biscuit bit bite bitter black blade blank blanket blind block blood blow blue
board boat body boil bold bone bonus book boot border born borrow boss both bottle bottom
bound bowl box boy brain branch brand brave bread break breakfast breath brick bride
bridge brief bright bring broad broken brother brown brush bubble bucket budget build
building bullet bunch burger burn bus bush business busy but butter button buy cabin
cable cafe cage cake call calm camera camp campus can canal cancel candle candy cap
capital captain car carbon card care career careful cargo carpet carry cart case cash
castle casual cat catch cause ceiling cell cellar center centre century cereal certain
chain chair chalk champion chance change channel chapter charge charity chart cheap check
cheese chef chemist cherry chess chest chicken chief child chip chocolate choice choose
church cinema circle citizen city civil claim class classic clean clear clerk clever
client cliff climate climb clinic clock close closed cloth cloud club coach coal coast
coat code coffee coin cold collect college colour column combine come comfort comic
command comment common company compare complete computer concert condition confirm
connect consider contact contain content contest continue contract control cook cookie
cool copper copy corn corner correct cost cottage cotton couch could council count
counter country county couple courage course court cousin cover cow crash crazy cream
create credit crew crime crisis cross crowd crown cruise cry crystal culture cup cupboard
current curtain curve custom customer cut cycle dad daily damage dance danger dark data
date daughter day dead deal dear death debate debt decade december decide deck decline
deep deer defend degree delay deliver delivery demand dental deny depart depend deposit
depth describe desert design desk detail develop device diamond diary dictionary die diet
differ digital dinner direct direction dirty discount dish display distance district
divide doctor document dog dollar domain door double doubt down downtown dozen draft
dragon drama draw drawer dream dress drink drive driver drop drug drum dry duck during
dust duty each eagle ear early earn earth ease east easy eat echo economy edge edit
editor effect effort egg eight either elbow elder election electric element elephant
elevator eleven else email emergency empire employ empty enable end enemy energy engine
enjoy enough enter entrance entry envelope equal error escape estate euro even evening
event ever every exact exam example except exchange excuse exit expect expert explain
express extra eye fabric face fact factory fail fair faith fall false family famous fan
fancy far farm fashion fast fat father fault favour fear feature february fee feed feel
female fence festival fever few field fifteen fifty fight figure file fill film filter
final finance find fine finger finish fire firm first fish fit five fix flag flame flash
flat flavour flight float flood floor flour flower fly focus fold folk follow food foot
football force foreign forest forget fork form formal fortune forty forward found four
frame free freedom freeze fresh friday fridge friend front frozen fruit fuel full fun
fund funny furniture future gain gallery game garage garden garlic gas gate gather general
gentle ghost giant gift ginger girl give glad glass global glove glue goal goat gold
golden golf good goods govern grade grain grand grant grape grass grave great green greet
grey grill grocery ground group grow growth guard guess guest guide guitar gun habit hair
half hall hammer hand handle hang happen happy harbour hard harm harvest hat hate have
head health hear heart heat heaven heavy height hello helmet help her herb here hero
hidden hide high highway hill hint hire history hit hobby hold hole holiday hollow holy
home honest honey hook hope horn horror horse hospital host hot hotel hour house how huge
human humour hundred hungry hunt hurry hurt husband ice idea ideal image impact import
inch include income increase index indoor industry infant inform inner input insect
inside install instead insurance interest into invest invite iron island issue item
jacket jam january jazz jeans jelly jewel job join joint joke journal journey joy judge
juice july jump june jungle junior just justice keen keep kettle key keyboard kick kid
kill kind king kiss kitchen kite knee knife knock know label labour ladder lady lake lamp
land lane language laptop large last late later laugh launch laundry law lawyer layer
lazy lead leader leaf league lean learn least leather leave lecture left leg legal lemon
lend length lesson letter level liberty library licence lid life lift light like limit
line link lion lip liquid list listen little live living load loan lobby local lock
lodge logic lonely long look loose lose loss lost lot loud love lovely low lucky lunch
machine magazine magic mail main major make male mall man manager manner many map marble
march margin mark market marriage marry mask master match material matter maximum may
meal mean measure meat medal media medical medium meet meeting melon member memory men
mental menu mercy merit message metal meter method metro middle midnight might mild mile
milk mill million mind mineral minimum minor minute mirror miss mistake mix mobile model
modern moment monday money monitor monkey month mood moon moral more morning most mother
motor mount mountain mouse mouth move movie much mud museum music must mystery nail name
narrow nation native natural nature near neat neck need needle neither nephew nerve nest
net network never new news next nice niece night nine noble nobody noise none noon normal
north nose note nothing notice novel november now number nurse nut object ocean october
odd offer office officer often oil okay old olive once one onion online only open opera
opinion orange order organ origin other outdoor outside oven over owner oxygen pack
package page pain paint pair palace pale palm pan panel panic paper parade parcel parent
park parking part partner party pass passage passenger past pasta path patient pattern
pause pay peace peach peak pear pen pencil people pepper perfect perform period permit
person pet petrol pharmacy phone photo piano pick picnic picture pie piece pig pile pill
pilot pin pine pink pipe pitch pizza place plain plan plane planet plant plastic plate
platform play player plaza please plenty plot pocket poem poet point police policy polish
polite pool poor popular port portion position post pot potato pound powder power
practice praise pray prefer premium prepare present press pretty price pride priest
prince print prison private prize problem process produce product profit program project
promise proof proper property protect proud prove provide public pull pump punch pupil
purple purpose push put puzzle quality quarter queen question queue quick quiet quite
quiz rabbit race radio rail rain raise range rank rapid rare rate raw reach read ready
real reason receipt recent recipe record red reduce refund region relax release remain
remember remote remove rent repair repeat reply report rescue reserve resort rest
restaurant result retail return reward rhythm rice rich ride right ring rise risk river
road robot rock role roll roof room root rope rose rough round route row royal rubber
rude rule run rural sad safe safety sail salad salary sale salon salt same sample sand
sauce save say scale scene school science score screen sea search season seat second
secret section secure see seed seem select sell send senior sense series serious serve
service session set seven shade shadow shake shall shape share sharp sheep sheet shelf
shell shelter shift shine ship shirt shock shoe shoot shop short shoulder shout show
shower shut shy sick side sight sign signal silent silk silly silver simple since sing
single sink sister sit site six size skill skin skirt sky sleep slice slide slim slow
small smart smell smile smoke smooth snack snake snow soap soccer social sock sofa soft
software soil solar soldier solid solve some son song soon sorry sort soul sound soup
sour source south space spare speak special speed spell spend spice spirit split sport
spot spread spring square stable staff stage stair stamp stand star start state station
stay steak steal steam steel step stick still stock stomach stone stop store storm story
stove straight strange straw street stress strike string strong student studio study
stuff style subject subway success sugar suit summer sun sunday super supply support
sure surface surprise survey sweet swim switch symbol system table tail take tale talent
talk tall tank tape target task taste tax taxi tea teach team tear teen telephone tell
temple ten tennis tent term test text thank theatre theme then theory there thick thief
thin thing think third thirty those though thousand thread three throat through throw
thumb thursday ticket tidy tie tiger tight tile time tiny tip tired title toast today toe
together toilet tomato tomorrow tone tongue tonight tool tooth top topic total touch tough
tour tourist towel tower town toy track trade traffic trail train transfer transport
travel tray treat tree trend trial trick trip trouble truck true trust truth try tube
tuesday tunnel turkey turn twelve twenty twice twin two type tyre ugly umbrella uncle
under uniform union unique unit universe until update upper upset urban urgent use used
useful usual vacation valley value van vast vegetable vehicle venue version very vessel
veteran video view village violin virus visa visit visitor voice volume vote wage wait
waiter wake walk wall wallet want war warm warning wash waste watch water wave way weak
wealth weapon wear weather web wedding wednesday week weekend weight welcome well west
wet whale wheat wheel when where which while whisky white who whole why wide wife wild
will win wind window wine wing winner winter wire wise wish with within without witness
woman wonder wood wool word work worker world worry worth would wound wrap write writer
wrong yard year yellow yes yesterday yet yoga you young youth zero zone zoo
"""

WORDS: tuple[str, ...] = tuple(sorted(set(_WORDS_TEXT.split())))

_VOWELS = "aeiou"
# Clusters make pseudo-words look like words without being any.
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
           "z", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gr", "pl", "pr", "sh", "sl", "sp", "st",
           "str", "th", "tr")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "nt", "rt", "st", "ck", "ng", "sh", "x")


# ----------------------------------------------------------------------------- fonts

@functools.lru_cache(maxsize=1)
def font_table() -> tuple[tuple[str, frozenset[str]], ...]:
    """(path, characters with a glyph) of every DejaVu font matplotlib ships, sorted by path.

    The coverage comes from the font's cmap: matplotlib's DejaVu*Display.ttf hold only a
    handful of glyphs, and a missing glyph would be drawn as a box under a valid label.
    """
    import matplotlib
    from fontTools.ttLib import TTFont

    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    table = []
    for path in sorted(glob.glob(os.path.join(folder, "DejaVu*.ttf"))):
        font = TTFont(path, lazy=True)
        try:
            cmap = font.getBestCmap() or {}
        finally:
            font.close()
        table.append((path, frozenset(chr(c) for c in cmap)))
    if not table:
        raise FileNotFoundError(f"no DejaVu*.ttf fonts found in {folder}")
    return tuple(table)


def _fonts_for(text: str) -> list[str]:
    chars = set(text) - {" "}
    return [path for path, covered in font_table() if chars <= covered]


_FONT_CACHE = threading.local()


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    # FreeType faces are not safe to share between threads, so each thread keeps its own.
    cache = _FONT_CACHE.__dict__.setdefault("fonts", {})
    font = cache.get((path, size))
    if font is None:
        font = cache[(path, size)] = ImageFont.truetype(path, size)
    return font


# ----------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class _Vocab:
    """What tokens may be made of, for one (charset, case_sensitive) choice."""
    allowed: frozenset[str]
    case_sensitive: bool
    alphabet: str          # characters random strings draw from (lowercase when insensitive)
    letters: str
    digits: str
    punct: str
    other: str             # anything else in the charset (symbols, non-ASCII)
    words: tuple[str, ...]

    def ok(self, text: str) -> bool:
        """Whether `text` is a valid label: non-empty, no spaces, inside the charset."""
        if not text or any(c.isspace() for c in text):
            return False
        check = text if self.case_sensitive else text.lower()
        return all(c in self.allowed for c in check) and bool(_fonts_for(text))


@functools.lru_cache(maxsize=8)
def _vocabulary(charset: str, case_sensitive: bool) -> _Vocab:
    allowed = frozenset(charset if case_sensitive else charset.lower())
    covered = frozenset().union(*(c for _, c in font_table()))
    # A character without a glyph in any font can never be drawn, so it never enters a token.
    base = sorted(c for c in allowed if not c.isspace() and c in covered)
    if not base:
        raise ValueError(f"charset {charset!r} has no character the DejaVu fonts can draw")
    alphabet = "".join(base)
    lower = string.ascii_lowercase

    def word_ok(w: str) -> bool:
        return all(c in allowed for c in w) or (case_sensitive and all(c in allowed for c in w.upper()))

    return _Vocab(
        allowed=allowed,
        case_sensitive=case_sensitive,
        alphabet=alphabet,
        letters="".join(c for c in base if c.isalpha()),
        digits="".join(c for c in base if c.isdigit()),
        punct="".join(c for c in base if c in string.punctuation),
        other="".join(c for c in base if not (c.isalpha() or c.isdigit() or c in string.punctuation)),
        words=tuple(w for w in WORDS if set(w) <= set(lower) and word_ok(w)),
    )


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _pseudo_word(rng: np.random.Generator) -> str:
    word = ""
    for _ in range(int(rng.integers(1, 4))):
        syllable = _pick(rng, _ONSETS) + _pick(rng, _VOWELS) + _pick(rng, _CODAS)
        if word and len(word) + len(syllable) > 10:
            break
        word += syllable
    return word


def _number(rng: np.random.Generator, digits: str) -> str:
    r = rng.random()
    if r < 0.3 and len(digits) == 10:
        return str(int(rng.integers(1900, 2031)))
    if r < 0.75 and len(digits) == 10:
        # Log-uniform: short numbers are the most common on signs, long ones still occur.
        return str(int(10 ** rng.uniform(0.7, 5)))
    # Codes, phone fragments, numbers with leading zeros.
    return "".join(_pick(rng, digits) for _ in range(int(rng.integers(2, 9))))


def _random_string(rng: np.random.Generator, vocab: _Vocab) -> str:
    # Mostly letters, so strings look like codes and names rather than line noise.
    groups = [(g, w) for g, w in ((vocab.letters, 0.7), (vocab.digits, 0.2), (vocab.punct, 0.1),
                                  (vocab.other, 0.1)) if g]
    weights = np.array([w for _, w in groups])
    weights /= weights.sum()
    picks = rng.choice(len(groups), size=int(rng.integers(2, 11)), p=weights)
    return "".join(_pick(rng, groups[int(k)][0]) for k in picks)


def _decorate(rng: np.random.Generator, token: str, vocab: _Vocab) -> str:
    """Punctuation the way it sticks to words in scene text (only for punctuated charsets)."""
    r = rng.random()
    if r < 0.3:
        return token + _pick(rng, ".,!?:;")
    if r < 0.45:
        left, right = _pick(rng, ('()', '[]', '""', "''", '<>', '{}'))
        return left + token + right
    if r < 0.55:
        return token + _pick(rng, ("'s", "s'", "'"))
    if r < 0.7 and vocab.words:
        other = _pick(rng, vocab.words)
        return token + _pick(rng, "-/&+_") + (other.upper() if token.isupper() else other)
    if r < 0.8:
        return _pick(rng, "#@*~") + token
    if r < 0.9 and vocab.digits:
        # Prices, times, percentages, decimals.
        a = str(int(rng.integers(0, 100)))
        b = f"{int(rng.integers(0, 100)):02d}"
        return _pick(rng, ("$" + a + "." + b, a + ":" + b, a + "%", a + "." + b, "+" + a + b))
    return "www." + token + _pick(rng, (".com", ".org", ".net"))


def _apply_case(rng: np.random.Generator, token: str, vocab: _Vocab) -> str:
    r = rng.random()
    if r < 0.5:
        variant = token.lower()
    elif r < 0.75:
        i = next((k for k, c in enumerate(token) if c.isalpha()), None)
        variant = token if i is None else token[:i] + token[i].upper() + token[i + 1:].lower()
    else:
        variant = token.upper()
    # A case-sensitive charset may lack one case; then fall back to a variant it has.
    for cand in (variant, token, token.lower(), token.upper()):
        if vocab.ok(cand):
            return cand
    return variant


def _sample_text(rng: np.random.Generator, vocab: _Vocab) -> str:
    """One random token that is a valid label for `vocab`."""
    kinds = {
        "word": 0.55 if vocab.words else 0.0,
        "pseudo": 0.10 if len(set(vocab.letters) & set(string.ascii_lowercase)) == 26 else 0.0,
        "number": 0.12 if vocab.digits else 0.0,
        "compound": 0.08 if vocab.words and vocab.digits else 0.0,
        "random": 0.15,
    }
    names = list(kinds)
    p = np.array([kinds[k] for k in names])
    p /= p.sum()
    for _ in range(20):
        kind = names[int(rng.choice(len(names), p=p))]
        if kind == "word":
            token = _pick(rng, vocab.words)
        elif kind == "pseudo":
            token = _pseudo_word(rng)
        elif kind == "number":
            token = _number(rng, vocab.digits)
        elif kind == "compound":
            w, d = _pick(rng, vocab.words), _number(rng, vocab.digits)[:4]
            token = w + d if rng.random() < 0.6 else d + w
        else:
            token = _random_string(rng, vocab)
        # Random strings in a case-sensitive charset already mix cases on purpose.
        if not (kind == "random" and vocab.case_sensitive):
            token = _apply_case(rng, token, vocab)
        if vocab.punct and rng.random() < 0.3:
            decorated = _decorate(rng, token, vocab)
            if vocab.ok(decorated) and len(decorated) <= _MAX_TOKEN_LEN:
                token = decorated
        if vocab.ok(token) and len(token) <= _MAX_TOKEN_LEN:
            return token
    # Only reachable with exotic charsets; any single drawable character is a valid label.
    return _pick(rng, vocab.alphabet)


# ----------------------------------------------------------------------------- rendering

def _luminance(rgb) -> np.ndarray:
    return np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(background, text) RGB float colours with a clear luminance gap."""
    r = rng.random()
    if r < 0.4:
        # Paper, walls, white signs: light and nearly neutral.
        bg = rng.uniform(185, 255) + rng.uniform(-15, 15, 3)
    elif r < 0.55:
        bg = rng.uniform(0, 60) + rng.uniform(-10, 10, 3)
    else:
        bg = rng.uniform(0, 255, 3)
    bg = np.clip(bg, 0, 255).astype(np.float32)
    lb = float(_luminance(bg))
    for _ in range(40):
        if rng.random() < 0.45:
            level = rng.uniform(0, 50) if lb > 128 else rng.uniform(205, 255)
            fg = level + rng.uniform(-12, 12, 3)
        else:
            fg = rng.uniform(0, 255, 3)
        fg = np.clip(fg, 0, 255).astype(np.float32)
        if abs(float(_luminance(fg)) - lb) >= 100:
            return bg, fg
    return bg, np.full(3, 0.0 if lb > 128 else 255.0, np.float32)


def _background(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    """Float32 HxWx3 background around `colour`: flat, gradient, blotchy or fine-textured."""
    bg = np.empty((h, w, 3), np.float32)
    bg[:] = colour
    kind = rng.choice(4, p=[0.3, 0.3, 0.25, 0.15])
    if kind == 1:
        ang = rng.uniform(0, 2 * np.pi)
        xs = np.linspace(-0.5, 0.5, w, dtype=np.float32) * np.float32(np.cos(ang))
        ys = np.linspace(-0.5, 0.5, h, dtype=np.float32) * np.float32(np.sin(ang))
        ramp = ys[:, None] + xs[None, :]
        bg += ramp[..., None] * rng.uniform(-70, 70, 3).astype(np.float32)
    elif kind == 2:
        gh, gw = int(rng.integers(2, 6)), int(rng.integers(3, 10))
        amp = np.float32(rng.uniform(8, 25))
        if rng.random() < 0.6:  # luminance-only blotches look like dirt and lighting
            grid = np.repeat(rng.standard_normal((gh, gw, 1), dtype=np.float32), 3, axis=2)
        else:
            grid = rng.standard_normal((gh, gw, 3), dtype=np.float32)
        bg += cv2.resize(grid * amp, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == 3:
        # Paper grain or brushed metal: fine noise smeared along one axis.
        grain = rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(8, 20))
        sx, sy = (rng.uniform(2, 8), 0.6) if rng.random() < 0.5 else (0.8, 0.8)
        grain = cv2.GaussianBlur(grain, (0, 0), sigmaX=float(sx), sigmaY=float(sy))
        bg += grain[..., None]
    if rng.random() < 0.25:
        # Faint clutter (edges of other objects) so a plain background is not a giveaway.
        overlay = bg.copy()
        for _ in range(int(rng.integers(1, 4))):
            col = tuple(float(v) for v in rng.uniform(0, 255, 3))
            if rng.random() < 0.5:
                p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.line(overlay, p1, p2, col, int(rng.integers(1, 4)))
            else:
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                axes = (int(rng.integers(2, max(3, w // 3))), int(rng.integers(2, max(3, h))))
                cv2.ellipse(overlay, centre, axes, float(rng.uniform(0, 180)), 0, 360, col, -1)
        bg += (overlay - bg) * np.float32(rng.uniform(0.1, 0.25))
    if rng.random() < 0.2:
        # Uneven lighting: a soft highlight or shadow across the crop.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        spread = np.float32(rng.uniform(0.5, 1.5) * max(h, w))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spread ** 2))
        bg *= (1 + np.float32(rng.uniform(-0.3, 0.3)) * blob)[..., None]
    return bg


def _draw_mask(text: str, font: ImageFont.FreeTypeFont, size: tuple[int, int], origin: tuple[float, float],
               tracking: float, stroke: int = 0) -> np.ndarray:
    """uint8 coverage mask of `text` drawn at `origin` (left, ascender top)."""
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    x, y = origin
    if tracking == 0.0:
        draw.text((x, y), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    else:
        # Letter spacing needs per-character placement; kerning is lost, as in tracked type.
        for ch in text:
            draw.text((x, y), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
            x += font.getlength(ch) + tracking
    return np.asarray(img)


def _homography(rng: np.random.Generator, box: np.ndarray) -> np.ndarray:
    """Small rotation, shear, stretch and perspective about the centre of a text box."""
    cx, cy = box.mean(0)
    bh = float(box[:, 1].max() - box[:, 1].min())
    theta = np.deg2rad(np.clip(rng.normal(0, 1.5), -4, 4))
    shear = rng.uniform(-0.2, 0.2) if rng.random() < 0.25 else 0.0
    stretch = rng.uniform(0.85, 1.2)
    c, s = np.cos(theta), np.sin(theta)
    affine = np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]]) @ np.diag([stretch, 1.0])
    dst = (box - (cx, cy)) @ affine.T + (cx, cy)
    # Perspective: one end of the word a little taller than the other, corners jittered.
    taper = rng.uniform(-0.1, 0.1) * bh
    dst[[0, 3], 1] += np.array([-taper, taper]) / 2
    dst[[1, 2], 1] += np.array([taper, -taper]) / 2
    dst += rng.uniform(-0.04, 0.04, (4, 2)) * bh
    return cv2.getPerspectiveTransform(box.astype(np.float32), dst.astype(np.float32))


def _char_centres(text: str, font: ImageFont.FreeTypeFont, left: float, tracking: float) -> np.ndarray:
    """Horizontal centre of every character's advance, as `_draw_mask` places them from `left`."""
    if tracking == 0.0:
        # Drawn as one string: prefix lengths include the kerning.
        edges = np.array([font.getlength(text[:i]) for i in range(len(text) + 1)])
        return left + (edges[:-1] + edges[1:]) / 2
    advances = np.array([font.getlength(ch) for ch in text])
    starts = np.concatenate([[0.0], np.cumsum(advances + tracking)[:-1]])
    return left + starts + advances / 2


def _render(text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
    """(RGB uint8 crop before JPEG, JPEG quality, each character's centre as a fraction of
    the crop width) of `text`."""
    fonts = _fonts_for(text) if text else []
    if not fonts:
        raise ValueError(f"no DejaVu font can draw {text!r}")
    font = _font(_pick(rng, fonts), int(rng.integers(_FONT_SIZE[0], _FONT_SIZE[1] + 1)))
    fs = font.size
    ascent, descent = font.getmetrics()
    tracking = float(rng.uniform(-0.03, 0.25) * fs) if rng.random() < 0.25 else 0.0
    stroke = int(rng.integers(1, max(2, fs // 12) + 1)) if rng.random() < 0.1 else 0

    # Only the masks live on this canvas; the margin holds italic overhang, stroke, shadow
    # and an underline. Everything else is drawn at crop size, which is much smaller.
    margin = fs // 2 + stroke + 2
    left, _, right, _ = font.getbbox(text, stroke_width=stroke)
    advance = font.getlength(text) + tracking * (len(text) - 1)
    width = int(np.ceil(max(right, advance) - min(left, 0))) + 2 * margin
    height = ascent + descent + 2 * margin
    origin = (margin - min(left, 0), margin)
    text_mask = _draw_mask(text, font, (width, height), origin, tracking)
    if not text_mask.any():
        raise ValueError(f"{text!r} renders no ink")
    masks = {"text": text_mask}
    if stroke:
        masks["outline"] = _draw_mask(text, font, (width, height), origin, tracking, stroke)
    ink = masks.get("outline", text_mask)

    cols = np.nonzero(ink.max(0))[0]
    rows = np.nonzero(ink.max(1))[0]
    x0, x1 = float(cols[0]), float(cols[-1] + 1)
    y0, y1 = float(rows[0]), float(rows[-1] + 1)
    centres = np.stack([_char_centres(text, font, origin[0], tracking), np.full(len(text), (y0 + y1) / 2)], 1)
    if rng.random() < 0.5:
        # Many annotations box the whole line height, not just the ink.
        y0, y1 = min(y0, margin), max(y1, margin + ascent + descent)
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)

    if rng.random() < 0.12:
        # Drop shadow: the ink shifted down-right (the margin keeps np.roll from wrapping).
        dx, dy = (int(v) for v in rng.integers(1, max(2, fs // 14) + 1, 2))
        masks["shadow"] = np.roll(ink, (dy, dx), axis=(0, 1))
    if rng.random() < 0.15:
        # A sign border or underline next to the word, as often seen at crop edges.
        line = np.zeros_like(text_mask)
        gap = rng.uniform(0.1, 0.3) * (y1 - y0)
        yl = int(y1 + gap) if rng.random() < 0.6 else int(y0 - gap)
        cv2.line(line, (0, yl), (width - 1, yl), 255, int(rng.integers(1, max(2, fs // 10) + 1)), cv2.LINE_AA)
        masks["line"] = line

    # Warp the masks and cut the crop, with random padding, around the warped text box.
    hom = _homography(rng, box)
    warped = cv2.perspectiveTransform(box.reshape(1, 4, 2), hom).reshape(4, 2)
    bx0, by0 = warped.min(0)
    bx1, by1 = warped.max(0)
    bh = by1 - by0
    pad = rng.uniform([0.02, 0.02, 0.02, 0.02], [0.35, 0.2, 0.35, 0.2]) * bh  # left top right bottom
    if rng.random() < 0.1:
        pad[int(rng.integers(4))] += rng.uniform(0.2, 0.6) * bh
    cx0, cy0 = bx0 - pad[0], by0 - pad[1]
    cw = int(np.ceil(bx1 + pad[2] - cx0))
    ch = int(np.ceil(by1 + pad[3] - cy0))
    shift = np.array([[1, 0, -cx0], [0, 1, -cy0], [0, 0, 1]])
    centres = cv2.perspectiveTransform(centres.reshape(1, -1, 2), shift @ hom).reshape(-1, 2)[:, 0]
    centres = np.clip(centres / cw, 0.0, 1.0)
    names = list(masks)
    stack = cv2.warpPerspective(np.dstack([masks[k] for k in names]), shift @ hom, (cw, ch),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    stack = stack.reshape(ch, cw, len(names))
    alpha = {k: stack[..., i].astype(np.float32)[..., None] / np.float32(255) for i, k in enumerate(names)}

    bg_colour, fg_colour = _colours(rng)
    canvas = _background(rng, ch, cw, bg_colour)
    if "line" in alpha:
        canvas += (fg_colour - canvas) * alpha["line"]
    if "shadow" in alpha:
        canvas += (canvas * np.float32(0.35) - canvas) * alpha["shadow"] * np.float32(rng.uniform(0.5, 0.9))
    fg = np.broadcast_to(fg_colour, canvas.shape)
    if rng.random() < 0.2:
        # Vertical colour gradient across the letters (printed signs, logos).
        t = np.linspace(-0.5, 0.5, ch, dtype=np.float32)[:, None, None]
        fg = np.broadcast_to(np.clip(fg_colour + t * rng.uniform(-80, 80, 3).astype(np.float32), 0, 255),
                             canvas.shape)
    if "outline" in alpha:
        # The outline, not the background, is what the letters must stand out from.
        dark = float(_luminance(fg_colour)) < 128
        canvas += (np.full(3, 255.0 if dark else 0.0, np.float32) - canvas) * alpha["outline"]
    else:
        # Keep the text readable where a texture or gradient came close to its colour.
        inside = stack[..., names.index("text")] > 128
        if inside.any():
            lum_bg = _luminance(canvas[inside])
            gap = np.abs(lum_bg - _luminance(fg[inside]))
            if np.percentile(gap, 5) < _MIN_CONTRAST:
                level = 0.0 if np.median(lum_bg) > 128 else 255.0
                fg = np.broadcast_to(np.full(3, level, np.float32), canvas.shape)
    canvas += (fg - canvas) * (alpha["text"] * np.float32(rng.uniform(0.85, 1.0)))

    # Store at a native-looking height; small fonts enlarged come out soft, as real crops do.
    th = int(rng.integers(_HEIGHT[0], _HEIGHT[1] + 1))
    tw = max(8, int(round(cw * th / ch)))
    crop = cv2.resize(canvas, (tw, th), interpolation=cv2.INTER_AREA if th < ch else cv2.INTER_CUBIC)

    r = rng.random()
    if r < 0.3:
        crop = cv2.GaussianBlur(crop, (0, 0), float(rng.uniform(0.4, 1.1)))
    elif r < 0.38:
        k = int(rng.integers(3, 6))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        crop = cv2.filter2D(crop, -1, kernel)
    if rng.random() < 0.8:
        crop += rng.standard_normal(crop.shape, dtype=np.float32) * np.float32(rng.uniform(1, 8))
    image = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
    quality = int(rng.integers(_JPEG_QUALITY[0], _JPEG_QUALITY[1] + 1))
    return image, quality, centres


def _encode(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def render_word(text: str, rng: np.random.Generator) -> np.ndarray:
    """Render `text` as a synthetic scene-text word crop.

    Args:
        text: the characters to draw, exactly; every one must have a glyph in some DejaVu font.
        rng: the random stream that chooses font, colours, geometry and degradations.

    Returns:
        HxWx3 RGB uint8 image, H in 32..64, W following the word's aspect ratio, including
        the JPEG artefacts: identical to decoding the bytes the dataset stores for the
        same text and rng state.
    """
    image, quality, _ = _render(text, rng)
    return cv2.imdecode(np.frombuffer(_encode(image, quality), np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()


# ----------------------------------------------------------------------------- dataset

def _make_sample(seed: int, split: str, charset: str, case_sensitive: bool,
                 index: int) -> tuple[bytes, str, np.ndarray]:
    """(JPEG bytes, label, character centres) of one sample, from its own (seed, split, index) stream."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    text = _sample_text(rng, _vocabulary(charset, case_sensitive))
    image, quality, centres = _render(text, rng)
    return _encode(image, quality), text, centres


def _samples(params: dict, split: str, pool) -> Iterator[tuple[bytes, str, np.ndarray]]:
    """Every sample of a split in index order, rendered here or by a process pool."""
    n = params[f"num_{split}"]
    make = functools.partial(_make_sample, params["seed"], split, params["charset"], params["case_sensitive"])
    if pool is None:
        yield from map(make, range(n))
    else:
        # imap keeps index order, so the LMDB is the same for any number of workers.
        yield from pool.imap(make, range(n), chunksize=32)


@contextlib.contextmanager
def _worker_pool(workers: int | None, largest_split: int):
    """A process pool when it pays off, else None.

    Rendering holds the GIL most of the time (threads were slower than one thread), so
    parallelism needs processes. They are spawned, not forked: callers are often training
    scripts whose MindSpore and OpenCV thread pools are not safe to fork.
    """
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        workers = min(4, cores)
    # Spawning costs about a second, which a small split does not win back.
    if workers <= 1 or largest_split < _PARALLEL_MIN:
        yield None
        return
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def ensure_word_crops(cache_dir: str, num_train: int, num_val: int, seed: int = 0,
                      charset: str = DEFAULT_CHARSET, case_sensitive: bool = False,
                      progress: bool = True, workers: int | None = None) -> dict[str, str]:
    """Generate (or reuse) the synthetic word-crop LMDBs under `cache_dir`.

    Args:
        cache_dir: folder owned by the generator; it is replaced as a whole when regenerated,
            and temp siblings ``cache_dir.tmp-<pid>`` appear while generating.
        num_train, num_val: number of crops per split.
        seed: non-negative base seed; every (split, index) derives its own stream from it.
        charset: characters labels may use (checked on the lowercased label when not
            `case_sensitive`); tokens are drawn only from these. Use ``PRINTABLE_CHARSET`` with
            ``case_sensitive=True`` for the 94-character setting (adds punctuation to tokens).
        case_sensitive: whether the charset is meant case-sensitively.
        progress: show a tqdm progress bar per split.
        workers: rendering processes (default: available cores, at most 4; splits smaller
            than 2,000 are rendered in this process); the output does not depend on it.

    Returns:
        ``{"train": <lmdb folder>, "val": <lmdb folder>}`` (absolute paths).

    Existing LMDBs are reused only when the ``COMPLETE`` marker records the same
    parameters; otherwise (different parameters, or an interrupted run) they are
    regenerated. Concurrent callers (e.g. data-parallel ranks) all end up with the same
    valid dataset, and no caller ever sees a partly written one under `cache_dir`.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    _vocabulary(charset, bool(case_sensitive))  # fails early on an undrawable charset
    params = {
        "generator_version": _GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "charset": charset,
        "case_sensitive": bool(case_sensitive),
    }
    root = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    paths = {split: os.path.join(root, split) for split in _SPLIT_CODES}

    def build(tmp: str) -> None:
        with _worker_pool(workers, max(num_train, num_val)) as pool:
            for split in _SPLIT_CODES:
                write_text_lmdb(os.path.join(tmp, split), _samples(params, split, pool),
                                total=params[f"num_{split}"],
                                desc=f"word crops {split}" if progress else False)

    build_cached(root, params, build)
    return paths


# ----------------------------------------------------------------------------- dataset kind "words"

def word_sets(cfg: Config, split: str) -> list[TextSet]:
    """The split's crops, generated on first use as `words_dir`, `words_num_train`,
    `words_num_val` and `words_seed` say, drawing only characters of the configured alphabet."""
    abc = alphabet_from_config(cfg)
    paths = ensure_word_crops(cfg.path("words_dir", must_exist=False), cfg.words_num_train, cfg.words_num_val,
                              cfg.words_seed, charset=abc.characters, case_sensitive=abc.case_sensitive)
    return [TextSet(split, [paths[split]])]
