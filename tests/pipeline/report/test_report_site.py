"""The site: pages and links, partial inputs, failed-cell logs, atomic replacement, the command and the stage."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_runs import NAMES, REPO, bench_report, run_name, write_dataset

from pipeline.cli.main import main
from pipeline.config import with_overrides
from pipeline.errors import DataError
from pipeline.paths import dataset_dir, stats_dir
from pipeline.report import layout, site
from pipeline.report.site import write_report
from pipeline.stats.affinity import DESCRIPTIONS, edge_spread, frequency
from pipeline.stats.compute import StatsJob, build_stats
from pipeline.stats.files import load_counts


class Links(HTMLParser):
    """Every href and src of a page, and its element ids."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
            if name == "id":
                self.ids.add(value)


def page_links(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def check_site(out: Path) -> int:
    """Every link of every page is relative and reaches a file (and its #fragment); returns the pages checked."""
    pages = sorted(out.rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"(href|src)=\"(https?:|file:|/|[A-Za-z]:\\\\)", text), page
        parsed = page_links(page)
        for link in parsed.links:
            if link.startswith("data:"):
                continue
            path, _, fragment = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            assert target.is_file(), f"{page}: broken link {link}"
            assert out.resolve() in target.parents, f"{page}: {link} leaves the site"
            if fragment:
                assert fragment in page_links(target).ids, f"{page}: no #{fragment} in {target}"
    for markdown in out.rglob("*.md"):
        for link in re.findall(r"\]\(([^)]+)\)", markdown.read_text(encoding="utf-8")):
            assert not re.match(r"(https?:|/)", link) and (markdown.parent / link).is_file(), link
    return len(pages)


def full_project(params, runs):
    """Statistics of a small dataset, the module benchmark, and grids with finished, failed and pending runs."""
    params = with_overrides(params, {"stats.workers": 1})
    write_dataset(dataset_dir(params, "embedded"))
    build_stats(StatsJob.for_dataset(params, "embedded"))
    Path(params.bench.out).parent.mkdir(parents=True)
    Path(params.bench.out).write_text(json.dumps(bench_report()))
    for seed, (fcn, grar) in enumerate([(0.40, 0.60), (0.45, 0.64)]):
        runs.done("table1", "fcn", seed, fcn, ms=fcn + 0.01, head="fcn")
        runs.done("table1", "grar", seed, grar, ms=grar + 0.01)
    runs.failed("table1", "grar-sr", 0, error="Traceback (most recent call last):\nRuntimeError: out of memory\n")
    runs.state("table1", "grar-sr", 1, "running")
    runs.done("table3", "fcn", 0, 0.40, head="fcn")  # the same folder as table1's fcn seed 0
    return params


def test_full_site_links_pages_and_figures(params, runs, tmp_path):
    params = full_project(params, runs)
    summary = write_report(params, tmp_path / "reports", examples=0)
    out = tmp_path / "reports"
    assert sorted(p.name for p in out.iterdir()) == sorted(layout.OUTPUTS)
    assert check_site(out) == 6 + 1 + 1 + 1 + 3 + 5  # tables, dataset, its explorer, qualitative, grids, index pages
    for number in range(1, 7):
        assert (out / f"tables/table{number}.md").is_file() and (out / f"tables/table{number}.html").is_file()
    index = (out / "index.html").read_text()
    for target in [
        "tables/table1.html",
        "tables/table6.md",
        "datasets/embedded.html",
        "grids/table2.html",
        "figures/qualitative.html",
        "figures/index.html",
    ]:
        assert f'href="{target}"' in index
    assert "Synthetic-data results." in index
    # figures: copied statistics, curves per cell, one confusion matrix per run folder (+ MS)
    assert (out / "figures/stats/embedded/heatmap.svg").read_bytes() == (
        stats_dir(params, "embedded") / "heatmap.svg"
    ).read_bytes()
    assert (out / "figures/curves/table1/fcn.png").is_file() and (out / "figures/curves/table3/fcn.png").is_file()
    confusion = sorted(p.name for p in (out / "figures/confusion").iterdir())
    assert confusion == sorted(
        f"{run_name(cell, seed)}{suffix}.svg" for cell in ("fcn", "grar") for seed in (0, 1) for suffix in ("", "_ms")
    )
    svg = (out / "figures/confusion" / f"{run_name('fcn', 0)}.svg").read_text()
    assert all(f">{name}<" in svg for name in NAMES)  # class names as searchable text
    # the failed cell: its error.txt and job log are copied and linked from the grid page and Table 1
    key = run_name("grar-sr", 0)
    assert (out / f"grids/logs/{key}/error.txt").read_text().endswith("RuntimeError: out of memory\n")
    assert (out / f"grids/logs/{key}/log.txt").read_text() == "job log line\n"
    grid = (out / "grids/table1.html").read_text()
    assert f'href="logs/{key}/error.txt"' in grid and "1/2 done" not in grid
    assert "0/2 done, 1 failed, 1 running" in grid and "42.50 ± 3.54 (n=2)" in grid
    assert f'href="../grids/logs/{key}/error.txt">failed</a>' in (out / "tables/table1.html").read_text()
    dataset = (out / "datasets/embedded.html").read_text()
    assert 'data-filter="supporters"' in dataset and dataset.count("<tr>") > len(NAMES) * 2
    t = load_counts(stats_dir(params, "embedded") / "cooccurrence.parquet", len(NAMES))
    for name in ("printed", "conditional", "row"):  # what the graph can carry, per normalisation
        spread = edge_spread(frequency(t, name))
        cells = [f"{spread[key]:.4f}" for key in ("positive_mean", "positive_std", "negative_mean", "negative_std")]
        assert f"<tr><td>{name}</td><td>{DESCRIPTIONS[name]}</td><td>" + "</td><td>".join(cells) in dataset
    assert summary.measured > 0 and summary.failed >= 1 and summary.datasets == 1 and summary.grids == 3


def test_grid_pages_show_cost_lambdas_and_learned_edges(params, runs, tmp_path):
    import torch
    import yaml

    from pipeline.report.edges import NEGATIVE, POSITIVE
    from pipeline.stats.affinity import frequency
    from pipeline.stats.files import load_counts

    params = full_project(params, runs)
    f = frequency(load_counts(stats_dir(params, "embedded") / "cooccurrence.parquet", len(NAMES)), "printed")
    conv = with_overrides(params, {"model.grar.edges": "conv", "model.grar.negative": False})
    for seed in (0, 1):  # every class in every image: f is constant off the diagonal, ranks undefined (values:
        # test_report_edges)
        path = runs.done("table2", "pos-conv", seed, 0.5)
        (path / "config.yaml").write_text(yaml.safe_dump(conv.model_dump(mode="json")))
        torch.save({"model": {POSITIVE: torch.tensor(f), NEGATIVE: torch.tensor(f)}}, path / "checkpoint.pt")
    graph = runs.done("table2", "pos-graph", 0, 0.5)
    log = (graph / "train_log.csv").read_text().splitlines()
    (graph / "train_log.csv").write_text(
        "\n".join([log[0] + ",lambda_pos,lambda_neg"] + [f"{row},{0.01 * i}," for i, row in enumerate(log[1:])]) + "\n"
    )
    write_report(params, tmp_path / "reports", examples=0)
    out = tmp_path / "reports"
    table2 = (out / "grids/table2.html").read_text()
    assert table2.count("<td>printed</td><td>n/a</td><td>n/a</td>") == 2
    assert (out / "figures/edges" / f"{run_name('pos-conv', 0)}.png").is_file()
    assert (out / "figures/lambdas/table2/pos-graph.png").is_file()
    assert not (out / "figures/lambdas/table2/pos-conv.png").exists()  # its log has no λ columns
    # cost: 0.4 s per iteration (median of the pos-conv logs, the runs with a config.yaml), 600 iterations a run;
    # table1 has grar-sr seeds 0 (failed) and 1 (running) to go, side by side (executor local, parallel 2)
    table1 = (out / "grids/table1.html").read_text()
    assert "to go: 0:08:00 of run time, 0.00 GPU-hours, wall time 0:04:00 at 2 in parallel" in table1
    assert "<td>grar-sr</td><td>0</td><td>failed</td><td>0/600</td><td>0.400</td><td>0:04:00</td>" in table1
    check_site(out)


def test_nothing_produced_yet(params, tmp_path):
    out = tmp_path / "reports"
    summary = write_report(params, out)
    assert check_site(out) > 10
    assert summary.datasets == 0 and summary.measured == 0  # no benchmark, no runs
    assert "not run (grid table1 not run yet: no grid index)" in (out / "tables/table1.md").read_text()
    assert "No statistics found under artifacts/stats" in (out / "datasets/index.html").read_text()
    assert "not produced" in (out / "figures/qualitative.html").read_text()
    assert summary.notes and summary.notes[0].startswith("qualitative examples: needs finished runs of grid table1")


def test_sources_in_reports_are_kept_and_outputs_replaced(params, runs, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    source = (REPO / "reports" / "paper_tables.yaml").read_bytes()
    (out / "paper_tables.yaml").write_bytes(source)
    write_report(params, out, examples=0)
    runs.done("table1", "fcn", 0, 0.40, head="fcn")
    (out / "tables" / "stale.html").write_text("from an older report")
    write_report(params, out, examples=0)
    assert (out / "paper_tables.yaml").read_bytes() == source
    assert not (out / "tables" / "stale.html").exists()  # outputs are replaced whole
    assert "40.00 (n=1)" in (out / "tables/table1.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([*layout.OUTPUTS, "paper_tables.yaml"])


def test_a_failure_leaves_the_previous_site(params, runs, tmp_path, monkeypatch):
    out = tmp_path / "reports"
    write_report(params, out, examples=0)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    runs.done("table1", "fcn", 0, 0.40, head="fcn")

    def broken(*args, **kwargs):
        raise DataError("index failed")

    monkeypatch.setattr(site, "write_index", broken)
    with pytest.raises(DataError, match="index failed"):
        write_report(params, out, examples=0)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no temp folder left either


def test_bad_grid_index_is_one_error_line(params, capsys):
    index = Path(params.grid.runs) / "grids" / "table2.json"
    index.parent.mkdir(parents=True)
    index.write_text("{not json")
    assert main(["report", "--params", str(REPO / "params.yaml"), "--examples", "0"]) == 1
    assert capsys.readouterr().err.startswith(f"grar: error: {index}: cannot read the grid index")
    index.write_text(json.dumps({"grid": "table2", "cells": [{"cell": "fcn"}]}))
    assert main(["report", "--params", str(REPO / "params.yaml")]) == 1
    assert "cells[0]: expected cell (text), seed (integer) and state (text)" in capsys.readouterr().err


def test_command_and_stage(params, runs, tmp_path, capsys, monkeypatch):
    runs.done("table1", "fcn", 0, 0.40, head="fcn")
    assert main(["report", "--params", str(REPO / "params.yaml"), "--out", "elsewhere", "--examples", "0"]) == 0
    assert capsys.readouterr().out.startswith("elsewhere/index.html: Tables 1-6 with 1 measured cells")
    assert main(["report", "--params", str(REPO / "params.yaml"), "--examples", "-1"]) == 2
    from stages.report import report

    monkeypatch.setattr(site, "EXAMPLES", 0)
    report(params)
    assert (tmp_path / "reports" / "index.html").is_file() and check_site(tmp_path / "reports")


def test_unreadable_training_log_names_the_file(params, runs, tmp_path):
    run_dir = runs.done("table1", "fcn", 0, 0.40, head="fcn")
    (run_dir / "train_log.csv").write_text("iteration,seconds\n1,0.5\n")
    with pytest.raises(DataError, match=f"{run_dir / 'train_log.csv'}: a training log needs the columns"):
        write_report(params, tmp_path / "reports", examples=0)
    (run_dir / "train_log.csv").write_text("iteration,lr,loss\n1,0.1,oops\n")
    with pytest.raises(DataError, match="cannot read the training log"):
        write_report(params, tmp_path / "reports", examples=0)
    assert list((tmp_path / "reports").iterdir()) == []  # nothing half-written, no temporary folder left
