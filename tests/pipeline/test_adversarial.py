"""Careless flags and hostile input, tried as a user would: one line, a non-zero exit, nothing that existed changed.

Each case runs ``grar`` in a scratch project holding label maps ``L/``, a
folder of the user's ``thesis/`` (with ``a.tex``), the embedded profile as
``params.yaml`` and whatever the case adds; the whole tree is hashed before
and after.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb to PIL) with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def setup(root: Path, case: str) -> None:
    """The scratch project, plus what ``case`` needs."""
    (root / "L").mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 5), i, np.uint8), mode="L").save(root / "L" / f"{i}.png")
    (root / "thesis").mkdir()
    (root / "thesis" / "a.tex").write_text("\\section{Results}\n")
    raw = yaml.safe_load((REPO / "profiles" / "embedded.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    if case == "bad-utf8":
        (root / "bad.yaml").write_bytes(b"profile: caf\xe9\n")
    if case == "dup":
        (root / "dup.yaml").write_text("profile: x\nseed: 0\nseed: 1\n")
    if case == "bomb":
        (root / "B").mkdir()
        (root / "B" / "0.png").write_bytes(png_header_only(15000, 15000))
    if case == "over-limit":  # 50,010,000 pixels: below PIL's bomb limit, above grar's MAX_IMAGE_PIXELS
        (root / "H").mkdir()
        (root / "H" / "0.png").write_bytes(png_header_only(10000, 5001))
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
    if case == "alias-bomb":
        levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        levels += [f"{b}: &{b} [" + ", ".join([f"*{a}"] * 9) + "]" for a, b in zip("abcdefgh", "bcdefghi")]
        (root / "bomb.yaml").write_text(yaml.safe_dump(raw) + "x:\n" + "".join(f"  {line}\n" for line in levels))
    if case == "16bit":
        (root / "G").mkdir()
        for i in range(3):
            Image.fromarray(np.full((4, 5), i, np.uint16)).save(root / "G" / f"{i}.png")
    if case == "overlap-folder":
        (root / "data" / "mine").mkdir(parents=True)
        (root / "data" / "mine" / "classes.csv").write_text("id,name\n0,a\n")
        raw["data"]["folders"] = {"mine": "data/mine"}
        (root / "params.yaml").write_text(yaml.safe_dump(raw))


CASES = [
    # (name, argv, exit status, message)
    (
        "stats-out-is-input",
        ["stats", "--labels", "L", "--num-classes", "5", "--out", "L"],
        2,
        "--out L: overlaps the input L; write elsewhere",
    ),
    (
        "stats-out-holds-input",
        ["stats", "--labels", "L", "--num-classes", "5", "--out", "."],
        2,
        "--out .: overlaps the input L",
    ),
    (
        "stats-out-inside-input",
        ["stats", "--labels", "L", "--num-classes", "5", "--out", "L/stats"],
        2,
        "--out L/stats: overlaps the input L",
    ),
    (
        "stats-out-foreign",
        ["stats", "--labels", "L", "--num-classes", "5", "--out", "thesis"],
        2,
        "--out thesis: exists, is not empty and was not written by grar",
    ),
    (
        "stats-out-file",
        ["stats", "--labels", "L", "--num-classes", "5", "--out", "thesis/a.tex"],
        2,
        "--out thesis/a.tex: exists and is not a folder",
    ),
    (
        "stats-300-classes",
        ["stats", "--labels", "L", "--num-classes", "300", "--out", "S"],
        2,
        "number of classes 300: must be 1..255 for 8-bit labels",
    ),
    (
        "stats-bomb",
        ["stats", "--labels", "B", "--num-classes", "5", "--out", "S"],
        1,
        "B/0.png: unreadable or truncated PNG (Image size (225000000 pixels) exceeds limit",
    ),
    (
        "stats-read-only-fs",
        ["stats", "--labels", "L", "--num-classes", "5", "--out", "/proc/grar-out"],
        1,
        "/proc/grar-out: No such file or directory",
    ),
    (
        "evaluate-json-is-input",
        ["evaluate", "--pred", "L", "--gt", "L", "--num-classes", "5", "--json", "L"],
        2,
        "--json L: overlaps the input L",
    ),
    (
        "evaluate-json-inside-input",
        ["evaluate", "--pred", "L", "--gt", "L", "--num-classes", "5", "--json", "L/scores.json"],
        2,
        "--json L/scores.json: overlaps the input L",
    ),
    (
        "evaluate-json-foreign",
        ["evaluate", "--pred", "L", "--gt", "L", "--num-classes", "5", "--json", "thesis/a.tex"],
        2,
        "--json thesis/a.tex: exists and was not written by grar",
    ),
    (
        "evaluate-json-folder",
        ["evaluate", "--pred", "L", "--gt", "L", "--num-classes", "5", "--json", "thesis"],
        2,
        "--json thesis: is a folder; give the path of a file",
    ),
    (
        "evaluate-500-classes",
        ["evaluate", "--pred", "L", "--gt", "L", "--num-classes", "500"],
        2,
        "--num-classes 500: must be 1..255",
    ),
    (
        "evaluate-classes-folder",
        ["evaluate", "--pred", "L", "--gt", "L", "--num-classes", "5", "--classes", "thesis"],
        1,
        "thesis: cannot read the class table",
    ),
    (
        "evaluate-16-bit",
        ["evaluate", "--pred", "L", "--gt", "G", "--num-classes", "5"],
        1,
        "label image has mode 'I;16'",
    ),
    ("params-not-utf8", ["config", "--params", "bad.yaml"], 2, "bad.yaml: line 1: not UTF-8 text (byte 0xe9)"),
    (
        "params-duplicate-key",
        ["config", "--params", "dup.yaml"],
        2,
        "dup.yaml: line 3: duplicate key 'seed' (first on line 2)",
    ),
    ("params-is-folder", ["config", "--params", "thesis"], 2, "thesis: is a folder, not a parameters file"),
    (
        "lr-inf",
        ["config", "--set", "train.schedules.embedded.lr=.inf"],
        2,
        "train.schedules.embedded.lr: input should be a finite number (got inf)",
    ),
    ("loss-nan", ["config", "--set", "train.loss.sr=.nan"], 2, "train.loss.sr: input should be a finite number"),
    (
        "sbatch-newline",
        ["config", "--set", 'executor.slurm.partition="gpu\\n#SBATCH --wrap=rm"'],
        2,
        "executor.slurm.partition: must not hold line breaks or other control characters",
    ),
    (
        "sbatch-key",
        ["config", "--set", 'executor.slurm.additional={"qos x": 1}'],
        2,
        "executor.slurm.additional.qos x: string should match pattern",
    ),
    (
        "train-out-foreign",
        ["train", "--out", "thesis"],
        2,
        "run folder thesis: exists, is not empty and was not written by grar",
    ),
    ("train-out-file", ["train", "--out", "thesis/a.tex"], 2, "run folder thesis/a.tex: exists and is not a folder"),
    ("predict-out-is-input", ["predict", "norun", "L", "--out", "L"], 2, "--out L: overlaps the input L"),
    (
        "predict-out-foreign",
        ["predict", "norun", "L", "--out", "thesis"],
        2,
        "--out thesis: exists, is not empty and was not written by grar predict",
    ),
    (
        "bench-json-foreign",
        ["bench", "modules", "--json", "thesis/a.tex"],
        2,
        "--json thesis/a.tex: exists and was not written",
    ),
    ("bench-json-folder", ["bench", "modules", "--json", "thesis"], 2, "--json thesis: is a folder"),
    (
        "prepare-into-own-folder",
        ["prepare", "mine"],
        2,
        "data.folders.mine: data/mine overlaps data/mine, where grar writes the prepared 'mine' dataset",
    ),
    ("prepare-path-name", ["prepare", "../etc"], 2, "unknown dataset '../etc'"),
    ("stats-unknown-dataset", ["stats", "../etc"], 2, "dataset '../etc' unknown"),
    ("grid-unknown", ["grid", "status", "table9"], 2, "grid 'table9' not in grid.grids"),
    (
        "params-alias-bomb",  # nine levels of nine aliases: 387 million values once expanded
        ["config", "--params", "bomb.yaml"],
        2,
        "more than 100,000 values with aliases expanded (an alias bomb?)",
    ),
    (
        "stats-over-limit",
        ["stats", "--labels", "H", "--num-classes", "5", "--out", "S"],
        1,
        "H/0.png: 10000x5001 pixels (50.0 Mpx), more than the 50 Mpx grar decodes "
        "(pipeline.datasets.layout.MAX_IMAGE_PIXELS); scale it down or cut it into tiles first",
    ),
    (
        "evaluate-over-limit",
        ["evaluate", "--pred", "H", "--gt", "H", "--num-classes", "5"],
        1,
        "H/0.png: 10000x5001 pixels (50.0 Mpx), more than the 50 Mpx grar decodes",
    ),
    (
        "predict-over-limit",
        ["predict", "norun", "H", "--out", "P"],
        1,
        "H/0.png: 10000x5001 pixels (50.0 Mpx), more than the 50 Mpx grar decodes",
    ),
]
SETUP = {
    "params-not-utf8": "bad-utf8",
    "params-duplicate-key": "dup",
    "stats-bomb": "bomb",
    "evaluate-16-bit": "16bit",
    "prepare-into-own-folder": "overlap-folder",
    "params-alias-bomb": "alias-bomb",
    "stats-over-limit": "over-limit",
    "evaluate-over-limit": "over-limit",
    "predict-over-limit": "over-limit",
}


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file (and '<dir>' for every folder) under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
        for p in sorted(root.rglob("*"))
    }


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25 and len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "argv", "status", "message"), CASES, ids=[case[0] for case in CASES])
def test_case(name, argv, status, message, tmp_path, monkeypatch, capsys):
    setup(tmp_path, SETUP.get(name, name))
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    assert main(argv) == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err  # one line (progress bars aside), never a traceback
    assert lines[0].split("\r")[-1].startswith("grar: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    assert tree(tmp_path) == before


def test_class_names_are_drawn_literally(tmp_path, monkeypatch, capsys):
    setup(tmp_path, "names")
    (tmp_path / "classes.csv").write_text("id,name\n0,$\\alpha$\n1,cost $5\n2,_{x}^2\n3,d\n4,e\n")
    monkeypatch.chdir(tmp_path)
    assert main(["stats", "--labels", "L", "--num-classes", "5", "--classes", "classes.csv", "--out", "S"]) == 0
    svg = (tmp_path / "S" / "heatmap.svg").read_text()
    assert "$\\alpha$" in svg and "cost $5" in svg
