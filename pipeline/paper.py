"""The paper's published Tables 1-6 as data: ``reports/paper_tables.yaml``, loaded and checked.

The YAML file documents its schema in its header. ``load_paper_tables`` checks
every table against it (keys, citation text, column types, row lengths) and
returns ``PaperTable`` objects whose rows are mappings from column key to value,
so a report can put the paper's number beside a measured one::

    tables = load_paper_tables()
    tables[1].find(backbone="ResNet-50", grar=True, sr_loss=False)["miou"]  # 51.7
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import BUILTIN_DATASETS
from pipeline.errors import DataError
from pipeline.safe_yaml import read_yaml

PAPER_TABLES = Path(__file__).resolve().parents[1] / "reports" / "paper_tables.yaml"
CITATION = "Ding et al., ICCV 2021, Table {number}"
COLUMN_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "bool": (bool,), "int": (int,), "float": (int, float)}
TABLE_KEYS = {"number", "source", "caption", "dataset", "columns", "rows"}
OPTIONAL_TABLE_KEYS = {"notes", "input_shape"}
COLUMN_KEYS = {"key", "header", "type"}
OPTIONAL_COLUMN_KEYS = {"unit"}


@dataclass(frozen=True)
class Column:
    """One printed column: ``key`` for code, ``header`` as printed, value ``type``, ``unit`` as printed."""

    key: str
    header: str
    type: str  # str | bool | int | float, with a trailing "?" when null is allowed
    unit: str | None = None


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper: its caption, citation, columns and rows (column key -> value)."""

    number: int
    source: str
    caption: str
    dataset: str
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None

    def find(self, **match: Any) -> dict[str, Any]:
        """The one row whose values equal ``match``; ``KeyError`` when none or several do."""
        found = [row for row in self.rows if all(row[key] == value for key, value in match.items())]
        if len(found) != 1:
            raise KeyError(f"Table {self.number}: {len(found)} rows match {match}")
        return found[0]


def load_paper_tables(path: str | os.PathLike = PAPER_TABLES) -> dict[int, PaperTable]:
    """Table number -> ``PaperTable``, checked against the schema; ``DataError`` naming the entry otherwise."""
    path = Path(path)
    raw = read_yaml(path).get("tables")
    _check(isinstance(raw, list) and raw, f"{path}: expected a non-empty list 'tables'")
    tables: dict[int, PaperTable] = {}
    for index, entry in enumerate(raw):
        table = _table(entry, f"{path}: tables[{index}]")
        _check(table.number == index + 1, f"{path}: tables[{index}]: number {table.number}, expected {index + 1}")
        tables[table.number] = table
    return tables


def _check(condition: Any, message: str) -> None:
    if not condition:
        raise DataError(message)


def _keys(entry: Any, required: set[str], optional: set[str], where: str) -> None:
    _check(isinstance(entry, dict), f"{where}: expected a mapping")
    missing, unknown = required - entry.keys(), entry.keys() - required - optional
    _check(not missing, f"{where}: missing key(s) {', '.join(sorted(missing))}")
    _check(not unknown, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _matches(value: Any, type_name: str) -> bool:
    """Whether ``value`` has column type ``type_name`` (``bool`` is not taken for ``int``)."""
    if type_name.endswith("?") and value is None:
        return True
    base = type_name.rstrip("?")
    return isinstance(value, COLUMN_TYPES[base]) and (base == "bool" or not isinstance(value, bool))


def _value(value: Any, type_name: str) -> Any:
    """``value`` as stored: float columns hold floats even where the YAML has an int (226, not 226.0)."""
    return float(value) if type_name.rstrip("?") == "float" and value is not None else value


def _column(entry: Any, where: str) -> Column:
    _keys(entry, COLUMN_KEYS, OPTIONAL_COLUMN_KEYS, where)
    column = Column(**entry)
    _check(
        column.type.rstrip("?") in COLUMN_TYPES,
        f"{where}: type {column.type!r}; allowed: {', '.join(COLUMN_TYPES)} (optionally with a trailing ?)",
    )
    return column


def _table(entry: Any, where: str) -> PaperTable:
    _keys(entry, TABLE_KEYS, OPTIONAL_TABLE_KEYS, where)
    number = entry["number"]
    _check(
        entry["source"] == CITATION.format(number=number),
        f"{where}: source {entry['source']!r}, expected {CITATION.format(number=number)!r}",
    )
    _check(isinstance(entry["caption"], str) and entry["caption"], f"{where}: caption must be non-empty text")
    datasets = BUILTIN_DATASETS
    _check(entry["dataset"] in datasets, f"{where}: dataset {entry['dataset']!r}; allowed: {', '.join(datasets)}")
    _check(isinstance(entry["columns"], list) and entry["columns"], f"{where}: columns must be a non-empty list")
    columns = tuple(_column(column, f"{where}.columns[{i}]") for i, column in enumerate(entry["columns"]))
    _check(len({c.key for c in columns}) == len(columns), f"{where}: duplicate column keys")
    _check(isinstance(entry["rows"], list) and entry["rows"], f"{where}: rows must be a non-empty list")
    rows = []
    for i, row in enumerate(entry["rows"]):
        _check(
            isinstance(row, list) and len(row) == len(columns),
            f"{where}.rows[{i}]: expected a list of {len(columns)} values ({', '.join(c.key for c in columns)})",
        )
        for column, value in zip(columns, row):
            _check(_matches(value, column.type), f"{where}.rows[{i}]: {column.key} = {value!r} is not {column.type}")
        rows.append({c.key: _value(v, c.type) for c, v in zip(columns, row)})
    return PaperTable(
        number=number,
        source=entry["source"],
        caption=entry["caption"],
        dataset=entry["dataset"],
        columns=columns,
        rows=tuple(rows),
        notes=tuple(entry.get("notes", ())),
        input_shape=tuple(entry["input_shape"]) if "input_shape" in entry else None,
    )
