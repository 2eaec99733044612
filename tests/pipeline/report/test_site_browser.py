"""The generated site in a real browser: headless Chromium follows every link and image from index.html.

The site is built from fabricated runs on ADE20K's 150 classes and the
statistics of the real ADE20K sample (tests/fixtures/ade20k_sample) computed in
``tmp_path``. Every page reachable from ``index.html`` is loaded from the file
system; the test fails on a link or image that does not load, a missing
``#fragment`` target, or any console error, and saves screenshots.
Chromium: Debian's ``chromium`` (``make browser-packages``). Without it the test
skips, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag

import pandas as pd
import pytest
from chromium_cdp import CHROMIUM, Browser
from report_runs import Runs

from pipeline.config import with_overrides
from pipeline.datasets import ade20k
from pipeline.paths import dataset_dir
from pipeline.report.site import write_report
from pipeline.stats.compute import StatsJob, build_stats

pytestmark = pytest.mark.browser

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ade20k_sample"
SCREENSHOTS = ("index.html", "tables/table1.html", "datasets/ade20k.html", "grids/table1.html")


@pytest.fixture
def chromium() -> Path:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        reason = f"{CHROMIUM} not installed; run `make browser-packages` (Debian package chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def ade20k_site(params, out: Path) -> Path:
    """ADE20K sample statistics, and grid runs on its 150 classes: finished, failed and pending."""
    params = with_overrides(params, {"data.datasets": ["ade20k"], "stats.workers": 1, "data.workers": 1})
    source = Path("downloads") / "ADEChallengeData2016"
    shutil.copytree(FIXTURE, source)
    base = source / "ADEChallengeData2016"
    for kind in ("images", "annotations"):  # the sample's validation images double as the training split
        shutil.copytree(base / kind / "validation", base / kind / "training")
    ade20k.convert(source, dataset_dir(params, "ade20k"), workers=1)
    build_stats(StatsJob.for_dataset(params, "ade20k"))
    runs = Runs(Path(params.grid.runs), names=ade20k.NAMES)
    for seed, (fcn, grar) in enumerate([(0.31, 0.38), (0.33, 0.41)]):  # MS (and its confusion) on seed 0 only
        runs.done("table1", "fcn", seed, fcn, ms=fcn + 0.01 if seed == 0 else None, dataset="ade20k", head="fcn")
        runs.done("table1", "grar", seed, grar, ms=grar + 0.01 if seed == 0 else None, dataset="ade20k")
    runs.failed("table1", "grar-sr", 0)
    runs.state("table1", "grar-sr", 1, "pending")
    runs.done("table2", "pos-graph", 0, 0.36, dataset="ade20k", confusion=False)
    write_report(params, out, examples=0)
    return out


def crawl(page, out: Path) -> tuple[set[str], list[str]]:
    """Load every page, link target and image reachable from index.html; (URLs loaded, problems found)."""
    start = (out / "index.html").as_uri()
    queue, seen, problems = deque([start]), {start}, []
    while queue:
        url = queue.popleft()
        problems += page.load(url)
        if not url.endswith(".html"):
            continue
        links = page.evaluate("Array.from(document.querySelectorAll('a[href]'), a => a.href)")
        images = page.evaluate("Array.from(document.images, i => [i.src, i.complete && i.naturalWidth > 0])")
        ids = set(page.evaluate("Array.from(document.querySelectorAll('[id]'), e => e.id)"))
        problems += [f"{url}: image did not load: {src}" for src, loaded in images if not loaded]
        for link in links + [src for src, _ in images]:
            target, fragment = urldefrag(link)
            if not target.startswith(out.as_uri()):
                problems.append(f"{url}: link leaves the site: {link}")
                continue
            if fragment and target == url and fragment not in ids:
                problems.append(f"{url}: no element #{fragment}")
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen, problems


def test_every_link_and_image_loads_without_console_errors(chromium, params, tmp_path):
    out = ade20k_site(params, tmp_path / "reports")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log", chromium) as browser:
        page = browser.page()
        seen, problems = crawl(page, out)
        assert not problems, "\n".join(problems)
        files = {path.as_uri() for path in out.rglob("*") if path.is_file() and not path.name.startswith(".")}
        assert files <= seen, f"files no link reaches: {sorted(files - seen)[:5]}"  # the site has no orphans
        # the supporter/opponent table filters by text and sorts by a header
        assert not page.load((out / "datasets/ade20k.html").as_uri())
        rows = page.evaluate("document.querySelectorAll('#supporters tbody tr').length")
        shown = page.evaluate("""(() => { const input = document.querySelector('input[data-filter=supporters]');
            input.value = 'person'; input.dispatchEvent(new Event('input'));
            return Array.from(document.querySelectorAll('#supporters tbody tr')).filter(r => !r.hidden)
                .map(r => r.textContent.toLowerCase().includes('person')); })()""")
        assert rows == len(pd.read_parquet(Path("artifacts/stats/ade20k/supporters.parquet")))
        assert 0 < len(shown) < rows and all(shown)
        first = page.evaluate("""(() => { document.querySelector('#classes th:nth-child(3)').click();
            document.querySelector('#classes th:nth-child(3)').click();
            return Array.from(document.querySelectorAll('#classes tbody tr'), r => +r.cells[2].textContent)
                .slice(0, 3); })()""")
        assert first == sorted(first, reverse=True) and first[0] == 3  # most frequent classes: all 3 images
        for name in SCREENSHOTS:
            assert not page.load((out / name).as_uri())
            page.screenshot(shots / name.replace("/", "_").replace(".html", ".png"))
    print(f"screenshots in {shots}")
    assert all(
        (shots / name.replace("/", "_").replace(".html", ".png")).stat().st_size > 10_000 for name in SCREENSHOTS
    )


def mouse(page, kind: str, point: dict) -> None:
    """A real pointer event at ``point`` (viewport coordinates), as a user's mouse sends it."""
    extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
    page.send("Input.dispatchMouseEvent", {"type": kind, "x": point["x"], "y": point["y"], **extra})


def test_affinity_explorer_hover_click_search_and_switch(chromium, params, tmp_path):
    import numpy as np
    from chromium_cdp import problem_of

    from pipeline.stats.affinity import cluster_order, frequency
    from pipeline.stats.files import load_counts
    from pipeline.stats.supporters import rank_supporters

    out = ade20k_site(params, tmp_path / "reports")
    stats = Path("artifacts/stats/ade20k")
    cooccurrence = pd.read_parquet(stats / "cooccurrence.parquet")
    supporters = pd.read_parquet(stats / "supporters.parquet")
    t = load_counts(stats / "cooccurrence.parquet", len(ade20k.NAMES))
    conditional = frequency(t, "conditional")
    first = supporters[supporters["role"] == "supporter"].iloc[0]  # a class of the sample and its best supporter
    i, j = int(first["i"]), int(first["j"])
    with Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log", chromium) as browser:
        page = browser.page()
        assert not page.load((out / "datasets/ade20k.html").as_uri())
        explorer = page.evaluate("document.querySelector('a[href=\"ade20k-explorer.html\"]').href")
        assert not page.load(explorer)
        assert page.evaluate("explorer.data.names.length") == 150
        assert page.evaluate("explorer.data.order") == cluster_order(t)[0].tolist()
        # hover cell (i, j): both names, t and f under both normalisations, as in the Parquet file
        mouse(page, "mouseMoved", page.evaluate(f"explorer.reveal({i}, {j})"))
        shown = page.evaluate("""(() => { const tip = document.getElementById('tooltip');
            return {display: tip.style.display, text: tip.textContent, t: tip.querySelector('td.t').textContent,
                    f: Object.fromEntries(Array.from(tip.querySelectorAll('td.f'), e => [e.dataset.norm,
                    e.textContent]))}; })()""")
        row = cooccurrence[(cooccurrence["i"] == i) & (cooccurrence["j"] == j)].iloc[0]
        assert shown["display"] == "block"
        assert ade20k.NAMES[i] in shown["text"] and ade20k.NAMES[j] in shown["text"]
        assert shown["t"] == str(int(row["t"]))
        assert shown["f"] == {
            "printed": f"{row['f']:.4f}",
            "conditional": f"{conditional[i, j]:.4f}",
            "row": f"{frequency(t, 'row')[i, j]:.4f}",
        }  # every normalisation grar computes
        # click it: the column class's supporters and opponents, ranked as supporters.parquet ranks them
        point = page.evaluate(f"explorer.reveal({i}, {j})")
        mouse(page, "mousePressed", point)
        mouse(page, "mouseReleased", point)
        listed = page.evaluate("""Array.from(document.querySelectorAll('#supporters .bar'),
            b => [+b.dataset.class, b.querySelector('.value').textContent])""")
        expected = supporters[(supporters["j"] == j) & (supporters["role"] == "supporter")].sort_values("rank")
        assert listed[: len(expected)] == [[int(r.i), f"{r.f:.4f}"] for r in expected.itertuples()]
        opponents = page.evaluate("Array.from(document.querySelectorAll('#opponents .bar'), b => +b.dataset.class)")
        expected = supporters[(supporters["j"] == j) & (supporters["role"] == "opponent")].sort_values("rank")
        assert opponents[: len(expected)] == expected["i"].tolist()
        # the normalisation switch re-ranks with the conditional f
        page.evaluate(
            "(() => { const s = document.getElementById('normalisation'); s.value = 'conditional';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        ranked = [i_ for j_, role, _, i_ in rank_supporters(t, conditional, 10) if j_ == j and role == "supporter"]
        assert (
            page.evaluate("Array.from(document.querySelectorAll('#supporters .bar'), b => +b.dataset.class)") == ranked
        )
        assert page.evaluate("document.getElementById('definition').textContent").startswith("f: conditional")
        # the search box finds a class by name and selects it
        page.evaluate(
            "(() => { const s = document.getElementById('search'); s.value = 'sky';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        assert page.evaluate("explorer.state.selected") == ade20k.NAMES.index("sky")
        assert page.evaluate("document.querySelector('#selection h2').textContent").startswith("sky")
        # the cell size control zooms: names stay legible at 150 classes
        assert (
            page.evaluate("explorer.state.cell") == 12
            and page.evaluate("document.getElementById('heatmap').width") == 150 * 12
        )
        # the legend maps value to colour under the chosen normalisation: 0 to the largest f off the diagonal
        top = float(np.max(conditional[~np.eye(len(conditional), dtype=bool)]))
        assert page.evaluate("document.getElementById('legend-text').textContent") == (
            f"Colour scale: f[i, j] under conditional, linear from 0 (dark blue) to {top:.4f} (yellow), the largest "
            "value off the diagonal; the diagonal is grey."
        )
        assert page.evaluate("Array.from(document.querySelectorAll('#legend-ticks span'), s => s.textContent)") == [
            "0.0000",
            f"{top / 2:.4f}",
            f"{top:.4f}",
        ]
        # scrolled to the last cell, the class names still stand beside its row and above its column
        last = page.evaluate("explorer.data.order[explorer.data.order.length - 1]")
        point = page.evaluate(f"explorer.reveal({last}, {last})")
        boxes = page.evaluate("""(() => Object.fromEntries(['scroller', 'row-labels', 'col-labels', 'heatmap'].map(
            id => [id, document.getElementById(id).getBoundingClientRect().toJSON()])))()""")
        assert page.evaluate("document.getElementById('scroller').scrollLeft") > 0
        assert abs(boxes["row-labels"]["left"] - boxes["scroller"]["left"]) <= 1  # stuck to the left edge
        assert abs(boxes["col-labels"]["top"] - boxes["scroller"]["top"]) <= 1  # stuck to the top edge
        assert boxes["row-labels"]["right"] < point["x"] and boxes["col-labels"]["bottom"] < point["y"]
        problems = [problem for problem in map(problem_of, browser.events) if problem]
        assert not problems, problems
        page.screenshot(tmp_path / "explorer.png")
    assert np.isfinite(conditional).all()
