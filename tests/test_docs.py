"""The README is a map that stays true: short, every relative link resolves, every manual and folder is on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
README_LINES = 260


def links(page: Path) -> list[str]:
    """The targets of the Markdown links of ``page`` outside code blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or an anchor of the page itself
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: links to missing files: {', '.join(broken)}"


def test_the_readme_is_a_map_that_links_every_manual():
    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= README_LINES
    linked = {(readme.parent / target.split("#", 1)[0]).resolve() for target in links(readme)}
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {', '.join(unlinked)}"


def test_the_architecture_table_names_every_folder_of_pipeline():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    folders = sorted(path.name for path in (REPO / "pipeline").iterdir() if (path / "__init__.py").is_file())
    missing = [name for name in folders if f"pipeline/{name}/" not in text]
    assert not missing, f"README.md: the architecture table lacks pipeline/{', pipeline/'.join(missing)}/"
