"""Folders are the architecture: each package imports only what its docstring allows, so the layers stay layers.

Every import of the project (module level and inside functions) is classified by
the folder it comes from and the folder it names: ``root`` (``pipeline/*.py``,
the shared ground), ``model``, and each folder of ``pipeline/``. ``ALLOWED`` is
the table of the package docstrings (``pipeline/__init__.py`` and
``pipeline/<folder>/__init__.py``); a new dependency between folders is a
decision, made here and in the docstring, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOWED: dict[str, set[str]] = {
    "root": set(),  # the shared ground imports no folder
    "model": set(),  # pure nn.Modules: nothing of pipeline
    "datasets": {"root"},
    "stats": {"root", "datasets"},
    "scores": {"root", "datasets", "cluster"},  # cluster: the grid indexes only (below)
    "cluster": {"root", "training"},  # training: only inside the job that trains (below)
    "training": {"root", "model", "datasets", "stats", "scores"},
    "bench": {"root", "model", "training"},
    "report": {"root", "model", "datasets", "stats", "scores", "cluster", "training", "bench"},
    "cli": {"root", "model", "datasets", "stats", "scores", "cluster", "training", "bench", "report"},
}
# Narrower rules within an allowed edge: (from, to) -> the modules that may be imported.
ONLY = {
    ("scores", "cluster"): {"pipeline.cluster.index"},
    ("cluster", "training"): {"pipeline.training.run"},
}
# Imports of training from cluster happen inside functions only: following a grid needs no torch.
LAZY_ONLY = {("cluster", "training")}


def folder_of(repo: Path, path: Path) -> str:
    parts = path.relative_to(repo).parts
    return "model" if parts[0] == "model" else "root" if len(parts) == 2 else parts[1]


def folder_named(repo: Path, module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "model":
        return "model"
    if parts[0] != "pipeline":
        return None
    return parts[1] if len(parts) > 1 and (repo / "pipeline" / parts[1]).is_dir() else "root"


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) of every project import of ``path``."""
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, lazy))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def violations(repo: Path) -> list[str]:
    """Every import of ``repo``'s ``pipeline`` and ``model`` that ``ALLOWED`` / ``ONLY`` / ``LAZY_ONLY`` forbid."""
    problems = []
    for path in sorted([*repo.glob("pipeline/**/*.py"), *repo.glob("model/**/*.py")]):
        source = folder_of(repo, path)
        for module, line, lazy in imports(path):
            target = folder_named(repo, module)
            if target is None or target == source:
                continue
            where = f"{path.relative_to(repo)}:{line}: {module}"
            if target not in ALLOWED.get(source, set()):
                problems.append(f"{where} ({source} may not import {target})")
            elif (source, target) in ONLY and module not in ONLY[source, target]:
                problems.append(f"{where} ({source} may import only {', '.join(sorted(ONLY[source, target]))})")
            elif (source, target) in LAZY_ONLY and not lazy:
                problems.append(f"{where} ({source} imports {target} inside functions only)")
    return problems


def test_every_folder_imports_only_what_its_docstring_allows():
    problems = violations(REPO)
    assert not problems, "\n".join(problems)


def test_every_folder_of_pipeline_is_in_the_table():
    folders = {path.name for path in (REPO / "pipeline").iterdir() if (path / "__init__.py").is_file()}
    assert folders | {"root", "model"} == set(ALLOWED)


def test_the_checker_sees_a_forbidden_and_a_module_level_import(tmp_path):
    """It cannot pass for want of looking: a root module importing a folder, cluster importing training at module
    level, and scores importing more of cluster than the index are found; a lazy import is not."""
    files = {
        "pipeline/__init__.py": "",
        "pipeline/paths.py": "from pipeline.stats.files import load_counts\n",
        "pipeline/stats/__init__.py": "",
        "pipeline/stats/files.py": "",
        "pipeline/training/__init__.py": "",
        "pipeline/training/run.py": "",
        "pipeline/cluster/__init__.py": "",
        "pipeline/cluster/submit.py": "import pipeline.training.run\n\n\ndef f():\n    import pipeline.training.run\n",
        "pipeline/cluster/grids.py": "",
        "pipeline/scores/__init__.py": "",
        "pipeline/scores/grid_scores.py": "from pipeline.cluster.grids import status\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert violations(tmp_path) == [
        "pipeline/cluster/submit.py:1: pipeline.training.run (cluster imports training inside functions only)",
        "pipeline/paths.py:1: pipeline.stats.files (root may not import stats)",
        "pipeline/scores/grid_scores.py:1: pipeline.cluster.grids (scores may import only pipeline.cluster.index)",
    ]
