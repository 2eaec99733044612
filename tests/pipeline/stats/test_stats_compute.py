"""A whole run: the three Parquet files (schemas, metadata, values), the figures, and atomic output."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stats_toy import NAMES, PIXELS, T, write_classes, write_label

from pipeline import __version__
from pipeline.errors import ConfigError, DataError
from pipeline.stats.affinity import frequency
from pipeline.stats.compute import StatsJob, build_stats
from pipeline.stats.supporters import supporters_frame

SCHEMAS = {
    "cooccurrence.parquet": [("i", pa.int32()), ("j", pa.int32()), ("t", pa.int64()), ("f", pa.float64())],
    "classes.parquet": [("id", pa.int32()), ("name", pa.string()), ("images", pa.int64()), ("pixels", pa.int64())],
    "supporters.parquet": [
        ("j", pa.int32()),
        ("j_name", pa.string()),
        ("role", pa.string()),
        ("rank", pa.int32()),
        ("i", pa.int32()),
        ("i_name", pa.string()),
        ("f", pa.float64()),
        ("t", pa.int64()),
    ],
}


@pytest.fixture
def job(toy_labels, tmp_path):
    classes = write_classes(tmp_path / "classes.csv", NAMES)
    return StatsJob(labels=toy_labels, out=tmp_path / "stats", classes=classes, top_k=2, dataset="toy", split="train")


def expected_sha(job):
    digest = hashlib.sha256()
    for name in ["a.png", "b.png", "c.png", "d.png"]:
        digest.update(name.encode() + b"\0" + hashlib.sha256((job.labels / name).read_bytes()).digest())
    digest.update(job.classes.read_bytes())
    return digest.hexdigest()


def test_schemas_and_metadata(job):
    build_stats(job)
    common = {
        "dataset": "toy",
        "split": "train",
        "images": "4",
        "num_classes": "5",
        "ignore_index": "255",
        "normalisation": "printed",
        "f_definition": "Eq. 1 as printed: f_ij = t_ij / (sum_k t_kj - t_jj)",
        "inputs_sha256": expected_sha(job),
        "grar_version": __version__,
    }
    for name, columns in SCHEMAS.items():
        schema = pq.read_schema(job.out / name)
        assert [(field.name, field.type) for field in schema] == columns
        metadata = {key.decode(): value.decode() for key, value in schema.metadata.items()}
        assert metadata == (common | {"top_k": "2"} if name == "supporters.parquet" else common)


def test_values(job):
    result = build_stats(job)
    cooccurrence = pd.read_parquet(job.out / "cooccurrence.parquet")
    assert len(cooccurrence) == 25
    np.testing.assert_array_equal(cooccurrence.i, np.repeat(np.arange(5), 5))
    np.testing.assert_array_equal(cooccurrence.j, np.tile(np.arange(5), 5))
    np.testing.assert_array_equal(cooccurrence.t.to_numpy().reshape(5, 5), T)
    np.testing.assert_array_equal(cooccurrence.f.to_numpy().reshape(5, 5), frequency(T, "printed"))
    np.testing.assert_array_equal(result.f, frequency(T, "printed"))
    classes = pd.read_parquet(job.out / "classes.parquet")
    assert list(classes.name) == NAMES
    assert list(classes.images) == [3, 1, 1, 3, 0] and list(classes.pixels) == PIXELS
    supporters = pd.read_parquet(job.out / "supporters.parquet")
    pd.testing.assert_frame_equal(supporters, supporters_frame(T, frequency(T, "printed"), NAMES, 2), check_dtype=False)


def test_conditional_is_recorded(job):
    build_stats(replace(job, normalisation="conditional"))
    f = pd.read_parquet(job.out / "cooccurrence.parquet").f.to_numpy().reshape(5, 5)
    np.testing.assert_array_equal(f, frequency(T, "conditional"))
    metadata = pq.read_schema(job.out / "cooccurrence.parquet").metadata
    assert metadata[b"normalisation"] == b"conditional"
    assert metadata[b"f_definition"] == b"conditional: f_ij = P(j | i) = t_ij / t_ii"


def test_one_and_two_workers_write_the_same_tables(job, tmp_path):
    build_stats(job)
    build_stats(replace(job, workers=2, out=tmp_path / "stats2"))
    for name in SCHEMAS:
        assert pq.read_table(job.out / name).equals(pq.read_table(tmp_path / "stats2" / name), check_metadata=True)


def test_figures(job):
    result = build_stats(job)
    names = sorted(str(path.relative_to(job.out)) for path in result.files)
    assert names == sorted(
        [
            "cooccurrence.parquet",
            "classes.parquet",
            "supporters.parquet",
            "heatmap.svg",
            "clusters/cluster_01.svg",
            "bars/classes_000-004.svg",
        ]
    )
    for path in result.files:
        assert path.is_file() and path.stat().st_size > 1000
    svg = (job.out / "heatmap.svg").read_text()
    assert "<svg" in svg and ">plane<" in svg and ">supported class j<" in svg  # names stay text: searchable
    assert sorted(p.name for p in job.out.iterdir()) == [
        ".grar-stats",
        "bars",
        "classes.parquet",
        "clusters",
        "cooccurrence.parquet",
        "heatmap.svg",
        "supporters.parquet",
    ]


def test_error_writes_nothing_and_keeps_the_previous_output(job, tmp_path):
    write_label(job.labels / "e.png", [[0, 9]])  # 9 >= K
    with pytest.raises(DataError, match=r"e\.png: label value 9"):
        build_stats(job)
    assert not job.out.exists()
    (job.labels / "e.png").unlink()
    build_stats(job)
    before = {p: p.read_bytes() for p in job.out.rglob("*") if p.is_file()}
    write_label(job.labels / "e.png", [[0, 1, 2]], mode="RGB")
    with pytest.raises(DataError, match="mode 'RGB'"):
        build_stats(replace(job, normalisation="conditional"))
    assert {p: p.read_bytes() for p in job.out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.csv", "labels", "stats"]  # no temporary left


def test_class_table_must_agree(job, tmp_path):
    write_classes(job.classes, NAMES[:3])  # 3 classes: the labels' 3 (grass) is out of range
    with pytest.raises(DataError, match=r"b\.png: label value 3 .* \(0\.\.2\)"):
        build_stats(job)
    with pytest.raises(DataError, match="class table has 3 classes but the labels have 5"):
        build_stats(replace(job, num_classes=5))
    job.classes.write_text("id,name\n0,sky\n2,plane\n")
    with pytest.raises(DataError, match=r"classes\.csv: row 3: id '2', expected 1"):
        build_stats(job)
    job.classes.write_text("id,name\n0,sky\n1,\n")
    with pytest.raises(DataError, match="class 1 has an empty name"):
        build_stats(job)
    job.classes.write_text("name\nsky\n")
    with pytest.raises(DataError, match="header with columns id,name"):
        build_stats(job)
    with pytest.raises(DataError, match="class table not found"):
        build_stats(replace(job, classes=tmp_path / "nowhere.csv"))
    assert not job.out.exists()


def test_settings_no_label_set_can_satisfy(job):
    with pytest.raises(ConfigError, match=r"ignore index 3: .*\(5\.\.255\)"):
        build_stats(replace(job, ignore_index=3))
    with pytest.raises(ConfigError, match="number of classes 300"):
        build_stats(replace(job, classes=None, num_classes=300))
    with pytest.raises(ConfigError, match="--num-classes"):
        build_stats(replace(job, classes=None))
    with pytest.raises(ConfigError, match="allowed: printed, conditional"):
        build_stats(replace(job, normalisation="rows"))


def test_without_class_table_names_are_ids(job):
    build_stats(replace(job, classes=None, num_classes=5))
    assert list(pd.read_parquet(job.out / "classes.parquet").name) == [f"class_{c}" for c in range(5)]
