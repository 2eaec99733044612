"""The statistics files: their names, schemas (documented in ``pipeline.stats``), writer and readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DataError

COOCCURRENCE_PARQUET = "cooccurrence.parquet"
CLASSES_PARQUET = "classes.parquet"
SUPPORTERS_PARQUET = "supporters.parquet"
COOCCURRENCE_SCHEMA = pa.schema([("i", pa.int32()), ("j", pa.int32()), ("t", pa.int64()), ("f", pa.float64())])
CLASSES_SCHEMA = pa.schema([("id", pa.int32()), ("name", pa.string()), ("images", pa.int64()), ("pixels", pa.int64())])
SUPPORTERS_SCHEMA = pa.schema(
    [
        ("j", pa.int32()),
        ("j_name", pa.string()),
        ("role", pa.string()),
        ("rank", pa.int32()),
        ("i", pa.int32()),
        ("i_name", pa.string()),
        ("f", pa.float64()),
        ("t", pa.int64()),
    ]
)
METADATA_KEYS = (
    "dataset",
    "split",
    "images",
    "num_classes",
    "ignore_index",
    "normalisation",
    "inputs_sha256",
    "grar_version",
)


def write_parquet(path: Path, frame: pd.DataFrame, schema: pa.Schema, metadata: dict[str, str]) -> None:
    """Write ``frame`` with exactly ``schema``'s columns and types, and ``metadata`` as the schema metadata."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata({key: str(value) for key, value in metadata.items()})
    pq.write_table(table, path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The schema metadata of a statistics Parquet file, as text."""
    metadata = pq.read_schema(path).metadata or {}
    return {key.decode(): value.decode() for key, value in metadata.items()}


def load_affinity(path: str | Path, num_classes: int) -> np.ndarray:
    """The affinity ``f`` (Eq. 1) of a ``cooccurrence.parquet`` as a float32 (N, N) array, ``f[i, j]``.

    ``DataError`` when the file is missing or unreadable, holds another number
    of classes than ``num_classes``, or lacks some (i, j) rows.
    """
    return load_matrix(path, num_classes, "f", np.float32)


def load_counts(path: str | Path, num_classes: int) -> np.ndarray:
    """The co-occurrence counts ``t`` of a ``cooccurrence.parquet`` as an int64 (N, N) array (errors as above).

    The trainer recomputes ``f`` from them under its own ``stats.normalisation``.
    """
    return load_matrix(path, num_classes, "t", np.int64)


def load_matrix(path: str | Path, num_classes: int, column: str, dtype: type) -> np.ndarray:
    """Column ``column`` of a ``cooccurrence.parquet`` as a (N, N) ``dtype`` array indexed [i, j]."""
    path = Path(path)
    try:
        table = pq.read_table(path, columns=["i", "j", column])
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `grar stats NAME` (or `dvc repro`) first") from None
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a cooccurrence.parquet with columns i, j, {column} ({err})") from None
    stored = read_metadata(path).get("num_classes")
    if stored is not None and int(stored) != num_classes:
        raise DataError(f"{path}: affinity of {stored} classes, but {num_classes} classes were expected")
    i = table.column("i").to_numpy().astype(np.int64)
    j = table.column("j").to_numpy().astype(np.int64)
    inside = (i >= 0) & (i < num_classes) & (j >= 0) & (j < num_classes)
    if not inside.all():
        bad = int(np.flatnonzero(~inside)[0])
        raise DataError(f"{path}: row ({i[bad]}, {j[bad]}) is outside {num_classes} classes")
    seen = np.zeros(num_classes * num_classes, bool)
    seen[i * num_classes + j] = True
    if len(i) != seen.size or not seen.all():
        raise DataError(
            f"{path}: {seen.size - int(seen.sum())} of {seen.size} (i, j) rows missing "
            f"({len(i)} rows for {num_classes} classes)"
        )
    matrix = np.zeros((num_classes, num_classes), dtype)  # (N, N)
    matrix[i, j] = table.column(column).to_numpy()
    return matrix
