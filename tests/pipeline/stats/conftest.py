"""Fixtures of the statistics tests: the toy label set of ``stats_toy``, alone or as a prepared dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stats_toy import LABELS, NAMES, REPO, write_classes, write_label


@pytest.fixture
def toy_labels(tmp_path) -> Path:
    """The toy label folder (labels only)."""
    for stem, values in LABELS.items():
        write_label(tmp_path / "labels" / f"{stem}.png", values)
    return tmp_path / "labels"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A working folder with the project's params.yaml and the toy set prepared as dataset ``embedded``."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    root = tmp_path / "data" / "embedded"
    (root / "train" / "images").mkdir(parents=True)
    write_classes(root / "classes.csv", NAMES)
    for stem, values in LABELS.items():
        write_label(root / "train" / "labels" / f"{stem}.png", values)
        height, width = np.asarray(values).shape
        Image.new("RGB", (width, height), (9, 99, 199)).save(root / "train" / "images" / f"{stem}.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path
