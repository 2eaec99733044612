"""Tables 1-6 of the paper beside this project's measured numbers, with their difference and provenance.

The paper's numbers are facts from ``reports/paper_tables.yaml`` (labelled
"paper"); the measured numbers are means over the finished seeds of grid cells
(``pipeline.report.runs``), in percent, with their spread. Which grid cell
reproduces which printed row is explicit data below (``TABLE1_CELLS`` ...),
matched against the paper's column values; a measured row no paper row matches
is shown after the paper's rows ("no paper row"), and a paper row no cell
reproduces says "not run" and why. A measured cell without a number says why
(not run, running, failed with a link to its log), never a made-up value. Each
measured number carries a footnote with its provenance: grid, cell, profile,
dataset, backbone, head, seeds (and the value of each), run folders, commits.

``build_tables`` returns neutral ``Table`` objects; ``to_markdown`` and the
``table.html.j2`` template render them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets import embedded
from pipeline.paper import PaperTable
from pipeline.report import layout
from pipeline.report.runs import NOT_RUN, CellRuns, Grid, Measure, Run
from pipeline.rundir import CONFUSION_FILE
from pipeline.scores.bootstrap import Interval, compare_runs

# Table 1 (grid "table1"): cell -> the printed Backbone / GRAr / SR-Loss it reproduces. Each cell fills two
# rows: its single-scale mIoU (MS unticked) and its multi-scale + flip mIoU ("ms" scores, MS ticked).
TABLE1_CELLS: dict[str, dict[str, Any]] = {
    "fcn": {"backbone": "ResNet-50", "grar": False, "sr_loss": False},  # embedded profile (tiny_resnet)
    "grar": {"backbone": "ResNet-50", "grar": True, "sr_loss": False},
    "grar-sr": {"backbone": "ResNet-50", "grar": True, "sr_loss": True},
    "r50-fcn": {"backbone": "ResNet-50", "grar": False, "sr_loss": False},  # paper profile
    "r50-grar": {"backbone": "ResNet-50", "grar": True, "sr_loss": False},
    "r50-grar-sr": {"backbone": "ResNet-50", "grar": True, "sr_loss": True},
    "r101-grar-sr": {"backbone": "ResNet-101", "grar": True, "sr_loss": True},
    "resnest101-grar-sr": {"backbone": "ResNest-101", "grar": True, "sr_loss": True},
}

# Table 2 (grid "table2", both profiles): cell -> Pos / Neg / Affinity Method. The last two cells are rows
# beyond the paper: Eq. 1 read as the conditional P(j | i), or normalised over the supporter's row i,
# instead of as printed (no printed row matches).
TABLE2_CELLS: dict[str, dict[str, Any]] = {
    "fcn": {"backbone": "ResNet-50", "pos": False, "neg": False, "affinity": "N.A."},
    "pos-conv": {"backbone": "ResNet-50", "pos": True, "neg": False, "affinity": "Conv"},
    "neg-conv": {"backbone": "ResNet-50", "pos": False, "neg": True, "affinity": "Conv"},
    "posneg-conv": {"backbone": "ResNet-50", "pos": True, "neg": True, "affinity": "Conv"},
    "pos-graph": {"backbone": "ResNet-50", "pos": True, "neg": False, "affinity": "Graph"},
    "neg-graph": {"backbone": "ResNet-50", "pos": False, "neg": True, "affinity": "Graph"},
    "posneg-graph": {"backbone": "ResNet-50", "pos": True, "neg": True, "affinity": "Graph"},
    "posneg-graph-conditional": {
        "backbone": "ResNet-50",
        "pos": True,
        "neg": True,
        "affinity": "Graph, Eq. 1 conditional P(j|i)",
    },
    "posneg-graph-row": {"backbone": "ResNet-50", "pos": True, "neg": True, "affinity": "Graph, Eq. 1 over row i"},
}
EQ1_PRINTED, EQ1_CONDITIONAL, EQ1_ROW = "posneg-graph", "posneg-graph-conditional", "posneg-graph-row"

# Table 3 (grid "table3", both profiles): cell -> the head it trains, which names its module-benchmark entry
# and (through pipeline.bench.modules.TABLE3_METHODS) its printed row; the FCN baseline has no printed row.
TABLE3_CELLS: dict[str, str] = {
    "fcn": "fcn",
    "ppm": "ppm",
    "aspp": "aspp",
    "danet": "danet",
    "danet-reference": "danet",
    "ocr": "ocr",
    "grar": "grar",
}

# Tables 4-6: the paper's own rows ("Ours", by printed backbone) -> the grid cell that reproduces them, on the
# table's dataset, multi-scale + flip (the paper's 55.7 / 57.0 equal Table 1's MS rows): the cell of grid
# "table4" / "table5" / "table6" (the paper profile's; table4's cells are Table 1's runs), else a cell of that
# name in another grid that finished on the dataset. Every other printed row is another method's published
# result, quoted as a fact.
OURS_CELLS: dict[str, str] = {"ResNet101": "r101-grar-sr", "ResNest101": "resnest101-grar-sr"}
OURS_SCORE = "ms"
# The other finished cells on a table's dataset of the table's own grid and of this grid follow the printed rows.
MAIN_GRID = "table1"

SCORE_NAMES = {"miou": "single-scale mIoU", "ms": "multi-scale + flip mIoU"}
DATASET_NAMES = {
    "embedded": "the embedded synthetic dataset",
    "pascal_context": "PASCAL-Context",
    "ade20k": "ADE20K",
    "coco_stuff": "COCO-Stuff",
}
SYNTHETIC = (
    "Measured numbers come from the embedded profile: synthetic scenes generated by this project, a tiny "
    "backbone (tiny_resnet) and a schedule of a few hundred iterations. They are synthetic-data results that "
    "check the pipeline and the method's mechanics; they are not comparable with the paper's numbers, and the "
    "difference column only shows the gap."
)


@dataclass(frozen=True)
class Cell:
    """One table cell: text, an optional link (relative to the report root) and a kind (the HTML class)."""

    text: str
    href: str | None = None
    kind: str = ""  # paper | measured | diff | missing (not run) | failed | absent (no paper row)
    note: str | None = None  # provenance footnote marker of a measured number


VERDICTS = ("agrees", "disagrees", "unresolved", "beyond the paper", "no interval")


@dataclass(frozen=True)
class Ordering:
    """One comparison a table makes: measured A − B (mean over seeds, 95 % paired-bootstrap interval) beside
    the paper's A − B, and a verdict: ``agrees`` / ``disagrees`` (the interval excludes 0, with the paper's
    sign / the other one), ``unresolved`` (it contains 0), ``beyond the paper`` (resolved, no printed
    counterpart), ``no interval`` (why: ``measured`` is the reason)."""

    label: str
    measured: Interval | str
    paper: float | None

    @property
    def interval(self) -> Interval | None:
        return self.measured if isinstance(self.measured, Interval) else None

    @property
    def verdict(self) -> str:
        interval = self.interval
        if interval is None:
            return "no interval"
        if interval.within_noise:
            return "unresolved"
        if self.paper is None:
            return "beyond the paper"
        return "agrees" if (interval.diff > 0) == (self.paper > 0) and self.paper != 0 else "disagrees"

    def measured_text(self) -> str:
        return self.interval.text().replace(", within noise", "") if self.interval else self.measured

    def paper_text(self) -> str:
        return "— (not in the paper)" if self.paper is None else f"{self.paper:+.1f}"


@dataclass
class Table:
    """A rendered table: header, rows of cells, findings in words and provenance footnotes."""

    number: int
    title: str
    caption: str
    source: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]] = field(default_factory=list)
    notes: tuple[str, ...] = ()  # the paper's notes on the table (reports/paper_tables.yaml)
    findings: list[str] = field(default_factory=list)  # statements computed from the numbers
    provenance: list[tuple[str, str]] = field(default_factory=list)  # (marker, text)
    synthetic: bool = False
    preamble: list[str] = field(default_factory=list)  # what the measured columns are
    orderings: list[Ordering] = field(default_factory=list)  # the comparisons the table makes, each with a verdict

    @property
    def resolution(self) -> str | None:
        """The smallest difference this table's intervals resolve, in words (``None`` without an interval).

        An interval excludes 0, and so resolves a difference, when the difference is larger than the
        interval's half-width: the half-widths are the table's power.
        """
        widths = sorted((o.measured.high - o.measured.low) / 2 for o in self.orderings if o.interval is not None)
        if not widths:
            return None
        seeds = sorted({len(o.measured.seeds) for o in self.orderings if o.interval is not None})
        return (
            f"Resolution: a difference resolves (its 95 % interval excludes 0) when it is larger than its "
            f"interval's half-width: here from ±{widths[0]:.1f} to ±{widths[-1]:.1f} mIoU points (median "
            f"±{statistics.median(widths):.1f}) over {len(widths)} comparisons, "
            f"{' or '.join(map(str, seeds))} seeds each; smaller differences cannot be told from noise."
        )

    def verdicts(self) -> dict[str, int]:
        """How many orderings agree with the paper's, disagree, are unresolved, or have no counterpart/interval."""
        counts = dict.fromkeys(VERDICTS, 0)
        for ordering in self.orderings:
            counts[ordering.verdict] += 1
        return counts

    def footnote(self, text: str) -> str:
        """The marker of provenance ``text`` (``m1``, ``m2``, ... ; an identical text reuses its marker)."""
        for marker, known in self.provenance:
            if known == text:
                return marker
        marker = f"m{len(self.provenance) + 1}"
        self.provenance.append((marker, text))
        return marker


@dataclass(frozen=True)
class Inputs:
    """What the tables are made of: the paper's tables, the loaded grids, the module benchmark (or None)."""

    paper: Mapping[int, PaperTable]
    grids: Mapping[str, Grid]
    bench: dict | None
    bench_path: Path
    profile: str
    train_dataset: str
    replicates: int = 1000  # grid.bootstrap: replicates of every difference's interval (pipeline.scores.bootstrap)


def build_tables(inputs: Inputs) -> list[Table]:
    """Tables 1-6, in order."""
    return [table1(inputs), table2(inputs), table3(inputs)] + [others(inputs, n) for n in (4, 5, 6)]


# ----------------------------------------------------------------------------------------------- helpers


def check(value: bool) -> str:
    """A boolean column as printed: a check mark or an empty cell."""
    return "✓" if value else ""


def number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def difference(grid: Grid | None, a: str, b: str, score: str, replicates: int) -> Interval | str:
    """Cell ``a`` − cell ``b`` of ``grid`` (``score``: ``miou`` | ``ms``) with its 95 % paired-bootstrap
    interval over val images and seeds (``pipeline.scores.bootstrap``), or why there is none."""
    cells = [grid.cell(name) if grid is not None else None for name in (a, b)]
    if any(c is None for c in cells):
        return "no interval: cell not in the grid"
    runs = [{run.seed: run.run_dir for run in c.finished} for c in cells]
    return compare_runs(runs[0], runs[1], score, replicates)


def difference_text(result: Interval | str, fallback: float | None = None) -> str:
    """``+2.31 [95 % CI −0.52, +5.10], within noise``, or ``fallback`` with why there is no interval."""
    if isinstance(result, Interval):
        return result.text()
    return (f"{fallback:+.2f} " if fallback is not None else "") + f"({result})"


def ordering(
    label: str, grid: Grid | None, a: str | None, b: str | None, score: str, paper: float | None, replicates: int
) -> Ordering:
    """The ordering ``a`` − ``b`` of ``grid`` (cell names; ``None``: the grid has no such cell)."""
    if a is None or b is None:
        return Ordering(label, "no interval: cell not in the grid", paper)
    return Ordering(label, difference(grid, a, b, score, replicates), paper)


def cell_named(grid: Grid | None, mapping: Mapping[str, dict[str, Any]], match: dict[str, Any]) -> str | None:
    """The first cell of ``grid`` whose ``mapping`` entry has the values of ``match`` (the profile's name for a
    printed row: ``grar`` in the embedded profile, ``r50-grar`` in the paper's)."""
    for cells in grid.cells if grid is not None else ():
        if cells.cell in mapping and _matches(mapping[cells.cell], match):
            return cells.cell
    return None


def provenance_text(measure: Measure, score: str) -> str:
    """Where a measured number comes from, in one line."""
    runs = measure.runs

    def values(key: str) -> str:
        found = sorted({str(run.provenance.get(key, "unknown")) for run in runs})
        return ", ".join(found)

    per_seed = ", ".join(f"seed {run.seed}: {value:.2f}" for run, value in zip(runs, measure.values))
    return (
        f"grid {runs[0].grid}, cell {runs[0].cell}, {SCORE_NAMES[score]}: profile {values('profile')}; "
        f"dataset {values('dataset')}; backbone {values('backbone')}; head {values('head')}; "
        f"seeds {', '.join(str(run.seed) for run in runs)} ({per_seed}); "
        f"run folders {', '.join(str(run.run_dir) for run in runs)}; commit {values('commit')}"
    )


def backbones(runs: Iterable[Run]) -> str:
    return ", ".join(sorted({str(run.provenance.get("backbone", "unknown")) for run in runs}))


def measured(
    table: Table,
    cells: CellRuns | None,
    score: str,
    paper: float | None,
    missing: str = NOT_RUN,
    dataset: str | None = None,
) -> tuple[Cell, Cell, Cell]:
    """(measured value, difference to ``paper``, run) cells of one grid cell's ``score``.

    ``cells`` is ``None`` when no cell of the grid reproduces the row (``missing`` says so);
    ``dataset`` keeps only the runs on that dataset.
    """
    if cells is None:
        return Cell(missing, kind="missing"), Cell("—"), Cell("—")
    measure = cells.measure(score, dataset)
    label = f"{cells.grid}/{cells.cell}"
    failed = [run for run in cells.runs if run.state == "failed"]
    if measure is None:
        text, run = cells.status(score)
        if dataset is not None and run is None and text != "running" and not cells.measure("miou", dataset):
            text = missing  # the caller's reason names the dataset
        return Cell(text, layout.failure_href(run), "failed" if run else "missing"), Cell("—"), Cell(label)
    marker = table.footnote(provenance_text(measure, score))
    diff = Cell(f"{measure.mean - paper:+.2f}", kind="diff") if paper is not None else Cell("—")
    run_text = f"{label} · {backbones(measure.runs)}"
    run_cell = Cell(run_text)
    if failed:
        run_cell = Cell(
            f"{run_text} · {len(failed)} of {len(cells.runs)} seeds failed", layout.failure_href(failed[0]), "failed"
        )
    return Cell(measure.text(), kind="measured", note=marker), diff, run_cell


def paper_cell(value: float | None, digits: int = 1) -> Cell:
    """A number of the paper as printed (``digits`` decimals), or a note that the paper has no such row."""
    return Cell(number(value, digits), kind="paper") if value is not None else Cell("— (no paper row)", kind="absent")


def compare_rows(
    table: Table,
    paper: PaperTable,
    grid: Grid | None,
    mapping: Mapping[str, dict[str, Any]],
    describe: Callable[[dict[str, Any]], tuple[Cell, ...]],
    pairs: Callable[[str], Iterable[tuple[dict, str]]],
    profile: str,
) -> None:
    """The paper's rows in order, each with the grid cells that reproduce it, then the measured rows no paper
    row matches. ``pairs(cell)`` gives the (paper column values, score) pairs a mapped cell fills."""
    rows_of: dict[int, list[tuple[CellRuns, str]]] = {}
    extra: list[tuple[dict, CellRuns, str]] = []
    for cells in grid.cells if grid is not None else ():
        for match, score in pairs(cells.cell) if cells.cell in mapping else [({}, "miou")]:
            index = next((i for i, row in enumerate(paper.rows) if match and _matches(row, match)), None)
            if index is None:
                extra.append((match, cells, score))
            else:
                rows_of.setdefault(index, []).append((cells, score))
    name = f"table{paper.number}"
    why = (
        f"{NOT_RUN} (no cell of grid {name} reproduces this row in profile {profile})"
        if grid is not None
        else f"{NOT_RUN} (no grid {name} in params)"
    )
    for index, row in enumerate(paper.rows):
        for cells, score in rows_of.get(index) or [(None, "miou")]:
            table.rows.append(
                describe(row) + (paper_cell(row["miou"]),) + measured(table, cells, score, row["miou"], why)
            )
    blank = len(table.columns) - len(METRIC_COLUMNS) - 1
    for match, cells, score in extra:
        description = describe(match) if match else (Cell(cells.cell),) + (Cell("?"),) * blank
        table.rows.append(description + (paper_cell(None),) + measured(table, cells, score, None))


def _matches(row: dict[str, Any], match: dict[str, Any]) -> bool:
    return all(row.get(key) == value for key, value in match.items())


def header(table: PaperTable, number: int, inputs: Inputs, columns: tuple[str, ...]) -> Table:
    synthetic = inputs.profile == "embedded" or any(
        run.provenance.get("dataset") == "embedded"
        for grid in inputs.grids.values()
        for run in grid.runs
        if run.finished
    )
    return Table(
        number=number,
        title=f"Table {number}",
        caption=table.caption,
        source=table.source,
        columns=columns,
        notes=table.notes,
        synthetic=synthetic,
        preamble=[
            f"Measured columns: this project's runs in profile {inputs.profile}, mean ± sample standard "
            "deviation over the finished seeds (n seeds), in percent; Δ = measured − paper."
        ],
    )


METRIC_COLUMNS = ("paper mIoU %", "measured mIoU %", "Δ", "run (grid/cell · backbone)")


# ------------------------------------------------------------------------------------------------ tables


def table1(inputs: Inputs) -> Table:
    """Table 1: backbone x GRAr x SR-Loss x MS -> mIoU (grid ``table1``; MS from each run's ``ms`` scores)."""
    paper = inputs.paper[1]
    table = header(paper, 1, inputs, ("Backbone", "GRAr", "SR-Loss", "MS") + METRIC_COLUMNS)

    def describe(values: dict[str, Any]) -> tuple[Cell, ...]:
        return (
            Cell(values["backbone"]),
            Cell(check(values["grar"])),
            Cell(check(values["sr_loss"])),
            Cell(check(values["ms"])),
        )

    def pairs(cell: str) -> list[tuple[dict, str]]:
        return [(TABLE1_CELLS[cell] | {"ms": False}, "miou"), (TABLE1_CELLS[cell] | {"ms": True}, "ms")]

    grid = inputs.grids.get("table1")
    compare_rows(table, paper, grid, TABLE1_CELLS, describe, pairs, inputs.profile)
    table.findings = context_findings(grid, inputs.replicates)
    r50 = {"backbone": "ResNet-50"}
    fcn, grar, grar_sr = (
        cell_named(grid, TABLE1_CELLS, r50 | {"grar": g, "sr_loss": s})
        for g, s in ((False, False), (True, False), (True, True))
    )

    def printed(grar_on: bool, sr_on: bool) -> float | None:
        rows = [row for row in paper.rows if _matches(row, r50 | {"grar": grar_on, "sr_loss": sr_on, "ms": False})]
        return rows[0]["miou"] if len(rows) == 1 else None

    def paper_diff(a: tuple[bool, bool], b: tuple[bool, bool]) -> float | None:
        x, y = printed(*a), printed(*b)
        return None if x is None or y is None else round(x - y, 1)

    table.orderings = [
        ordering(
            "GRAr − FCN, single scale",
            grid,
            grar,
            fcn,
            "miou",
            paper_diff((True, False), (False, False)),
            inputs.replicates,
        ),
        ordering("GRAr − FCN, multi-scale + flip", grid, grar, fcn, "ms", None, inputs.replicates),
        ordering(
            "SR-Loss: GRAr + SR-Loss − GRAr, single scale",
            grid,
            grar_sr,
            grar,
            "miou",
            paper_diff((True, True), (True, False)),
            inputs.replicates,
        ),
        ordering(
            "GRAr + SR-Loss − FCN, single scale",
            grid,
            grar_sr,
            fcn,
            "miou",
            paper_diff((True, True), (False, False)),
            inputs.replicates,
        ),
    ]
    return table


def embedded_confusion(run: Run) -> np.ndarray | None:
    """A finished embedded run's (24, 24) single-scale confusion matrix; ``None`` for other runs or without one."""
    path = run.run_dir / CONFUSION_FILE if run.run_dir is not None else None
    if run.provenance.get("dataset") != "embedded" or path is None or not path.is_file():
        return None
    matrix = np.load(path)
    return matrix if matrix.shape == (len(embedded.CLASSES),) * 2 else None


def context_findings(grid: Grid | None, replicates: int = 1000) -> list[str]:
    """Embedded runs of Table 1: GRAr's lead over the FCN (with its 95 % interval) and how much context each
    cell used.

    Twin confusion (``pipeline.datasets.embedded.twin_confusion``) is the share
    of twin-class pixels labelled as the same-looking class of another scene:
    an error only context can fix. The local-only ceiling is the best mIoU
    without context, from the val split's class pixels (the confusion rows).
    """
    if grid is None:
        return []
    shares: dict[str, float] = {}
    ceiling = None
    for cells in grid.cells:
        matrices = [m for m in (embedded_confusion(run) for run in cells.finished) if m is not None]
        if matrices:
            shares[cells.cell] = statistics.fmean(100 * embedded.twin_confusion(m) for m in matrices)
            if ceiling is None:
                ceiling = 100 * embedded.local_only_ceiling(matrices[0].sum(axis=1))["miou"]
    if not shares:
        return []
    findings = []
    fcn, grar = grid.cell("fcn"), grid.cell("grar")
    measures = [c.measure(score) if c is not None else None for c in (fcn, grar) for score in ("miou", "ms")]
    if all(m is not None for m in measures):
        fcn_ss, fcn_ms, grar_ss, grar_ms = measures
        single = difference(grid, "grar", "fcn", "miou", replicates)
        multi = difference(grid, "grar", "fcn", "ms", replicates)
        findings.append(
            f"GRAr − FCN on the embedded dataset (measured, mean over seeds; 95 % paired bootstrap "
            f"over val images and seeds): {difference_text(single, grar_ss.mean - fcn_ss.mean)} mIoU "
            f"single scale, {difference_text(multi, grar_ms.mean - fcn_ms.mean)} multi-scale + flip."
        )
    used = ", ".join(f"{cell} {share:.1f} %" for cell, share in shares.items())
    findings.append(
        f"Context error (twin confusion: the share of twin-class pixels labelled as the same-looking "
        f"class of another scene; 0 when context is fully used), mean over seeds: {used}. Without "
        f"context no model can pass {ceiling:.1f} mIoU on this val split (the local-only ceiling)."
    )
    return findings


def table2(inputs: Inputs) -> Table:
    """Table 2: positive / negative x Graph / Conv -> mIoU (grid ``table2``); Eq. 1 printed vs conditional vs row."""
    paper = inputs.paper[2]
    table = header(paper, 2, inputs, ("Backbone", "Pos", "Neg", "Affinity Method") + METRIC_COLUMNS)

    def describe(values: dict[str, Any]) -> tuple[Cell, ...]:
        return (
            Cell(values["backbone"]),
            Cell(check(values["pos"])),
            Cell(check(values["neg"])),
            Cell(values["affinity"]),
        )

    grid = inputs.grids.get("table2")
    compare_rows(
        table, paper, grid, TABLE2_CELLS, describe, lambda cell: [(TABLE2_CELLS[cell], "miou")], inputs.profile
    )
    table.findings = table2_findings(grid, paper, inputs.replicates)
    comparisons = [
        ("Graph − Conv, positive only", "pos-graph", "pos-conv"),
        ("Graph − Conv, negative only", "neg-graph", "neg-conv"),
        ("Graph − Conv, positive + negative", "posneg-graph", "posneg-conv"),
        ("positive − negative only, Graph", "pos-graph", "neg-graph"),
        ("positive − negative only, Conv", "pos-conv", "neg-conv"),
        ("positive + negative − positive only, Graph", "posneg-graph", "pos-graph"),
        ("positive + negative − positive only, Conv", "posneg-conv", "pos-conv"),
        ("Eq. 1 conditional P(j|i) − as printed", EQ1_CONDITIONAL, EQ1_PRINTED),
        ("Eq. 1 over row i − as printed", EQ1_ROW, EQ1_PRINTED),
    ]

    def paper_diff(a: str, b: str) -> float | None:
        x, y = _paper_mean(paper, a), _paper_mean(paper, b)
        return None if x is None or y is None or a in (EQ1_CONDITIONAL, EQ1_ROW) else round(x - y, 1)

    present = {cells.cell for cells in grid.cells} if grid is not None else set()
    table.orderings = [
        ordering(
            label,
            grid,
            a if a in present else None,
            b if b in present else None,
            "miou",
            paper_diff(a, b),
            inputs.replicates,
        )
        for label, a, b in comparisons
    ]
    return table


def _mean(grid: Grid | None, cell: str) -> float | None:
    cells = grid.cell(cell) if grid is not None else None
    measure = cells.measure() if cells is not None else None
    return measure.mean if measure is not None else None


def _paper_mean(paper: PaperTable, cell: str) -> float | None:
    match = TABLE2_CELLS[cell]
    rows = [row for row in paper.rows if _matches(row, match)]
    return rows[0]["miou"] if len(rows) == 1 else None


def _compare(
    label: str,
    pairs: list[tuple[str, str, str]],
    winner: str,
    loser: str,
    grid: Grid | None,
    paper: PaperTable,
    replicates: int = 1000,
) -> str:
    """``winner`` vs ``loser`` over ``pairs`` of (setting, winner cell, loser cell), measured (each difference
    with its 95 % interval; "within noise" when it contains 0) and in the paper."""
    measured_diffs = [(setting, _mean(grid, a), _mean(grid, b)) for setting, a, b in pairs]
    missing = sorted(
        {
            cell
            for (_, a, b), (_, x, y) in zip(pairs, measured_diffs)
            for cell, value in ((a, x), (b, y))
            if value is None
        }
    )
    paper_text = ", ".join(f"{setting} {_paper_mean(paper, a) - _paper_mean(paper, b):+.1f}" for setting, a, b in pairs)
    if missing:
        return (
            f"{label}: not stated, cell(s) {', '.join(missing)} of grid table2 have no finished run "
            f"(paper: {paper_text})."
        )
    diffs = [(setting, x - y) for setting, x, y in measured_diffs]
    ahead = sum(1 for _, d in diffs if round(d, 2) > 0)
    behind = sum(1 for _, d in diffs if round(d, 2) < 0)
    verdict = (
        f"{winner} ahead in all {len(diffs)}"
        if ahead == len(diffs)
        else f"{winner} behind in all {len(diffs)}"
        if behind == len(diffs)
        else f"{winner} ahead in {ahead}, behind in {behind}, tied in {len(diffs) - ahead - behind} of {len(diffs)}"
    )
    intervals = [difference(grid, a, b, "miou", replicates) for _, a, b in pairs]
    details = ", ".join(
        f"{setting} {interval.text() if isinstance(interval, Interval) else f'{d:+.2f}'}"
        for (setting, d), interval in zip(diffs, intervals)
    )
    noise = sum(1 for interval in intervals if isinstance(interval, Interval) and interval.within_noise)
    real = sum(1 for interval in intervals if isinstance(interval, Interval) and not interval.within_noise)
    strength = (
        f"; {noise} of {len(diffs)} within noise (95 % interval contains 0)"
        if noise
        else f"; all {real} intervals exclude 0"
        if real == len(diffs)
        else ""
    )
    reasons = [interval for interval in intervals if isinstance(interval, str)]
    if reasons:
        strength += f"; {reasons[0]}"
    return f"{label} (measured): {verdict} settings{strength} ({winner} − {loser}: {details}); paper: {paper_text}."


def table2_findings(grid: Grid | None, paper: PaperTable, replicates: int = 1000) -> list[str]:
    """The measured Table-2 ordering in words, whichever way it comes out, beside the paper's; every measured
    difference with its 95 % paired-bootstrap interval."""
    findings = [
        _compare(
            "Graph vs Conv",
            [
                ("positive only", "pos-graph", "pos-conv"),
                ("negative only", "neg-graph", "neg-conv"),
                ("positive + negative", "posneg-graph", "posneg-conv"),
            ],
            "Graph",
            "Conv",
            grid,
            paper,
            replicates,
        ),
        _compare(
            "Positive vs negative",
            [("with Graph edges", "pos-graph", "neg-graph"), ("with Conv edges", "pos-conv", "neg-conv")],
            "positive-only",
            "negative-only",
            grid,
            paper,
            replicates,
        ),
        _compare(
            "Bi-directional vs positive only",
            [("Graph", "posneg-graph", "pos-graph"), ("Conv", "posneg-conv", "pos-conv")],
            "positive + negative",
            "positive only",
            grid,
            paper,
            replicates,
        ),
    ]
    printed, conditional = _mean(grid, EQ1_PRINTED), _mean(grid, EQ1_CONDITIONAL)
    if printed is None or conditional is None:
        findings.append(
            f"Eq. 1 as printed vs conditional: not stated, cells {EQ1_PRINTED} and {EQ1_CONDITIONAL} "
            "need finished runs."
        )
    else:
        better = (
            "conditional"
            if round(conditional - printed, 2) > 0
            else "as printed"
            if round(conditional - printed, 2) < 0
            else "neither"
        )
        interval = difference(grid, EQ1_CONDITIONAL, EQ1_PRINTED, "miou", replicates)
        if isinstance(interval, Interval) and interval.within_noise:
            better = "neither beyond noise"
        findings.append(
            f"Eq. 1 as printed ({EQ1_PRINTED}) {printed:.2f} vs conditional P(j|i) ({EQ1_CONDITIONAL}) "
            f"{conditional:.2f}: conditional − printed = {difference_text(interval, conditional - printed)} "
            f"(better: {better}; beyond the paper, which prints one formula)."
        )
    row = _mean(grid, EQ1_ROW)
    if printed is None or row is None:
        findings.append(
            f"Eq. 1 as printed vs over row i: not stated, cells {EQ1_PRINTED} and {EQ1_ROW} need finished runs."
        )
    else:
        better = "row" if round(row - printed, 2) > 0 else "as printed" if round(row - printed, 2) < 0 else "neither"
        interval = difference(grid, EQ1_ROW, EQ1_PRINTED, "miou", replicates)
        if isinstance(interval, Interval) and interval.within_noise:
            better = "neither beyond noise"
        findings.append(
            f"Eq. 1 as printed ({EQ1_PRINTED}) {printed:.2f} vs normalised over row i ({EQ1_ROW}) "
            f"{row:.2f}: row − printed = {difference_text(interval, row - printed)} (better: {better}; "
            "beyond the paper; each dataset page states how spread the edges are under each "
            "normalisation)."
        )
    return findings


def table3(inputs: Inputs) -> Table:
    """Table 3: FCN + module -> parameters, memory, time (the module benchmark) and mIoU (grid ``table3``)."""
    from pipeline.bench.modules import TABLE3_METHODS

    paper = inputs.paper[3]
    table = header(
        paper,
        3,
        inputs,
        (
            "Method",
            "paper Parameters (M)",
            "measured Parameters (M)",
            "paper Memory (M)",
            "measured Memory (MB)",
            "paper Time (ms)",
            "measured Time (ms)",
            "measured GFLOPs (2 × MACs)",
        )
        + METRIC_COLUMNS,
    )
    bench = inputs.bench
    modules = {module["name"]: module for module in (bench or {}).get("modules", [])}
    if bench is not None:
        marker = table.footnote(
            f"module benchmark {inputs.bench_path}: device {bench['device']} ({bench['device_name']}, "
            f"{bench['threads']} threads, {bench['dtype']}{', compiled' if bench.get('compile') else ''}, "
            f"torch {bench['torch']}), input {'×'.join(map(str, bench['input']))}, head width {bench['head_width']}, "
            f"{bench['num_classes']} classes, median of {bench['repeats']} passes after {bench['warmup']} warm-up; "
            f"memory: {bench['memory_method']}; parameters: {bench['params_method']}; "
            f"FLOPs: {bench.get('flops_method', 'not measured')}; DANet: the {bench.get('danet', 'matched')} build "
            f"(model.danet). The paper measured on a GPU."
        )
        table.preamble.append(
            f"Parameters, memory, time and FLOPs: this project's module benchmark on "
            f"{bench['device']} in {bench['dtype']} [{marker}], beside the paper's GPU figures "
            f"(the paper gives no FLOPs). FLOPs count a multiply-add as 2: twice the figure fvcore and mmcv print "
            f"as FLOPs, which are multiply-adds (MACs)."
        )
    grid = inputs.grids.get("table3")
    cells = list(grid.cells) if grid is not None else []
    rows: list[tuple[dict[str, Any] | None, CellRuns | None, str]] = []
    for row in paper.rows:
        head = next((head for head, method in TABLE3_METHODS.items() if method == row["method"]), None)
        found = [c for c in cells if TABLE3_CELLS.get(c.cell) == head] if head is not None else []
        rows += [(row, c, head) for c in found] or [(row, None, head)]
    rows += [(None, c, TABLE3_CELLS.get(c.cell, "")) for c in cells if TABLE3_CELLS.get(c.cell) not in TABLE3_METHODS]
    for row, cells_of, head in rows:
        module = modules.get(head)
        if module is not None:
            bench_cells = (
                Cell(f"{module['params'] / 1e6:.2f}", kind="measured", note=marker),
                Cell(f"{module['peak_memory_bytes'] / 2**20:.1f}", kind="measured", note=marker),
                Cell(f"{module['latency_ms_median']:.1f}", kind="measured", note=marker),
                Cell(f"{module['flops'] / 1e9:.2f}", kind="measured", note=marker)
                if "flops" in module
                else Cell(f"{NOT_RUN} (benchmark without FLOPs)", kind="missing"),
            )
        else:
            why = f"{NOT_RUN} ({inputs.bench_path} missing)" if bench is None else f"{NOT_RUN} (not benchmarked)"
            bench_cells = (Cell(why, kind="missing"),) * 4
        name = (
            row["method"]
            if row is not None
            else (f"FCN (baseline, {cells_of.cell})" if head == "fcn" else cells_of.cell)
        )
        if head == "danet":  # which build (model.danet) the row's runs used; the benchmark's is in its footnote
            builds = sorted(
                {
                    str(run.provenance.get("danet"))
                    for run in (cells_of.finished if cells_of else ())
                    if run.provenance.get("danet")
                }
            )
            name += f" ({', '.join(builds)} build, {cells_of.cell})" if builds else ""
        miou = row["miou"] if row is not None else None
        why_missing = (
            f"{NOT_RUN} (no cell of grid table3 trains {head})"
            if grid is not None
            else f"{NOT_RUN} (no grid table3 in params)"
        )
        table.rows.append(
            (
                Cell(name),
                paper_cell(row["parameters"]) if row else paper_cell(None),
                bench_cells[0],
                paper_cell(row["memory"], 0) if row else paper_cell(None),
                bench_cells[1],
                paper_cell(row["time"], 0) if row else paper_cell(None),
                bench_cells[2],
                bench_cells[3],
                paper_cell(miou),
            )
            + measured(table, cells_of, "miou", miou, why_missing)
        )
    table.findings = table3_findings(grid, inputs.replicates)
    fcn_printed = next((row["miou"] for row in inputs.paper[1].rows if not row["grar"] and not row["sr_loss"]), None)
    printed = {
        head: row["miou"] for row in paper.rows for head, method in TABLE3_METHODS.items() if method == row["method"]
    }
    fcn = next((c.cell for c in cells if TABLE3_CELLS.get(c.cell) == "fcn"), None)
    table.orderings = [
        ordering(
            f"{c.cell} − FCN, single scale",
            grid,
            c.cell,
            fcn,
            "miou",
            None
            if fcn_printed is None or TABLE3_CELLS.get(c.cell) not in printed
            else round(printed[TABLE3_CELLS[c.cell]] - fcn_printed, 1),
            inputs.replicates,
        )
        for c in cells
        if TABLE3_CELLS.get(c.cell) != "fcn"
    ]
    return table


def table3_findings(grid: Grid | None, replicates: int = 1000) -> list[str]:
    """Each context module's lead over the FCN baseline (cell ``fcn``), with its 95 % paired-bootstrap interval,
    in the grid's order."""
    fcn = grid.cell("fcn") if grid is not None else None
    if fcn is None or fcn.measure() is None:
        return []
    findings = []
    for cells in grid.cells:
        measure = cells.measure()
        if cells.cell == "fcn" or measure is None:
            continue
        interval = difference(grid, cells.cell, "fcn", "miou", replicates)
        verdict = (
            "within noise"
            if isinstance(interval, Interval) and interval.within_noise
            else "ahead of the FCN"
            if isinstance(interval, Interval) and interval.low > 0
            else "behind the FCN"
            if isinstance(interval, Interval)
            else "no interval"
        )
        text = difference_text(interval, measure.mean - fcn.measure().mean).replace(", within noise", "")
        findings.append(f"{cells.cell} − FCN (measured single-scale mIoU, mean over seeds): {text}: {verdict}.")
    return findings


def others(inputs: Inputs, number: int) -> Table:
    """Tables 4-6: the paper's comparison on one dataset; this project's rows where runs on it finished.

    An Ours row (``OURS_CELLS``) comes from the cell of that name in the table's own grid
    (``table4`` ...) when it finished on the table's dataset, else from a cell of that name
    in another grid that did; without either it says why (the own grid's failed or running
    run, or that no grid trains it on that dataset).
    """
    paper = inputs.paper[number]
    dataset = paper.dataset
    table = header(paper, number, inputs, ("Method", "Backbone") + METRIC_COLUMNS)
    table.preamble.append(
        f"Rows other than Ours are published results of other methods, quoted from the paper as facts. This "
        f"project's rows come from finished runs on {DATASET_NAMES[dataset]} ({dataset}), "
        f"{SCORE_NAMES[OURS_SCORE]} for the Ours rows: grid table{number} first, then any other grid."
    )
    own = inputs.grids.get(f"table{number}")
    ordered = sorted(inputs.grids.values(), key=lambda grid: grid is not own)  # the table's own grid first
    on_dataset = [
        cells
        for grid in ordered
        for cells in grid.cells
        if cells.measure(OURS_SCORE, dataset) or cells.measure("miou", dataset)
    ]
    for row in paper.rows:
        method = f"{row['method']} [{row['ref']}]" if row["ref"] is not None else row["method"]
        description = (Cell(method), Cell(row["backbone"]), paper_cell(row["miou"]))
        if row["ref"] is not None:
            table.rows.append(description + (Cell("—"), Cell("—"), Cell("published result (paper)")))
            continue
        name = OURS_CELLS.get(row["backbone"])
        mine = own.cell(name) if own is not None and name is not None else None
        candidates = (
            [c for c in on_dataset if c.cell == name]
            or ([mine] if mine is not None else [])
            or [c for grid in ordered for c in grid.cells if c.cell == name]
        )
        table.rows.append(
            description
            + measured(
                table,
                candidates[0] if candidates else None,
                OURS_SCORE,
                row["miou"],
                ours_missing(inputs, number, name, mine),
                dataset,
            )
        )
    listed = set(OURS_CELLS.values())
    for grid in (own, inputs.grids.get(MAIN_GRID)):
        for cells in grid.cells if grid is not None else ():
            if cells.cell in listed or not any(cells is c for c in on_dataset):
                continue
            listed.add(cells.cell)
            score = OURS_SCORE if cells.measure(OURS_SCORE, dataset) else "miou"
            table.rows.append(
                (Cell(f"this project: {cells.cell}"), Cell(backbones(cells.finished)), paper_cell(None))
                + measured(table, cells, score, None, dataset=dataset)
            )
    if not on_dataset:
        table.findings.append(f"No finished run on {dataset} in this report: this project's rows are not run.")
    return table


def ours_missing(inputs: Inputs, number: int, name: str | None, mine: CellRuns | None) -> str:
    """Why an Ours row of Table ``number`` has no measured number (``mine``: its cell in the table's grid)."""
    dataset, grid = inputs.paper[number].dataset, f"table{number}"
    if mine is not None:
        return f"{NOT_RUN} (no finished run of {grid}/{name} on {dataset} yet)"
    if inputs.profile == "embedded":
        why = f"the embedded profile trains on its synthetic dataset only; profiles/paper.yaml's grid {grid} trains it"
    else:
        why = f"profile {inputs.profile} trains on {inputs.train_dataset} and has no grid {grid} with a cell {name}"
    return f"{NOT_RUN} (no finished {name} run on {dataset}; {why})"


# ---------------------------------------------------------------------------------------------- markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_cell(cell: Cell, page: str) -> str:
    text = _md(cell.text) + (f" [{cell.note}]" if cell.note else "")
    return f"[{text}]({layout.href_from(page, cell.href)})" if cell.href else text


def to_markdown(table: Table) -> str:
    """The table as a Markdown page (links relative to ``tables/``)."""
    page = layout.table_page(table.number, "md")
    lines = [f"# {table.title}: {table.caption}", ""]
    if table.synthetic:
        lines += [f"> **Synthetic-data results.** {SYNTHETIC}", ""]
    lines += [f'Columns labelled "paper": {table.source} (reports/paper_tables.yaml). ' + " ".join(table.preamble), ""]
    lines.append("| " + " | ".join(_md(column) for column in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(markdown_cell(cell, page) for cell in row) + " |" for row in table.rows]
    if table.orderings:
        lines += ["", "## Orderings: measured beside the paper", ""]
        if table.resolution:
            lines += [table.resolution, ""]
        lines += ["| comparison | measured, 95 % CI | paper | verdict |", "|---|---|---|---|"]
        lines += [
            f"| {_md(o.label)} | {_md(o.measured_text())} | {o.paper_text()} | {o.verdict} |" for o in table.orderings
        ]
    if table.findings:
        lines += ["", "## Findings", ""] + [f"- {finding}" for finding in table.findings]
    if table.provenance:
        lines += ["", "## Provenance of the measured numbers", ""]
        lines += [f"- [{marker}] {text}" for marker, text in table.provenance]
    if table.notes:
        lines += ["", "## Notes on the paper's table", ""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"
