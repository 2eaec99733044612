"""The report site under ``reports/``: Tables 1-6, dataset pages, grid pages and figures, written atomically.

``write_report(params)`` reads what exists (grid indexes and run folders under
``grid.runs``, statistics under ``stats.root``, the module benchmark
``bench.out``) and works with partial inputs: a grid never run, a failed cell, a
dataset without statistics each say so on their page. The whole site is built in
a temporary folder beside the outputs and then moved into place (each of
``layout.OUTPUTS`` replaced only once everything is built); other files under
``reports/`` (``paper_tables.yaml``) are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from tqdm import tqdm

from pipeline.cluster.plan import grid_plan, plan_rows, plan_summary
from pipeline.config import Params
from pipeline.datasets.layout import read_classes
from pipeline.errors import DataError
from pipeline.io import atomic_dir, atomic_path, check_new_output, clean_leftovers, temp_prefix
from pipeline.paper import load_paper_tables
from pipeline.paths import dataset_dir, stats_dir
from pipeline.report import layout, qualitative
from pipeline.report.edges import learned_vs_prior
from pipeline.report.explorer import embedded_json, explorer_data
from pipeline.report.figures import (
    confusion_figure,
    edges_figure,
    lambda_curves,
    qualitative_figure,
    training_curves,
)
from pipeline.report.runs import NOT_RUN, Grid, Run, load_grids, percent, read_json, unique_runs
from pipeline.report.tables import SYNTHETIC, Inputs, Table, build_tables, to_markdown
from pipeline.scores.grid_scores import read_log_frame
from pipeline.stats.affinity import DESCRIPTIONS, NORMALISATIONS, edge_spread, frequency
from pipeline.stats.files import CLASSES_PARQUET, COOCCURRENCE_PARQUET, SUPPORTERS_PARQUET, load_counts, read_metadata
from pipeline.stats.heatmaps import RC, save

TEMPLATES = Path(__file__).parent / "templates"
EXAMPLES = 4  # validation images in the qualitative figure
LOG_TAIL_BYTES = 256 * 1024  # a job log is copied from this far before its end


@dataclass(frozen=True)
class ReportSummary:
    """What ``write_report`` wrote: the index page and counts of table cells and pages."""

    index: Path
    measured: int
    not_run: int
    failed: int
    datasets: int
    grids: int
    figures: int
    notes: tuple[str, ...]  # what could not be produced, and why

    def text(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.index}: Tables 1-6 with {self.measured} measured cells, {self.not_run} not run, "
            f"{self.failed} failed; {self.datasets} dataset page(s), {self.grids} grid page(s), "
            f"{self.figures} figures drawn"
        ]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


class Site:
    """A site being built in folder ``root``: render pages, save figures, copy files (paths relative to root)."""

    def __init__(self, root: Path, synthetic: bool, sources: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.synthetic = synthetic
        self.sources = tuple(Path(source).resolve() for source in sources) or (Path.cwd().resolve(),)
        self.figures = 0
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def path(self, target: str) -> Path:
        path = self.root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def render(self, page: str, template: str, title: str, banner: bool = True, **context: Any) -> None:
        """Render ``template`` to ``page``; ``banner``: the synthetic-data banner when results are synthetic."""
        html = self.env.get_template(template).render(
            title=title,
            url=lambda target: layout.href_from(page, target),
            synthetic=self.synthetic and banner,
            synthetic_text=SYNTHETIC,
            **context,
        )
        self.path(page).write_text(html, encoding="utf-8")

    def write(self, target: str, text: str) -> None:
        self.path(target).write_text(text, encoding="utf-8")

    def figure(self, target: str, make: Callable[[], Any]) -> str:
        """Save the figure ``make()`` returns at ``target``; return ``target``."""
        import matplotlib

        with matplotlib.rc_context(RC):
            save(make(), self.path(target))
        self.figures += 1
        return target

    def copy(self, source: Path, target: str, tail: int | None = None) -> str | None:
        """Copy file ``source`` to ``target`` (only its last ``tail`` bytes when given); return ``target``.

        Only files inside the project's folders (``sources``: the working folder, run folders, SLURM logs,
        statistics) are copied, links resolved: a path from a grid index or a link pointing elsewhere
        (``/etc/...``) is never published; ``None`` then.
        """
        resolved = Path(source).resolve()
        if not any(resolved == root or root in resolved.parents for root in self.sources):
            return None
        if tail is None or source.stat().st_size <= tail:
            shutil.copyfile(source, self.path(target))
        else:
            with open(source, "rb") as handle:
                handle.seek(-tail, os.SEEK_END)
                data = handle.read()
            self.path(target).write_bytes(b"[... earlier lines cut: the last %d bytes follow]\n" % tail + data)
        return target


def write_report(params: Params, out: Path = layout.REPORTS, examples: int = EXAMPLES) -> ReportSummary:
    """Build the whole site from what exists and move it into ``out`` (see the module docstring)."""
    grids = load_grids(params)
    bench_path = Path(params.bench.out)
    bench = read_json(bench_path) if bench_path.is_file() else None
    tables = build_tables(
        Inputs(
            load_paper_tables(), grids, bench, bench_path, params.profile, params.train.dataset, params.grid.bootstrap
        )
    )
    synthetic = any(table.synthetic for table in tables)
    for name in layout.OUTPUTS:
        check_new_output(out / name, folder="." not in name, ours=is_report_output, what="report output")
    out.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out / "report")  # the build folders of killed report runs
    built = Path(tempfile.mkdtemp(prefix=temp_prefix(out / "report"), suffix=".tmp", dir=out))
    sources = (Path.cwd(), Path(params.grid.runs), Path(params.executor.log_dir), Path(params.stats.root))
    try:
        site = Site(built, synthetic, sources)
        notes: list[str] = []
        qualitative_pages = write_qualitative(site, params, grids, examples, notes)
        datasets = write_datasets(site, params, qualitative_pages)
        write_grids(site, params, grids)
        write_tables(site, tables)
        write_figures_index(site, datasets, grids, qualitative_pages)
        write_index(site, params, tables, datasets, grids)
        publish(built, out)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    counts = [table_counts(table) for table in tables]
    return ReportSummary(
        index=out / "index.html",
        measured=sum(c["measured"] for c in counts),
        not_run=sum(c["missing"] for c in counts),
        failed=sum(c["failed"] for c in counts),
        datasets=len(datasets),
        grids=len(grids),
        figures=site.figures,
        notes=tuple(notes),
    )


REPORT_MARKER = ".grar-report"  # in every generated report folder: what grar wrote, and may replace


def is_report_output(path: Path) -> bool:
    """Whether grar wrote ``path`` (a report folder with ``REPORT_MARKER``, or a page of grar's; older
    reports: a folder whose ``index.html`` is grar's)."""
    if path.is_dir():
        return (path / REPORT_MARKER).is_file() or is_report_output(path / "index.html")
    try:
        return path.is_file() and "grar" in path.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return False


def publish(built: Path, out: Path) -> None:
    """Move every output of ``built`` into ``out``; each replaces its old version only once all are ready."""
    with contextlib.ExitStack() as stack:
        for name in layout.OUTPUTS:
            source = built / name
            if source.is_dir():
                target = stack.enter_context(atomic_dir(out / name))
                (target / REPORT_MARKER).touch()
                for child in source.iterdir():
                    os.replace(child, target / child.name)
            else:
                os.replace(source, stack.enter_context(atomic_path(out / name)))


def table_counts(table: Table) -> dict[str, int]:
    kinds = [cell.kind for row in table.rows for cell in row]
    return {kind: kinds.count(kind) for kind in ("measured", "missing", "failed")}


# ------------------------------------------------------------------------------------------------- pages


def write_tables(site: Site, tables: list[Table]) -> None:
    for table in tables:
        site.write(layout.table_page(table.number, "md"), to_markdown(table))
        site.render(
            layout.table_page(table.number),
            "table.html.j2",
            table.title,
            table=table,
            markdown=layout.table_page(table.number, "md"),
        )
    links = [(f"{table.title}: {table.caption}", layout.table_page(table.number)) for table in tables]
    links += [(f"{table.title} (Markdown)", layout.table_page(table.number, "md")) for table in tables]
    site.render(
        layout.folder_index("tables"),
        "listing.html.j2",
        "Tables 1-6",
        intro=None,
        sections=[{"title": "Tables", "text": None, "links": links, "figures": [], "thumbs": False}],
    )


@dataclass(frozen=True)
class DatasetPage:
    name: str
    page: str
    summary: str


def stats_datasets(params: Params) -> list[str]:
    """Datasets with statistics: those of ``data.datasets``, then any other folder of ``stats.root``."""
    root = Path(params.stats.root)
    others = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    names = list(params.data.datasets) + [name for name in others if name not in params.data.datasets]
    return [name for name in names if (stats_dir(params, name) / CLASSES_PARQUET).is_file()]


def edge_spreads(t: np.ndarray) -> list[dict[str, Any]]:
    """Per normalisation of Eq. 1: its definition and ``edge_spread`` of its f (positive f, negative 1 - f)."""
    return [
        {"name": name, "definition": DESCRIPTIONS[name], **edge_spread(frequency(t, name))} for name in NORMALISATIONS
    ]


def write_datasets(site: Site, params: Params, qualitative_pages: dict[str, str]) -> list[DatasetPage]:
    pages = []
    for name in tqdm(stats_datasets(params), desc="report datasets", unit="dataset"):
        source = stats_dir(params, name)
        metadata = read_metadata(source / CLASSES_PARQUET)
        classes = pd.read_parquet(source / CLASSES_PARQUET)
        supporters = pd.read_parquet(source / SUPPORTERS_PARQUET)
        figures = {}
        for path in sorted(source.rglob("*")):
            if path.suffix in (".png", ".svg"):
                relative = path.relative_to(source).as_posix()
                copied = site.copy(path, layout.stats_figure(name, relative))
                if copied is not None:
                    figures[relative] = copied
        summary = (
            f"{metadata.get('images', '?')} {metadata.get('split', '')} images, {len(classes)} classes, "
            f"normalisation {metadata.get('normalisation', '?')}"
        )
        page = layout.dataset_page(name)
        spreads = edge_spreads(load_counts(source / COOCCURRENCE_PARQUET, len(classes)))
        explorer = layout.explorer_page(name)
        site.render(
            explorer,
            "explorer.html.j2",
            f"Affinity explorer: {name}",
            banner=False,
            back=layout.href_from(explorer, page),
            data_json=embedded_json(explorer_data(source, [str(n) for n in classes["name"]])),
        )
        site.render(
            page,
            "dataset.html.j2",
            f"Dataset {name}",
            banner=False,
            name=name,
            summary=summary,
            metadata=metadata,
            spreads=spreads,
            explorer=explorer,
            source=str(source),
            heatmap_png=figures.get("heatmap.png"),
            heatmap_svg=figures.get("heatmap.svg"),
            clusters=[t for key, t in figures.items() if key.startswith("clusters/")],
            bars=[t for key, t in figures.items() if key.startswith("bars/")],
            qualitative=qualitative_pages.get(name),
            supporters=supporters.to_dict("records"),
            classes=classes.to_dict("records"),
        )
        pages.append(DatasetPage(name, page, summary))
    site.render(
        layout.folder_index("datasets"),
        "listing.html.j2",
        "Datasets",
        intro=None if pages else f"No statistics found under {params.stats.root} (run grar stats NAME).",
        sections=[
            {
                "title": "Datasets with statistics",
                "text": None,
                "thumbs": False,
                "figures": [],
                "links": [(f"{p.name}: {p.summary}", p.page) for p in pages],
            }
        ],
    )
    return pages


def class_names(run: Run, params: Params, k: int | None = None) -> list[str]:
    """Names of a run's classes: its per-class IoU keys, else its dataset's class table, else the ids 0..k-1."""
    names = list((run.metrics or {}).get("per_class_iou") or {})
    if names and (k is None or len(names) == k):
        return names
    table = dataset_dir(params, str(run.provenance.get("dataset", ""))) / "classes.csv"
    if table.is_file():
        with contextlib.suppress(DataError):
            return read_classes(table, k)
    return [str(c) for c in range(k or 256)]


def load_confusion(path: Path) -> np.ndarray:
    """A K x K confusion matrix from ``path``; ``DataError`` naming it otherwise."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the confusion matrix ({err})") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"{path}: expected a K x K matrix, got shape {matrix.shape}")
    return matrix


def confusion_links(
    site: Site, params: Params, run: Run, done: dict[str, list[tuple[str, str]]]
) -> list[tuple[str, str]]:
    """The confusion figures of ``run`` (single scale, and multi-scale when present), drawn once per run folder."""
    if run.key in done:
        return done[run.key]
    links = []
    for suffix, label in (("", "confusion"), ("_ms", "confusion MS")):
        path = run.run_dir / f"confusion{suffix}.npy" if run.run_dir is not None else None
        if path is None or not path.is_file():
            continue
        matrix = load_confusion(path)
        names = class_names(run, params, len(matrix))
        title = (
            f"{run.grid}/{run.cell} seed {run.seed} ({run.key}): {label}, row-normalised; "
            f"{run.provenance.get('dataset', '?')}, {len(matrix)} classes"
        )
        links.append(
            (
                label,
                site.figure(
                    layout.confusion_figure(run, suffix), functools.partial(confusion_figure, matrix, names, title)
                ),
            )
        )
    done[run.key] = links
    return links


def run_links(site: Site, params: Params, run: Run, done: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    links = confusion_links(site, params, run, done) if run.finished else []
    if run.error is not None:
        links.append(("error.txt", site.copy(run.error, layout.run_file(run, "error.txt"))))
    if run.log is not None:
        links.append(("log", site.copy(run.log, layout.run_file(run, "log.txt"), tail=LOG_TAIL_BYTES)))
    return [(label, target) for label, target in links if target is not None]


def mean_text(cells_runs: tuple[Run, ...], value: Callable[[Run], float | None]) -> str:
    values = [100 * v for v in (value(run) for run in cells_runs) if v is not None]
    if not values:
        return "—"
    spread = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    return f"{np.mean(values):.2f}{spread} (n={len(values)})"


def write_grids(site: Site, params: Params, grids: dict[str, Grid]) -> None:

    done: dict[str, list[tuple[str, str]]] = {}
    for name, grid in tqdm(grids.items(), desc="report grids", unit="grid"):
        overrides = {
            cell: ", ".join(f"{k}={v}" for k, v in values.items()) for cell, values in params.grid.cells(name).items()
        }
        cells = []
        for cell in grid.cells:
            logs = {
                run.seed: read_log_frame(run.run_dir / "train_log.csv")
                for run in cell.runs
                if run.run_dir is not None and (run.run_dir / "train_log.csv").is_file()
            }
            curves = (
                site.figure(
                    layout.curves_figure(name, cell.cell),
                    functools.partial(training_curves, logs, f"{name}/{cell.cell}: training curves"),
                )
                if logs
                else None
            )
            lambdas = lambda_curves(logs, f"{name}/{cell.cell}: GRAr's λ and λ̂ over training") if logs else None
            runs = [
                {
                    "seed": run.seed,
                    "state": "done" if run.finished else run.state,
                    "miou": percent(run.score("miou")),
                    "ms": percent(run.score("ms")),
                    "pixel_accuracy": percent((run.metrics or {}).get("pixel_accuracy")),
                    "iterations": (run.metrics or {}).get("iterations", "—"),
                    "train_seconds": f"{run.metrics['train_seconds']:.0f}"
                    if run.metrics and run.metrics.get("train_seconds") is not None
                    else "—",
                    "run_dir": str(run.run_dir) if run.run_dir is not None else "—",
                    "job_id": run.job_id or "—",
                    "links": run_links(site, params, run, done),
                }
                for run in cell.runs
            ]
            cells.append(
                {
                    "name": cell.cell,
                    "anchor": f"cell-{cell.cell}",
                    "overrides": overrides.get(cell.cell, "(not in params)"),
                    "state": cell.state,
                    "failed": any(run.state == "failed" for run in cell.runs),
                    "miou": mean_text(cell.finished, lambda run: run.score("miou")),
                    "ms": mean_text(cell.finished, lambda run: run.score("ms")),
                    "pixel_accuracy": mean_text(cell.finished, lambda run: run.metrics.get("pixel_accuracy")),
                    "curves": curves,
                    "runs": runs,
                    "lambdas": site.figure(layout.lambda_figure(name, cell.cell), lambda figure=lambdas: figure)
                    if lambdas
                    else None,
                    "edges": edge_comparisons(site, params, cell.finished),
                }
            )
        plan = grid_plan(
            params,
            name,
            {
                (run.cell, run.seed): "pending" if run.state == NOT_RUN else ("done" if run.finished else run.state)
                for run in grid.runs
            },
        )
        site.render(
            layout.grid_page(name),
            "grid.html.j2",
            f"Grid {name}",
            summary=grid_summary(grid),
            index=str(grid.index),
            indexed=grid.indexed,
            cells=cells,
            plan_summary=plan_summary(plan),
            plan_rows=plan_rows(plan),
        )
    site.render(
        layout.folder_index("grids"),
        "listing.html.j2",
        "Grids",
        intro=None,
        sections=[
            {
                "title": "Grids",
                "text": f"Run folders under {params.grid.runs}; seeds {list(params.grid.seeds)}.",
                "thumbs": False,
                "figures": [],
                "links": [(f"{name}: {grid_summary(grid)}", layout.grid_page(name)) for name, grid in grids.items()],
            }
        ],
    )


def edge_comparisons(site: Site, params: Params, runs: tuple[Run, ...]) -> list[dict[str, Any]]:
    """For each finished run with learnt edges (``model.grar.edges: conv``): f beside e^p and e^n, and rho."""
    found = []
    for run in runs:
        config = run.run_dir / "config.yaml" if run.run_dir is not None else None
        if (
            config is None
            or not (run.run_dir / "checkpoint.pt").is_file()
            or "edges: conv" not in config.read_text(encoding="utf-8")
        ):
            continue
        cooccurrence = stats_dir(params, str(run.provenance.get("dataset", ""))) / COOCCURRENCE_PARQUET
        if not cooccurrence.is_file():
            continue
        k = len((run.metrics or {}).get("per_class_iou") or {}) or None
        edges = learned_vs_prior(run.run_dir, cooccurrence, class_names(run, params, k))
        if edges is None:
            continue
        rho = {
            key: "n/a" if np.isnan(value) else f"{value:+.3f}"  # n/a: a constant matrix has no ranks
            for key, value in (("positive", edges.rho_positive), ("negative", edges.rho_negative))
        }
        title = (
            f"{run.grid}/{run.cell} seed {run.seed}: f ({edges.normalisation}) beside the learnt edges, "
            f"clustered class order; Spearman off the diagonal: e^p vs f {rho['positive']}, "
            f"e^n vs 1 − f {rho['negative']}"
        )
        target = site.figure(
            layout.edges_figure(run),
            functools.partial(edges_figure, edges.prior, edges.positive, edges.negative, edges.names, title),
        )
        found.append(
            {
                "seed": run.seed,
                "figure": target,
                "rho_positive": rho["positive"],
                "rho_negative": rho["negative"],
                "normalisation": edges.normalisation,
            }
        )
    return found


def grid_summary(grid: Grid) -> str:
    runs = grid.runs
    finished = sum(run.finished for run in runs)
    failed = sum(run.state == "failed" for run in runs)
    return (
        f"{len(grid.cells)} cells, {len(runs)} runs: {finished} finished, {failed} failed, "
        f"{len(runs) - finished - failed} not finished."
    )


def write_qualitative(
    site: Site, params: Params, grids: dict[str, Grid], examples: int, notes: list[str]
) -> dict[str, str]:
    """The qualitative figure (dataset -> its target) and the page showing it, or why there is none."""
    figures: dict[str, str] = {}
    runs = qualitative.pick_runs(grids.get(qualitative.GRID))
    reason = None
    if examples <= 0:
        reason = "disabled (--examples 0)."
    elif runs is None:
        reason = (
            f"needs finished runs of grid {qualitative.GRID} for each of "
            + "; ".join(f"{heading} ({' or '.join(cells)})" for heading, cells in qualitative.MODELS.items())
            + " on one dataset."
        )
    else:
        dataset = str(next(iter(runs.values())).provenance.get("dataset"))
        try:
            loaded = qualitative.load_examples(dataset_dir(params, dataset), examples)
            predictions = {
                heading: qualitative.predict(run, [image for _, image, _ in loaded]) for heading, run in runs.items()
            }
        except (DataError, ImportError, FileNotFoundError) as err:
            reason = f"could not be drawn: {err}"
        else:
            names = class_names(runs["GRAr"], params)
            rows = [
                (stem, image, gt, {heading: predictions[heading][i] for heading in runs})
                for i, (stem, image, gt) in enumerate(loaded)
            ]
            title = f"{dataset} val: the first {len(rows)} images by name; " + "; ".join(
                f"{heading}: {run.grid}/{run.cell} seed {run.seed}" for heading, run in runs.items()
            )
            figures[dataset] = site.figure(
                layout.qualitative_figure(dataset), lambda: qualitative_figure(rows, names, title)
            )
    if reason is not None:
        notes.append(f"qualitative examples: {reason}")
    site.render(
        layout.QUALITATIVE_PAGE,
        "listing.html.j2",
        "Qualitative examples",
        intro="Image / ground truth / FCN baseline / GRAr, as in the paper's Figure 5"
        + (f": not produced, {reason}" if reason else "."),
        sections=[
            {
                "title": dataset,
                "text": None,
                "links": [],
                "figures": [(target, f"examples on {dataset}")],
                "thumbs": False,
            }
            for dataset, target in figures.items()
        ],
    )
    return figures


def write_figures_index(
    site: Site, datasets: list[DatasetPage], grids: dict[str, Grid], qualitative_pages: dict[str, str]
) -> None:
    """Every figure file of the site, grouped, with a link each."""
    sections = []
    for page in datasets:
        folder = site.root / "figures" / "stats" / page.name
        links = [
            (path.relative_to(folder).as_posix(), layout.stats_figure(page.name, path.relative_to(folder).as_posix()))
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        ]
        sections.append(
            {"title": f"Statistics of {page.name}", "text": None, "links": links, "figures": [], "thumbs": False}
        )
    sections.append(
        {
            "title": "Qualitative examples",
            "text": None,
            "figures": [],
            "thumbs": False,
            "links": [("qualitative examples page", layout.QUALITATIVE_PAGE)] + list(qualitative_pages.items()),
        }
    )
    for name, grid in grids.items():
        links = []
        for cell in grid.cells:
            if (site.root / layout.curves_figure(name, cell.cell)).is_file():
                links.append((f"{cell.cell}: training curves", layout.curves_figure(name, cell.cell)))
        for run in unique_runs(grid.runs):
            for suffix, label in (("", "confusion"), ("_ms", "confusion MS")):
                if (site.root / layout.confusion_figure(run, suffix)).is_file():
                    links.append((f"{run.cell} seed {run.seed}: {label}", layout.confusion_figure(run, suffix)))
        sections.append(
            {
                "title": f"Grid {name}",
                "text": None if links else "No figures yet (no finished runs).",
                "links": links,
                "figures": [],
                "thumbs": False,
            }
        )
    site.render(layout.folder_index("figures"), "listing.html.j2", "Figures", intro=None, sections=sections)


def write_index(
    site: Site, params: Params, tables: list[Table], datasets: list[DatasetPage], grids: dict[str, Grid]
) -> None:
    rows = [
        {
            "number": table.number,
            "title": table.title,
            "caption": table.caption,
            "page": layout.table_page(table.number),
            "markdown": layout.table_page(table.number, "md"),
            "counts": table_counts(table),
            "verdicts": table.verdicts() if table.orderings else None,
            "resolution": table.resolution,
        }
        for table in tables
    ]
    site.render(
        "index.html",
        "index.html.j2",
        "GRAr reproduction report",
        profile=params.profile,
        runs=params.grid.runs,
        stats_root=params.stats.root,
        bench=params.bench.out,
        tables=rows,
        findings=[(f"Table {t.number}", t.findings) for t in tables[:3] if t.findings],
        datasets=datasets,
        grids=[
            {"name": name, "page": layout.grid_page(name), "summary": grid_summary(grid)}
            for name, grid in grids.items()
        ],
        qualitative_page=layout.QUALITATIVE_PAGE,
        figures_page=layout.folder_index("figures"),
    )
