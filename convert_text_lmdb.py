"""Convert a raw text-recognition dataset into the text LMDB that CRNN reads.

    python convert_text_lmdb.py --kind KIND --input PATH --output OUT_LMDB_DIR
                                [--image_root DIR] [--split train|val|test]

Kinds and the --input each expects (image paths are relative to the annotation file's folder
unless --image_root is given):

  list     a text file of "image path<TAB>label" lines; without a tab, "image path label"
           split at a single space (MJSynth style; such a label cannot contain spaces).
  mjsynth  the raw MJSynth folder mnt/ramdisk/max/90kDICT32px (or the folder holding mnt/, or
           one annotation file). --split train|val|test picks annotation_<split>.txt (default
           train); labels come from lexicon.txt, or from the file names when it is absent.
  iiit5k   the IIIT5K folder holding testdata.mat / traindata.mat (or the .mat file itself).
           --split test|train (default test). Needs scipy.
  svt      the SVT folder holding test.xml / train.xml (or the xml). --split test|train
           (default test). Each word box is clipped to its image and cropped out as JPEG.
  ic03     ICDAR 2003 word recognition word.xml (or its folder).
  ic13     ICDAR 2013 word recognition gt.txt with lines 'word_1.png, "Tiredness"' (or a folder
           holding gt.txt). The test set's gt file sits beside its image folder: pass
           --image_root Challenge2_Test_Task3_Images.

Missing or undecodable images, empty labels, malformed lines and degenerate boxes are skipped
with a warning naming the file (and line); a one-line summary of the counts ends the run. The
LMDB appears at --output only once complete, replacing an older one.
"""
import src  # noqa: F401  (sets environment variables before anything heavy loads)

import argparse
import sys

from src.data.text_converters import KINDS, ConvertStats, convert


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (its --help is this module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=KINDS, help="source format (see above)")
    parser.add_argument("--input", required=True, help="annotation file or dataset folder (see above)")
    parser.add_argument("--output", required=True, help="LMDB folder to create (replaced if present)")
    parser.add_argument("--image_root", default=None,
                        help="folder the image paths are relative to (default: the annotation file's folder)")
    parser.add_argument("--split", default=None, choices=("train", "val", "test"),
                        help="split of mjsynth, iiit5k or svt (default: train for mjsynth, test otherwise)")
    return parser


def main(argv=None) -> ConvertStats:
    args = build_parser().parse_args(argv)
    return convert(args.kind, args.input, args.output, image_root=args.image_root, split=args.split)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"convert_text_lmdb.py: error: {err}")
