"""`grar stats`: class co-occurrence statistics (Eq. 1) of a prepared dataset or of any label folder."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import get_args

from pipeline.cli.main import require_params
from pipeline.config import BUILTIN_DATASETS, StatsConfig
from pipeline.errors import ConfigError

HELP = "count class co-occurrence (Eq. 1) into Parquet files and heatmaps"
DESCRIPTION = """\
Count which classes appear together in the label maps of a split and derive
the affinity f of Eq. 1 (section 3.2), the edges of GRAr's graph.

  grar stats NAME
      the train split of the prepared dataset data/NAME (labels, images and
      classes.csv) into artifacts/stats/NAME (paths from params.yaml); the DVC
      stage stats@NAME runs exactly this.
  grar stats --labels DIR --num-classes K [--ignore-index 255] [--classes CSV] --out DIR
      any folder of label PNGs (8-bit, pixel value = class id).

Writes, all or nothing: cooccurrence.parquet (i, j, t, f), classes.parquet
(id, name, images, pixels), supporters.parquet (top-k supporters and opponents
of every class), heatmap.svg (clustered, Figure 3), clusters/*.svg and
bars/*.svg. --normalisation printed is Eq. 1 as printed (normalised by the
supported class j); conditional is P(j | i) = t_ij / t_ii, the reading of the
paper's aeroplane/sky example; row is t_ij / (sum_k t_ik - t_ii), Eq. 1
normalised by the supporting class i. Settings not given as flags come from the stats
section of params.yaml (without one: printed, top-k 5, all CPUs).

Exit codes: 0 done, 1 bad data (a label value >= K that is not the ignore
index, a colour or unreadable PNG, a size mismatch with the image, an empty
split, a class table that disagrees), 2 bad arguments or parameters."""

LABELS_ONLY = ("num_classes", "ignore_index", "classes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help=f"prepared dataset to count ({', '.join(BUILTIN_DATASETS)} or a name of data.folders)",
    )
    parser.add_argument("--labels", type=Path, metavar="DIR", help="count this folder of label PNGs instead of NAME")
    parser.add_argument("--num-classes", type=int, metavar="K", help="classes 0..K-1 (with --labels)")
    parser.add_argument(
        "--ignore-index", type=int, metavar="V", help="label value that is no class (default: 255; with --labels)"
    )
    parser.add_argument(
        "--classes", type=Path, metavar="CSV", help="class table id,name (with --labels; names in figures)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (required with --labels; default for NAME: stats.root/NAME)",
    )
    parser.add_argument(
        "--normalisation",
        choices=get_args(StatsConfig.model_fields["normalisation"].annotation),
        help="printed: Eq. 1 as printed | conditional: P(j | i) | row: over the supporter's row "
        "(default: stats.normalisation)",
    )
    parser.add_argument(
        "--top-k", type=int, metavar="N", help="supporters and opponents per class (default: stats.top_k)"
    )
    parser.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: stats.workers)")


def run(args: argparse.Namespace) -> int:
    from pipeline.datasets.layout import IGNORE_INDEX
    from pipeline.stats.compute import StatsJob, build_stats
    from pipeline.stats.counting import default_workers

    if (args.name is None) == (args.labels is None):
        raise ConfigError("give a dataset NAME or --labels DIR (not both); see grar stats --help")
    flags = ("normalisation", "top_k", "workers")
    overrides = {key: getattr(args, key) for key in flags if getattr(args, key) is not None}
    if args.name is not None:
        given = [f"--{key.replace('_', '-')}" for key in LABELS_ONLY if getattr(args, key) is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: only with --labels; a prepared dataset has its class table "
                f"and ignore index {IGNORE_INDEX}"
            )
        job = StatsJob.for_dataset(require_params(args), args.name)
        overrides |= {"out": args.out} if args.out is not None else {}
    else:
        if args.num_classes is None or args.out is None:
            raise ConfigError("--labels needs --num-classes K and --out DIR")
        params = args.resolved_params
        defaults = (
            params.stats.model_dump()
            if params is not None
            else {
                "normalisation": "printed",
                "top_k": 5,
                "workers": default_workers(),
            }
        )
        job = StatsJob(
            labels=args.labels,
            out=args.out,
            num_classes=args.num_classes,
            classes=args.classes,
            ignore_index=IGNORE_INDEX if args.ignore_index is None else args.ignore_index,
            normalisation=defaults["normalisation"],
            top_k=defaults["top_k"],
            workers=defaults["workers"],
            dataset=str(args.labels),
        )
    job = replace(job, **overrides)
    result = build_stats(job, what="--out" if args.out is not None else "statistics folder")
    counts = result.counts
    print(
        f"{job.out}: {counts.images} images, {len(result.names)} classes, normalisation {job.normalisation}, "
        f"{len(result.files)} files (inputs sha256 {counts.sha256[:12]})"
    )
    return 0
