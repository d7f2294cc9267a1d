"""Convert a raw text-recognition dataset into the text LMDB that CRNN reads, or export an
LMDB's images as files.

    python convert_text_lmdb.py --kind KIND --input PATH --output OUT_LMDB_DIR
                                [--image_root DIR] [--split train|val|test]
    python convert_text_lmdb.py --export_images --input LMDB_ROOT --output IMAGE_DIR
                                [--set_name NAME]

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

--export_images writes every image of the LMDB root --input (one LMDB folder, or a folder of
several, read as one) into the folder --output as <set>_<index>.<ext>: <set> is --set_name,
by default the root's folder name, and <index> the 1-based, 9-digit sample number over the
root. These are the names CRNN's evaluation gives the samples of that root in eval_lmdb, so
the folder can be fed to the Ascend 310 program (scripts/run_infer_310.sh) and postprocess.py
finds its outputs. JPEG/PNG/BMP bytes are copied unchanged; other formats are re-encoded as
PNG; missing or undecodable images are skipped with a warning naming the key. Export every
eval_lmdb root into the same folder to score them all in one run.
"""
import src  # noqa: F401  (sets environment variables before anything heavy loads)

import argparse
import sys

from src.data.text.converters import KINDS, ConvertStats, convert, export_lmdb_images


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (its --help is this module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=KINDS, help="source format (see above); required unless --export_images")
    parser.add_argument("--input", required=True,
                        help="annotation file or dataset folder (see above); with --export_images: the LMDB root")
    parser.add_argument("--output", required=True,
                        help="LMDB folder to create (replaced if present); with --export_images: the image folder "
                             "(created if needed; files of the same names are replaced)")
    parser.add_argument("--image_root", default=None,
                        help="folder the image paths are relative to (default: the annotation file's folder)")
    parser.add_argument("--split", default=None, choices=("train", "val", "test"),
                        help="split of mjsynth, iiit5k or svt (default: train for mjsynth, test otherwise)")
    parser.add_argument("--export_images", action="store_true",
                        help="the reverse: write the images of the LMDB --input into the folder --output (see above)")
    parser.add_argument("--set_name", default=None,
                        help="with --export_images: file name prefix (default: the folder name of --input)")
    return parser


def main(argv=None) -> ConvertStats | int:
    """Run the conversion (returns its counters) or, with --export_images, the export (returns
    the number of images written)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.export_images:
        # Conversion-only options would be silently ignored; say so instead.
        given = [flag for flag, value in (("--kind", args.kind), ("--image_root", args.image_root),
                                          ("--split", args.split)) if value is not None]
        if given:
            parser.error(f"--export_images takes only --input, --output and --set_name, not {', '.join(given)}")
        return export_lmdb_images(args.input, args.output, args.set_name)
    if args.set_name is not None:
        parser.error("--set_name goes with --export_images")
    if args.kind is None:
        parser.error("--kind is required (or --export_images to export an LMDB's images)")
    return convert(args.kind, args.input, args.output, image_root=args.image_root, split=args.split)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"convert_text_lmdb.py: error: {err}")
