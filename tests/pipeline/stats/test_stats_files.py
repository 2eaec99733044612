"""``load_affinity`` for the model, and the class-table reader."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stats_toy import T, write_classes

from pipeline.datasets.layout import read_classes
from pipeline.errors import DataError
from pipeline.stats import load_affinity
from pipeline.stats.affinity import frequency
from pipeline.stats.compute import StatsJob, build_stats
from pipeline.stats.files import read_metadata


@pytest.fixture
def cooccurrence(toy_labels, tmp_path):
    build_stats(StatsJob(labels=toy_labels, out=tmp_path / "stats", num_classes=5))
    return tmp_path / "stats" / "cooccurrence.parquet"


def test_load_affinity_round_trip(cooccurrence):
    f = load_affinity(cooccurrence, 5)
    assert f.dtype == np.float32 and f.shape == (5, 5)
    np.testing.assert_array_equal(f, frequency(T, "printed").astype(np.float32))
    assert read_metadata(cooccurrence)["num_classes"] == "5"


def test_load_affinity_wrong_class_count(cooccurrence):
    with pytest.raises(DataError, match=r"cooccurrence\.parquet: affinity of 5 classes, but 6 classes were expected"):
        load_affinity(cooccurrence, 6)


def test_load_affinity_missing_rows(cooccurrence, tmp_path):
    table = pq.read_table(cooccurrence)
    pq.write_table(table.slice(0, 24), tmp_path / "cut.parquet")
    with pytest.raises(DataError, match=r"cut\.parquet: 1 of 25 \(i, j\) rows missing \(24 rows for 5 classes\)"):
        load_affinity(tmp_path / "cut.parquet", 5)
    pq.write_table(pa.concat_tables([table.slice(0, 24), table.slice(0, 1)]), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"1 of 25 \(i, j\) rows missing \(25 rows"):
        load_affinity(tmp_path / "dup.parquet", 5)  # (0, 0) twice, (4, 4) never
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "plain.parquet")
    with pytest.raises(DataError, match=r"row \(0, 4\) is outside 4 classes"):
        load_affinity(tmp_path / "plain.parquet", 4)


def test_load_affinity_missing_or_foreign_file(tmp_path):
    with pytest.raises(DataError, match="not found; run `grar stats NAME`"):
        load_affinity(tmp_path / "none.parquet", 5)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a cooccurrence.parquet"):
        load_affinity(tmp_path / "junk.parquet", 5)


def test_read_classes(tmp_path):
    path = write_classes(tmp_path / "classes.csv", ["wall", "building, edifice", "sky"])
    assert read_classes(path) == ["wall", "building, edifice", "sky"]
    assert read_classes(path, 3) == ["wall", "building, edifice", "sky"]
    path.write_text("id,name,stuff\n0,wall,1\n1,person,0\n")
    assert read_classes(path) == ["wall", "person"]  # extra columns are fine
    path.write_bytes(b"id,name\n0,\xff\n")
    with pytest.raises(DataError, match="cannot read the class table"):
        read_classes(path)
