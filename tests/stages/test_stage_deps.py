"""dvc.yaml's deps name exactly the code each stage runs: every project file it imports, and nothing else.

Each stage's command is ``python -m stages.<name> ...``. Its imports are followed
from ``stages/<name>.py`` through the project (``pipeline``, ``model``,
``stages``), transitively: module-level imports, imports inside functions (lazy
ones), and module names written as strings (``importlib.import_module`` of a
dataset's converter, a ``grar`` subcommand). Importing ``a.b.c`` also runs
``a/__init__.py`` and ``a/b/__init__.py``. A module that reads a tracked data
file (``DATA_FILES``) brings that file along.

A stage's code deps (its deps under ``pipeline/``, ``model/``, ``stages/`` and
``reports/``) must then:

* cover every file it reaches (else a change to that file would not re-run the
  stage: DVC's promise broken silently);
* each be reached: a file dep is imported (or read), and a folder dep is named
  only when the stage reaches every Python file under it (else a change to code
  the stage never runs would re-run it: a report change retraining, say).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "model", "stages")
CODE_ROOTS = (*PACKAGES, "reports")
# Tracked data files a module reads at run time, by path: the module and the file it names.
DATA_FILES = {"pipeline/paper.py": ("paper_tables.yaml", "reports/paper_tables.yaml")}
COMMAND = re.compile(r"^python -m (stages\.\w+)\b")


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (a package's ``__init__.py``), ``None`` when it is not one."""
    base = REPO.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


@cache
def imported_by(path: Path) -> frozenset[Path]:
    """The project files that importing ``path`` runs directly (see the module docstring)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule imported by name
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "." in node.value
            and node.value.split(".")[0] in PACKAGES
            and module_file(node.value) is not None
        ):
            names.add(node.value)  # importlib.import_module("pipeline.datasets.ade20k")
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] in PACKAGES:
            files.update(f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))) is not None)
    return frozenset(files)


def missing_modules(path: Path) -> list[str]:
    """The project modules ``path`` imports (``import a.b``, ``from a.b import c``) that do not exist."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        missing += [
            f"{name} (line {node.lineno})"
            for name in names
            if name.split(".")[0] in PACKAGES and module_file(name) is None
        ]
    return missing


def reached(module: str) -> set[str]:
    """Every project file (repository-relative) that ``python -m <module>`` runs, and the data files they read."""
    parts = module.split(".")
    todo = [module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path is not None and path not in seen:
            seen.add(path)
            todo.extend(imported_by(path))
    files = {path.relative_to(REPO).as_posix() for path in seen}
    for reader, (_, data) in DATA_FILES.items():
        if reader in files:
            files.add(data)
    return files


def package_data(files: set[str]) -> set[str]:
    """The non-Python files inside the project's packages whose folder holds a reached module (templates)."""
    found = set()
    for folder in {str(Path(f).parent) for f in files if f.endswith(".py")}:
        for path in (REPO / folder).iterdir():
            if path.is_file() and path.suffix != ".py":
                found.add(path.relative_to(REPO).as_posix())
        for sub in (REPO / folder).iterdir():  # data folders without Python files (pipeline/report/templates)
            if sub.is_dir() and sub.name != "__pycache__" and not any(sub.rglob("*.py")):
                found.update(p.relative_to(REPO).as_posix() for p in sub.rglob("*") if p.is_file())
    return found


def stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (its module, its deps as written), ``foreach`` stages by their ``do`` template."""
    found = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"].items():
        body = stage.get("do", stage)
        match = COMMAND.match(body["cmd"])
        assert match, f"stage {name}: cmd {body['cmd']!r} is not `python -m stages.<name> ...`"
        found[name] = (match.group(1), [str(dep) for dep in body.get("deps", [])])
    return found


def code_deps(deps: list[str]) -> list[str]:
    """The deps that are project code or tracked sources (no ``${...}`` data paths)."""
    return [dep.rstrip("/") for dep in deps if "${" not in dep and dep.split("/")[0] in CODE_ROOTS]


def files_under(dep: str) -> set[str]:
    path = REPO / dep
    if path.is_file():
        return {dep}
    return {p.relative_to(REPO).as_posix() for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def exact_deps(files: set[str]) -> list[str]:
    """The shortest deps naming exactly ``files``: a folder where every Python file under it is in ``files``."""
    files = {f for f in files if f.split("/")[0] in CODE_ROOTS}

    def covered(folder: Path) -> bool:
        python = {p.relative_to(REPO).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
        return bool(python) and python <= files

    deps = set()
    for f in files:
        dep = f
        for parent in Path(f).parents:
            if parent == Path(".") or not covered(REPO / parent):
                break
            dep = parent.as_posix()
        deps.add(dep)
    return sorted(dep for dep in deps if not any(dep.startswith(other + "/") for other in deps))


STAGES = stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_imports_only_modules_that_exist(stage):
    """An import the follower could not resolve would drop out of the stage's files unseen: it fails here."""
    broken = {
        f: missing
        for f in sorted(reached(STAGES[stage][0]))
        if f.endswith(".py") and (missing := missing_modules(REPO / f))
    }
    assert not broken, f"stage {stage}: imports of modules that do not exist: {broken}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_deps_of_a_stage_cover_every_file_it_imports(stage):
    module, deps = STAGES[stage]
    code = code_deps(deps)
    for dep in code:
        assert (REPO / dep).exists(), f"stage {stage}: dep {dep} does not exist"
    covered = set().union(*(files_under(dep) for dep in code)) if code else set()
    files = reached(module)
    missing = sorted((files | package_data(files)) - covered)
    assert not missing, (
        f"stage {stage}: imports files its deps do not name: {', '.join(missing)}; "
        f"exactly what it runs: {', '.join(exact_deps(files))}"
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_deps_of_a_stage_name_nothing_it_does_not_run(stage):
    module, deps = STAGES[stage]
    files = reached(module)
    files |= package_data(files)
    for dep in code_deps(deps):
        under = {f for f in files_under(dep) if f.endswith(".py") or (REPO / dep).is_file()}
        unused = sorted(under - files)
        assert not unused, (
            f"stage {stage}: dep {dep} holds {', '.join(unused)}, which the stage never imports; "
            f"exactly what it runs: {', '.join(exact_deps(reached(module)))}"
        )
    written = code_deps(deps)
    assert len(written) == len(set(written)), f"stage {stage}: a dep is listed twice"


def test_the_import_follower_sees_lazy_and_dynamic_imports():
    """It would miss nothing the stages rely on: a function-level import and a converter named as a string."""
    prepare = reached("stages.prepare")
    assert "pipeline/datasets/ade20k.py" in prepare  # only named in PREPARERS, imported by importlib
    assert "pipeline/training/run.py" in reached("stages.train")  # imported inside CellJob's run_cell
    assert "reports/paper_tables.yaml" in reached("stages.bench")
    for reader, (mention, data) in DATA_FILES.items():  # the table cannot go stale: each reader names its file
        assert mention in (REPO / reader).read_text(encoding="utf-8") and (REPO / data).is_file(), reader


def test_a_report_change_never_retrains_and_a_training_change_never_reprepares():
    deps = {stage: code_deps(stage_deps) for stage, (_, stage_deps) in STAGES.items()}
    assert not any(dep.startswith("pipeline/report") for dep in deps["train"])
    for stage in ("download", "sources", "prepare", "stats", "weights"):
        assert not any(dep.startswith(("pipeline/training", "model", "pipeline/report")) for dep in deps[stage]), stage
