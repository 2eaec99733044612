"""The statistics recover the embedded dataset's known structure: scenes never mix, twins are told apart by context."""

from __future__ import annotations

import numpy as np
import pandas as pd
from stats_toy import REPO

from pipeline.config import load_params, with_overrides
from pipeline.datasets import embedded
from pipeline.stats.compute import StatsJob, build_stats


def test_embedded_scene_structure_is_recovered(tmp_path):
    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {
            "data.embedded.train_images": 40,
            "data.embedded.val_images": 1,
            "data.embedded.image_size": 32,
        },
    )
    embedded.prepare(params, tmp_path / "embedded")
    root = tmp_path / "embedded"
    result = build_stats(
        StatsJob(
            labels=root / "train" / "labels",
            out=tmp_path / "stats",
            classes=root / "classes.csv",
            images=root / "train" / "images",
            top_k=3,
            dataset="embedded",
            split="train",
        )
    )
    t = result.counts.t
    scene_of = {name: scene for scene, spec in embedded.SCENES.items() for name in spec.classes}
    scene = np.array([scene_of[name] for name in result.names])
    same = scene[:, None] == scene[None, :]
    assert (t[~same] == 0).all()  # classes of different scenes never co-occur
    assert result.counts.images == 40
    supporters = pd.read_parquet(tmp_path / "stats" / "supporters.parquet")
    for group in embedded.TWINS:
        for twin in group:
            mine = supporters[supporters.j_name == twin]
            backers = set(mine[mine.role == "supporter"].i_name)
            rivals = mine[mine.role == "opponent"]
            assert backers and {scene_of[name] for name in backers} == {scene_of[twin]}
            assert (rivals.t == 0).all() and scene_of[twin] not in {scene_of[name] for name in rivals.i_name}
