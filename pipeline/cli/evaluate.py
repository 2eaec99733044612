"""`grar evaluate`: score a folder of PNG predictions against a folder of label maps (``pipeline.scores.folders``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.datasets.layout import IGNORE_INDEX
from pipeline.errors import ConfigError
from pipeline.io import check_new_output, json_with_keys, write_text_atomic

HELP = "score PNG predictions against label maps: mIoU, pixel accuracy, per-class IoU"
DESCRIPTION = """\
Score every prediction PNG in --pred against the label map with the same file
stem in --gt (both 8-bit single-channel PNGs, mode L or P, values = class ids;
255 in the ground truth = ignore). Counts are summed over the whole folder into
one confusion matrix; mIoU averages the IoU of the classes present in the ground
truth or the prediction (FCN's definition, as in the paper, section 4.2).

Every label map needs exactly one prediction of the same size, and every
prediction a label map; a missing or extra file, a size mismatch, a colour or
16-bit image, or a value that is not a class id stops the run naming the file,
and no JSON is written. Scores are fractions in [0, 1]; classes absent from
both prediction and ground truth get null.

example:
  grar evaluate --pred runs/grar/pred --gt data/ade20k/val/labels --num-classes 150 \\
      --classes data/ade20k/classes.csv --json runs/grar/scores.json"""

MAX_CLASSES = 255
NO_PARAMS = True  # scores any folder: needs no params.yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", type=Path, required=True, metavar="DIR", help="folder of prediction PNGs")
    parser.add_argument("--gt", type=Path, required=True, metavar="DIR", help="folder of ground-truth label PNGs")
    parser.add_argument("--num-classes", type=int, required=True, metavar="K", help="number of classes (ids 0..K-1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the scores here (atomically)")
    parser.add_argument(
        "--classes",
        type=Path,
        metavar="CSV",
        help="class names: a CSV with header id,name and ids 0..K-1 in order (default: ids as names)",
    )
    parser.add_argument(
        "--ignore-index",
        type=int,
        default=IGNORE_INDEX,
        metavar="V",
        help=f"ground-truth value that is not scored (default: {IGNORE_INDEX})",
    )
    parser.add_argument("--per-class", action="store_true", help="also print the IoU of every class")


def summary(result: dict, per_class: bool) -> str:
    """A short plain-text table of the scores in ``result`` (the JSON mapping)."""

    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:6.2f}"

    lines = [
        f"images          {result['num_images']:>8d}",
        f"classes scored  {result['num_classes_present']:>4d} / {result['num_classes']}",
        f"mIoU            {pct(result['miou'])} %",
        f"pixel accuracy  {pct(result['pixel_accuracy'])} %",
        f"mean accuracy   {pct(result['mean_accuracy'])} %",
    ]
    if per_class:
        width = max(len("class"), *(len(name) for name in result["per_class_iou"]))
        lines += ["", f"{'class':<{width}}  {'IoU %':>6}"]
        lines += [f"{name:<{width}}  {pct(iou)}" for name, iou in result["per_class_iou"].items()]
    return "\n".join(lines)


# What makes an existing --json file one of ours, so that it may be replaced.
SCORES_JSON = json_with_keys("miou", "num_images", "per_class_iou")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.num_classes <= MAX_CLASSES:
        raise ConfigError(
            f"--num-classes {args.num_classes}: must be 1..{MAX_CLASSES} (8-bit label maps, 255 = ignore)"
        )
    if args.json is not None:
        check_new_output(args.json, (args.pred, args.gt, args.classes), folder=False, ours=SCORES_JSON, what="--json")
    from pipeline.scores.folders import class_names, score_folders

    names = class_names(args.classes, args.num_classes) if args.classes else None
    scores, num_images = score_folders(args.pred, args.gt, args.num_classes, args.ignore_index)
    result = scores.to_dict(names)
    result = {
        **result,
        "num_images": num_images,
        "ignore_index": args.ignore_index,
        "per_class_iou": result.pop("per_class_iou"),
    }  # the long mapping last
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(summary(result, args.per_class))
    if args.json:
        print(f"scores written to {args.json}")
    return 0
