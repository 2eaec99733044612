"""`grar report`: the paper's Tables 1-6 beside this project's results, figures and a static site in reports/."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.main import require_params
from pipeline.errors import ConfigError

HELP = "write the report site: Tables 1-6 beside the paper, dataset and grid pages, figures (reports/)"
DESCRIPTION = """\
Read what the pipeline has produced so far and write a static site:

  reports/index.html          links to everything below
  reports/tables/             Tables 1-6 as HTML and Markdown: the paper's numbers
                              ("paper", from reports/paper_tables.yaml) beside the
                              measured mean ± std over seeds, their difference and
                              each number's provenance (run folders, commit)
  reports/datasets/           per dataset with statistics: heatmaps, class table,
                              a searchable supporter/opponent table
  reports/grids/              per grid: cells, states, scores per seed, training
                              curves, confusion matrices, logs of failed cells
  reports/figures/            every figure, and the qualitative examples (image /
                              ground truth / FCN / GRAr on the first val images)

Inputs (paths from params.yaml): grid.runs (grid indexes and run folders),
stats.root, bench.out. Missing inputs are reported, not fatal: a cell with no
finished run says "not run" or "failed" (with a link to its log). The outputs
are replaced all at once when the new site is complete; reports/paper_tables.yaml
is never touched. Open reports/index.html in a browser (no server needed).

examples:
  grar report
  grar report --examples 0 --out /tmp/site"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, metavar="DIR", default=None, help="report folder (default: reports)")
    parser.add_argument(
        "--examples",
        type=int,
        metavar="N",
        default=None,
        help="validation images in the qualitative figure (default: 4; 0 = none)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.report import layout
    from pipeline.report.site import EXAMPLES, write_report

    if args.examples is not None and args.examples < 0:
        raise ConfigError(f"--examples {args.examples}: must be >= 0")
    summary = write_report(
        require_params(args), args.out or layout.REPORTS, EXAMPLES if args.examples is None else args.examples
    )
    print(summary.text())
    return 0
