"""`grar predict RUN_DIR INPUT... --out DIR`: label maps (and overlays) for new images from a trained run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import ConfigError

HELP = "label maps for new images from a trained run (single scale, --ms, --window, --overlay)"
DESCRIPTION = """\
Run the trained model of RUN_DIR (its checkpoint.pt; nothing else is needed:
no dataset, statistics or pretrained file) on every INPUT image (JPEG or PNG
files, or folders of them, not recursive) and write to --out:

  <stem>.png            8-bit label map at the image's size, values = class ids,
                        with the run's class colours as its palette
  overlays/<stem>.png   with --overlay: the image blended with the colours, and
                        a legend of the classes present

Inference is exactly the run's evaluation: single scale by default; --ms uses
the run's multi-scale + flip settings (eval.scales, eval.flip); --window
slides crop-size windows (2/3 stride, logits averaged where they overlap):
--window alone takes the run's eval.window, or else the larger side of its
train.crop_size. Images of one size are batched together.

Every input is checked first: a missing file, a folder without images, a file
that is not a JPEG or PNG, two inputs with the same stem, or an --out that is
(or is inside) an input folder, or a non-empty folder grar did not write, stop
the command before any work with one line naming it (exit 1, or 2 for --out).
An image that turns out not to decode is named on one line; the other images
are still written, and the command exits 1.

examples:
  grar predict runs/grar-s0-0123456789 photos/ --out predictions/
  grar predict runs/my-run a.jpg b.png --out out/ --ms --overlay --device cuda"""

NO_PARAMS = True  # the run's checkpoint carries its params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run folder (holding checkpoint.pt)")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--ms", action="store_true", help="multi-scale + flip, with the run's eval settings")
    parser.add_argument(
        "--window",
        type=int,
        nargs="?",
        const=0,
        metavar="SIZE",
        help="sliding windows of SIZE px (alone: the run's eval.window, else the larger side of train.crop_size)",
    )
    parser.add_argument("--overlay", action="store_true", help="also write overlays/<stem>.png with a legend")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to run (default: auto, CUDA when available)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.training.predict import PredictOptions, predict_images

    if args.window is not None and args.window < 0:
        raise ConfigError(f"--window: must be a positive size in pixels (got {args.window})")
    options = PredictOptions(multi_scale=args.ms, window=args.window, overlay=args.overlay, device=args.device)
    result = predict_images(args.run_dir, args.inputs, args.out, options)
    print(f"{len(result.written)} label map(s) written to {args.out}")
    if result.failed:
        print(
            f"grar: error: {len(result.failed)} image(s) could not be read (named above); "
            f"the other {len(result.written)} were written",
            file=sys.stderr,
        )
        return 1
    return 0
