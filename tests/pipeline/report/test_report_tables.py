"""Tables 1-6 from fabricated runs: means over seeds, differences to the paper, not run / failed, provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_runs import COMMIT, Runs, bench_report, run_name

from pipeline.config import with_overrides
from pipeline.datasets import embedded as E
from pipeline.paper import load_paper_tables
from pipeline.report import layout
from pipeline.report.runs import load_grids
from pipeline.report.tables import SYNTHETIC, Inputs, build_tables, to_markdown


def tables_of(params, bench=None):
    grids = load_grids(params)
    inputs = Inputs(load_paper_tables(), grids, bench, Path(params.bench.out), params.profile, params.train.dataset)
    return build_tables(inputs)


def row(table, *first):
    """The row whose first cells read ``first``."""
    found = [r for r in table.rows if tuple(c.text for c in r[: len(first)]) == first]
    assert len(found) == 1, [tuple(c.text for c in r) for r in table.rows]
    return found[0]


def texts(cells):
    return [c.text for c in cells]


def test_table1_means_over_seeds_differences_and_ms_rows(params, runs):
    runs.done("table1", "fcn", 0, 0.40, ms=0.41, head="fcn")
    runs.done("table1", "fcn", 1, 0.45, ms=0.47, head="fcn")
    table = tables_of(params)[0]
    single = row(table, "ResNet-50", "", "", "")
    assert texts(single[4:7]) == ["42.3", "42.50 ± 3.54 (n=2)", "+0.20"]  # mean 42.5, stdev sqrt(12.5)
    assert single[5].kind == "measured" and single[7].text == "table1/fcn · tiny_resnet"
    multi = row(table, "ResNet-50", "", "", "✓")  # the MS row: no printed row, the run's "ms" scores
    assert texts(multi[4:7]) == ["— (no paper row)", "44.00 ± 4.24 (n=2)", "—"]
    marker, text = table.provenance[0]
    assert single[5].note == marker == "m1"
    for part in (
        "grid table1, cell fcn, single-scale mIoU",
        "profile embedded",
        "dataset embedded",
        "backbone tiny_resnet",
        "head fcn",
        "seeds 0, 1 (seed 0: 40.00, seed 1: 45.00)",
        f"runs/{run_name('fcn', 0)}, runs/{run_name('fcn', 1)}",
        f"commit {COMMIT}",
    ):
        assert part in text
    assert table.synthetic


def test_table1_states_grar_lead_and_context_error_on_embedded_runs(params):
    runs = Runs(Path(params.grid.runs), names=E.CLASSES)
    floor, grass = E.class_id("bedroom.floor"), E.class_id("pasture.grass")
    confused = 10 * np.eye(24, dtype=np.int64)
    confused[floor, grass] = 10  # 10 of the 210 twin-class pixels go to the floor's twin of another scene
    clean = 10 * np.eye(24, dtype=np.int64)
    clean[floor, floor] = 20  # the same rows (class pixels), no twin error
    for seed, (ss, ms) in enumerate([(0.40, 0.41), (0.44, 0.45)]):
        runs.done("table1", "fcn", seed, ss, ms=ms, head="fcn", matrix=confused)
    for seed, (ss, ms) in enumerate([(0.55, 0.58), (0.57, 0.60)]):
        runs.done("table1", "grar", seed, ss, ms=ms, matrix=clean)
    lead, context = tables_of(params)[0].findings
    example = f"runs/{run_name('grar', 0)}"
    assert lead == (
        "GRAr − FCN on the embedded dataset (measured, mean over seeds; 95 % paired bootstrap over val "
        f"images and seeds): +14.00 (no interval: 4 run(s) without confusion_images.npz, e.g. {example} "
        "(evaluated before per-image confusions, or without multi-scale)) mIoU single scale, +16.00 (no "
        f"interval: 4 run(s) without confusion_images_ms.npz, e.g. {example} (evaluated before "
        "per-image confusions, or without multi-scale)) multi-scale + flip."
    )
    # ceiling by hand: floor group shares .4/.2/.2/.2 -> IoU .25 + 3 x 1/9; band group 4 x 1/7; pairs 12 x 1/3;
    # uniques 4 x 1: (4 + 4/7 + 4 + .25 + 1/3) / 24 = 38.1 %
    assert "mean over seeds: fcn 4.8 %, grar 0.0 %." in context
    assert context.endswith("Without context no model can pass 38.1 mIoU on this val split (the local-only ceiling).")


def test_no_context_findings_for_runs_of_other_datasets(params, runs):
    runs.done("table1", "fcn", 0, 0.40, ms=0.41, head="fcn")  # 5 classes: not the embedded dataset's 24
    assert tables_of(params)[0].findings == []


def test_table1_cells_without_runs_say_why(params, runs):
    runs.done("table1", "grar", 0, 0.60)
    runs.failed("table1", "grar", 1)
    runs.failed("table1", "grar-sr", 0, log=None)
    runs.state("table1", "grar-sr", 1, "pending")
    table = tables_of(params)[0]
    grar = row(table, "ResNet-50", "✓", "", "")
    assert grar[5].text == "60.00 (n=1)"
    assert grar[7].text == "table1/grar · tiny_resnet · 1 of 2 seeds failed" and grar[7].kind == "failed"
    assert grar[7].href == f"grids/logs/{run_name('grar', 1)}/error.txt"
    failed = row(table, "ResNet-50", "✓", "✓", "")
    assert (failed[5].text, failed[5].kind, failed[6].text) == ("failed", "failed", "—")
    assert failed[5].href == f"grids/logs/{run_name('grar-sr', 0)}/error.txt"
    fcn = row(table, "ResNet-50", "", "", "")  # seeds 0 and 1 of params, not in the index
    assert fcn[5].text == "not run (not in runs/grids/table1.json)" and fcn[5].kind == "missing"
    r101 = row(table, "ResNet-101", "✓", "✓", "")  # no cell of the embedded grid reproduces it
    assert r101[5].text == "not run (no cell of grid table1 reproduces this row in profile embedded)"
    ms = row(table, "ResNet-50", "✓", "", "✓")  # finished, but without MS evaluation
    assert ms[5].text == "not evaluated multi-scale (eval.multi_scale false)"


def test_nothing_run_yet(params):
    tables = tables_of(params)
    fcn = row(tables[0], "ResNet-50", "", "", "")
    assert fcn[5].text == "not run (grid table1 not run yet: no grid index)"
    assert all(c.kind != "measured" for t in tables for r in t.rows for c in r)
    assert "not stated" in tables[1].findings[0]
    # the paper's numbers are all there all the same
    assert [r[4].text for r in tables[0].rows[:6]] == ["42.3", "51.7", "53.0", "54.8", "55.7", "57.0"]


TABLE2 = {
    "fcn": 0.40,
    "pos-conv": 0.45,
    "neg-conv": 0.47,
    "posneg-conv": 0.46,
    "pos-graph": 0.50,
    "neg-graph": 0.48,
    "posneg-graph": 0.55,
    "posneg-graph-conditional": 0.56,
    "posneg-graph-row": 0.53,
}


def test_table2_ordering_in_words_whichever_way(params, runs):
    for cell, miou in TABLE2.items():
        runs.done("table2", cell, 0, miou)
    table = tables_of(params)[1]
    extra = row(table, "ResNet-50", "✓", "✓", "Graph, Eq. 1 conditional P(j|i)")
    assert texts(extra[4:7]) == ["— (no paper row)", "56.00 (n=1)", "—"]
    assert texts(row(table, "ResNet-50", "", "✓", "Conv")[4:7]) == ["47.9", "47.00 (n=1)", "-0.90"]
    assert texts(row(table, "ResNet-50", "✓", "✓", "Graph, Eq. 1 over row i")[4:7]) == [
        "— (no paper row)",
        "53.00 (n=1)",
        "—",
    ]
    graph_conv, pos_neg, both, eq1, eq1_row = table.findings
    assert graph_conv == (
        "Graph vs Conv (measured): Graph ahead in all 3 settings; no interval: 2 run(s) without "
        f"confusion_images.npz, e.g. runs/{run_name('pos-graph', 0)} (evaluated before per-image "
        "confusions, or without multi-scale) (Graph − Conv: positive only +5.00, negative only "
        "+1.00, positive + negative +9.00); paper: positive only +1.6, negative only +1.4, "
        "positive + negative +3.5."
    )
    assert pos_neg.startswith(
        "Positive vs negative (measured): positive-only ahead in 1, behind in 1, tied in 0 of 2 settings; no interval"
    )
    assert pos_neg.endswith(
        "(positive-only − negative-only: with Graph edges +2.00, with Conv edges -2.00); paper: "
        "with Graph edges +0.4, with Conv edges +0.2."
    )
    assert "Graph +5.00, Conv +1.00" in both
    assert eq1.startswith(
        "Eq. 1 as printed (posneg-graph) 55.00 vs conditional P(j|i) (posneg-graph-conditional) "
        "56.00: conditional − printed = +1.00 (no interval: "
    )
    assert eq1.endswith("(better: conditional; beyond the paper, which prints one formula).")
    assert eq1_row.startswith(
        "Eq. 1 as printed (posneg-graph) 55.00 vs normalised over row i (posneg-graph-row) "
        "53.00: row − printed = -2.00 ("
    )
    assert "better: as printed" in eq1_row


PERFECT = 4 * np.eye(5, dtype=np.int64)  # mIoU 100
HALF_WRONG = PERFECT.copy()
HALF_WRONG[0] = [2, 2, 0, 0, 0]  # IoU of class 0: 2 / 4, of class 1: 4 / 6: mIoU (1/2 + 2/3 + 3) / 5 = 83.33


def test_table3_states_each_module_against_the_fcn_with_its_interval(params, runs):
    for seed in (0, 1):
        runs.done("table3", "fcn", seed, 0.25 / 0.3, head="fcn", images=[HALF_WRONG])
        runs.done("table3", "ppm", seed, 0.25 / 0.3, head="ppm", images=[HALF_WRONG])
        runs.done("table3", "grar", seed, 1.0, images=[PERFECT])
    table = tables_of(params)[2]
    assert table.findings == [
        "ppm − FCN (measured single-scale mIoU, mean over seeds): +0.00 [95 % CI +0.00, +0.00]: within noise.",
        "grar − FCN (measured single-scale mIoU, mean over seeds): +16.67 [95 % CI +16.67, +16.67]: ahead of the FCN.",
    ]


def crossed_table2(runs) -> None:
    """Every Table 2 cell, seeds 0 and 1: graph cells (and fcn) perfect on seed 0 and half wrong on seed 1, conv
    cells the other way round."""
    for cell in TABLE2:
        for seed in (0, 1):
            graph = cell.endswith("graph") or cell == "fcn"
            image = PERFECT if (seed == 0) == graph else HALF_WRONG
            runs.done("table2", cell, seed, 1.0 if image is PERFECT else 0.25 / 0.3, images=[image])


def test_table2_differences_within_noise_say_so(params, runs):
    crossed_table2(runs)
    findings = tables_of(params)[1].findings
    graph_conv = findings[0]
    assert "row − printed = +0.00 [95 % CI" in findings[-1]  # every stated difference carries its interval
    assert graph_conv.startswith(
        "Graph vs Conv (measured): Graph ahead in 0, behind in 0, tied in 3 of 3 settings; 3 of 3 within noise "
        "(95 % interval contains 0) (Graph − Conv: positive only +0.00 [95 % CI -16.67, "
        "+16.67], within noise, "
    )


def test_table3_bench_and_miou(params, runs, tmp_path):
    runs.done("table3", "grar", 0, 0.52)
    table = tables_of(params, bench_report())[2]
    grar = row(table, "GRAr (ours)")
    assert texts(grar) == [
        "GRAr (ours)",
        "2.4",
        "2.36",
        "95",
        "49.2",
        "42",
        "60.0",
        "21.83",
        "51.7",
        "52.00 (n=1)",
        "+0.30",
        "table3/grar · tiny_resnet",
    ]
    assert grar[2].note == "m1" and "device cpu (x86_64, 2 threads, float32" in table.provenance[0][1]
    assert "FLOPs: FlopCounterMode" in table.provenance[0][1] and "on cpu in float32" in table.preamble[-1]
    # the FLOPs column says how it counts: a multiply-add as 2, twice the MACs fvcore and mmcv print
    assert "measured GFLOPs (2 × MACs)" in table.columns and "multiply-adds (MACs)" in table.preamble[-1]
    ppm = row(table, "PPM")
    assert texts(ppm[2:3]) == ["not run (not benchmarked)"] and ppm[9].text.startswith("not run")
    assert texts(row(table, "FCN (baseline, fcn)")[1:3]) == ["— (no paper row)", "9.44"]
    runs.done("table3", "danet", 0, 0.45, head="danet", danet="matched")
    table = tables_of(params, bench_report())[2]
    assert row(table, "DANet (matched build, danet)")[9].text == "45.00 (n=1)"
    assert "DANet: the matched build (model.danet)" in table.provenance[0][1]
    no_bench = tables_of(params)[2]
    assert row(no_bench, "PPM")[2].text == "not run (artifacts/bench/modules.json missing)"


def test_tables_4_to_6_use_runs_on_their_dataset(paper_params):
    runs = Runs(Path(paper_params.grid.runs))  # table1's runs only: no table4-6 index yet
    runs.done(
        "table1", "r101-grar-sr", 0, 0.55, ms=0.56, dataset="pascal_context", profile="paper", backbone="resnet101"
    )
    runs.done(
        "table1",
        "r50-fcn",
        0,
        0.41,
        ms=0.42,
        dataset="pascal_context",
        profile="paper",
        backbone="resnet50",
        head="fcn",
    )
    tables = tables_of(paper_params)
    ours = row(tables[3], "Ours", "ResNet101")
    assert texts(ours[2:]) == ["55.7", "56.00 (n=1)", "+0.30", "table1/r101-grar-sr · resnet101"]
    assert "multi-scale + flip mIoU" in tables[3].provenance[0][1]
    assert texts(row(tables[3], "this project: r50-fcn")[1:5]) == ["resnet50", "— (no paper row)", "42.00 (n=1)", "—"]
    assert texts(row(tables[3], "PSPNet [81]")[2:]) == ["47.8", "—", "—", "published result (paper)"]
    assert texts(row(tables[3], "Ours", "ResNest101")[3:]) == [
        "not run (no finished run of table4/resnest101-grar-sr on pascal_context yet)",
        "—",
        "table4/resnest101-grar-sr",
    ]
    ade = row(tables[4], "Ours", "ResNet101")
    assert ade[3].text == "not run (no finished run of table5/r101-grar-sr on ade20k yet)"
    nest = row(tables[5], "Ours", "ResNest101")
    assert nest[3].text == "not run (no finished run of table6/resnest101-grar-sr on coco_stuff yet)"
    assert len(tables[4].rows) == 22 and len(tables[5].rows) == 14  # every published row, no extra
    assert not tables[0].synthetic  # real-data profile: no synthetic banner


def test_tables_4_to_6_ours_rows_come_from_grids_table4_to_table6(paper_params):
    runs = Runs(Path(paper_params.grid.runs))
    for seed, (ss, ms) in enumerate([(0.55, 0.56), (0.56, 0.58)]):  # one folder per seed, in table1 and table4
        path = runs.done(
            "table1", "r101-grar-sr", seed, ss, ms=ms, dataset="pascal_context", profile="paper", backbone="resnet101"
        )
        runs.record("table4", "r101-grar-sr", seed, path, runs.indexes["table1"][-1]["metrics"])
    runs.done(
        "table1", "resnest101-grar-sr", 0, 0.30, ms=0.31, dataset="ade20k", profile="paper", backbone="resnest101"
    )  # another grid's run on ADE20K: table5's own run comes first
    runs.done("table5", "r101-grar-sr", 0, 0.45, ms=0.46, dataset="ade20k", profile="paper", backbone="resnet101")
    runs.done(
        "table5", "resnest101-grar-sr", 0, 0.47, ms=0.48, dataset="ade20k", profile="paper", backbone="resnest101"
    )
    runs.done("table6", "r101-grar-sr", 0, 0.40, ms=0.41, dataset="coco_stuff", profile="paper", backbone="resnet101")
    failed = runs.failed("table6", "resnest101-grar-sr", 0)
    tables = tables_of(paper_params)

    context = row(tables[3], "Ours", "ResNet101")
    assert texts(context[2:]) == ["55.7", "57.00 ± 1.41 (n=2)", "+1.30", "table4/r101-grar-sr · resnet101"]
    text = dict(tables[3].provenance)[context[3].note]
    for part in (
        "grid table4, cell r101-grar-sr, multi-scale + flip mIoU",
        "dataset pascal_context",
        "seeds 0, 1 (seed 0: 56.00, seed 1: 58.00)",
        str(runs.indexes["table1"][0]["run_dir"]),
    ):
        assert part in text
    ade, ade_nest = row(tables[4], "Ours", "ResNet101"), row(tables[4], "Ours", "ResNest101")
    assert texts(ade[2:]) == ["47.1", "46.00 (n=1)", "-1.10", "table5/r101-grar-sr · resnet101"]
    assert texts(ade_nest[2:]) == ["47.9", "48.00 (n=1)", "+0.10", "table5/resnest101-grar-sr · resnest101"]
    assert "grid table5, cell resnest101-grar-sr" in dict(tables[4].provenance)[ade_nest[3].note]
    assert "dataset ade20k; backbone resnest101" in dict(tables[4].provenance)[ade_nest[3].note]
    coco = row(tables[5], "Ours", "ResNet101")
    assert texts(coco[2:]) == ["41.9", "41.00 (n=1)", "-0.90", "table6/r101-grar-sr · resnet101"]
    nest = row(tables[5], "Ours", "ResNest101")
    assert (nest[3].text, nest[3].kind, nest[5].text) == ("failed", "failed", "table6/resnest101-grar-sr")
    assert nest[3].href == f"grids/logs/{failed.name}/error.txt"
    assert [r[0].text for r in tables[3].rows if r[0].text.startswith("this project")] == []
    assert len(tables[4].rows) == 22 and len(tables[5].rows) == 14  # every published row, no extra


def test_tables_4_to_6_without_their_grids_fall_back_to_other_grids_or_say_why(paper_params):
    params = with_overrides(paper_params, {"grid.grids": {"table1": paper_params.grid.grids["table1"].model_dump()}})
    runs = Runs(Path(params.grid.runs))
    runs.done("table1", "r101-grar-sr", 0, 0.45, ms=0.46, dataset="ade20k", profile="paper", backbone="resnet101")
    tables = tables_of(params)
    assert texts(row(tables[4], "Ours", "ResNet101")[3:]) == ["46.00 (n=1)", "-1.10", "table1/r101-grar-sr · resnet101"]
    assert row(tables[5], "Ours", "ResNest101")[3].text == (
        "not run (no finished resnest101-grar-sr run on coco_stuff; profile paper trains on pascal_context and has "
        "no grid table6 with a cell resnest101-grar-sr)"
    )


def test_tables_4_to_6_say_why_the_embedded_profile_has_no_ours_rows(params, runs):
    runs.done("table1", "grar-sr", 0, 0.50, ms=0.51)
    tables = tables_of(params)
    for table, dataset in zip(tables[3:], ("pascal_context", "ade20k", "coco_stuff"), strict=True):
        assert row(table, "Ours", "ResNet101")[3].text == (
            f"not run (no finished r101-grar-sr run on {dataset}; the embedded profile trains on its synthetic "
            f"dataset only; profiles/paper.yaml's grid table{table.number} trains it)"
        )
        assert table.findings == [f"No finished run on {dataset} in this report: this project's rows are not run."]


def test_markdown_rendering(params, runs):
    runs.done("table1", "fcn", 0, 0.40)
    runs.failed("table1", "grar", 0)
    markdown = to_markdown(tables_of(params)[0])
    assert markdown.startswith("# Table 1: Ablation Study on PASCAL-Context.")
    assert f"> **Synthetic-data results.** {SYNTHETIC}" in markdown
    assert "| ResNet-50 |  |  |  | 42.3 | 40.00 (n=1) [m1] | -2.30 | table1/fcn · tiny_resnet |" in markdown
    assert f"[failed](../grids/logs/{run_name('grar', 0)}/error.txt)" in markdown
    assert "- [m1] grid table1, cell fcn, single-scale mIoU: profile embedded" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| Backbone"))
    assert header.count("|") - 1 == 8 and "paper mIoU %" in header


@pytest.mark.parametrize(
    ("page", "target", "expected"),
    [
        ("index.html", "tables/table1.html", "tables/table1.html"),
        ("tables/table1.html", "grids/logs/x/error.txt", "../grids/logs/x/error.txt"),
        ("figures/stats/a/b.html", "index.html#m1", "../../../index.html#m1"),
        ("tables/table1.html", "#m2", "#m2"),
    ],
)
def test_relative_links(page, target, expected):
    assert layout.href_from(page, target) == expected


def test_orderings_give_a_verdict_against_the_paper_and_the_resolution(params, runs):
    all_class_zero = np.zeros((5, 5), np.int64)
    all_class_zero[:, 0] = 4  # IoU of class 0: 4 / 20, of the others 0: mIoU 4.00
    for seed in (0, 1):
        runs.done("table3", "fcn", seed, 0.25 / 0.3, head="fcn", images=[HALF_WRONG])
        runs.done("table3", "ppm", seed, 0.25 / 0.3, head="ppm", images=[HALF_WRONG])  # = FCN: [0, 0]
        runs.done("table3", "grar", seed, 1.0, images=[PERFECT])  # +16.67 on the one image, every replicate
        runs.done("table3", "ocr", seed, 0.04, head="ocr", images=[all_class_zero])
    table = tables_of(params)[2]
    rows = {o.label: (o.measured_text(), o.paper_text(), o.verdict) for o in table.orderings}
    assert rows == {
        "ppm − FCN, single scale": ("+0.00 [95 % CI +0.00, +0.00]", "+6.9", "unresolved"),  # paper 49.2 − 42.3
        "aspp − FCN, single scale": ("no interval: no seed finished in both cells", "+7.6", "no interval"),
        "danet − FCN, single scale": ("no interval: no seed finished in both cells", "+8.3", "no interval"),
        "ocr − FCN, single scale": ("-79.33 [95 % CI -79.33, -79.33]", "+8.1", "disagrees"),  # 4.00 − 83.33
        "grar − FCN, single scale": ("+16.67 [95 % CI +16.67, +16.67]", "+9.4", "agrees"),  # paper 51.7 − 42.3
    }
    assert table.verdicts() == {"agrees": 1, "disagrees": 1, "unresolved": 1, "beyond the paper": 0, "no interval": 2}
    assert table.resolution.startswith(
        "Resolution: a difference resolves (its 95 % interval excludes 0) when it "
        "is larger than its interval's half-width: here from ±0.0 to ±0.0 mIoU "
        "points (median ±0.0) over 3 comparisons, 2 seeds each;"
    )
    markdown = to_markdown(table)
    assert "| grar − FCN, single scale | +16.67 [95 % CI +16.67, +16.67] | +9.4 | agrees |" in markdown


def test_table2_orderings_take_the_papers_differences_and_say_unresolved(params, runs):
    crossed_table2(runs)
    orderings = {o.label: o for o in tables_of(params)[1].orderings}
    assert [(label, o.paper_text(), o.verdict) for label, o in orderings.items()] == [
        ("Graph − Conv, positive only", "+1.6", "unresolved"),  # 49.7 − 48.1
        ("Graph − Conv, negative only", "+1.4", "unresolved"),  # 49.3 − 47.9
        ("Graph − Conv, positive + negative", "+3.5", "unresolved"),  # 51.7 − 48.2
        ("positive − negative only, Graph", "+0.4", "unresolved"),
        ("positive − negative only, Conv", "+0.2", "unresolved"),
        ("positive + negative − positive only, Graph", "+2.0", "unresolved"),
        ("positive + negative − positive only, Conv", "+0.1", "unresolved"),
        ("Eq. 1 conditional P(j|i) − as printed", "— (not in the paper)", "unresolved"),
        ("Eq. 1 over row i − as printed", "— (not in the paper)", "unresolved"),
    ]
    assert orderings["Graph − Conv, positive only"].measured_text() == "+0.00 [95 % CI -16.67, +16.67]"


def test_table1_orderings_without_runs_have_no_interval(params):
    table = tables_of(params)[0]
    assert [(o.label, o.verdict, o.paper_text()) for o in table.orderings] == [
        ("GRAr − FCN, single scale", "no interval", "+9.4"),
        ("GRAr − FCN, multi-scale + flip", "no interval", "— (not in the paper)"),
        ("SR-Loss: GRAr + SR-Loss − GRAr, single scale", "no interval", "+1.3"),
        ("GRAr + SR-Loss − FCN, single scale", "no interval", "+10.7"),
    ]
    assert table.resolution is None
