"""The paper's Tables 1-6 as data: spot checks against the published text, and the schema check."""

from __future__ import annotations

import pytest
import yaml

from pipeline.errors import DataError
from pipeline.paper import PAPER_TABLES, load_paper_tables

# Rows per table as printed in the paper (ICCV 2021, section 4).
ROW_COUNTS = {1: 6, 2: 7, 3: 5, 4: 24, 5: 22, 6: 14}


@pytest.fixture(scope="module")
def tables():
    return load_paper_tables()


def test_six_tables_with_citation_caption_and_rows(tables):
    assert sorted(tables) == [1, 2, 3, 4, 5, 6]
    for number, table in tables.items():
        assert table.source == f"Ding et al., ICCV 2021, Table {number}"
        assert table.caption and table.columns
        assert len(table.rows) == ROW_COUNTS[number]
        assert all(list(row) == [c.key for c in table.columns] for row in table.rows)
        assert table.columns[-1].key == "miou" and all(isinstance(row["miou"], float) for row in table.rows)
    assert [tables[n].dataset for n in (4, 5, 6)] == ["pascal_context", "ade20k", "coco_stuff"]


def test_table1_spot_checks(tables):
    table = tables[1]
    assert table.caption == "Ablation Study on PASCAL-Context. Baseline is dilated FCN, MS means multi-scale testing."
    assert table.rows[-1] == {"backbone": "ResNest-101", "grar": True, "sr_loss": True, "ms": True, "miou": 57.0}
    assert table.find(backbone="ResNet-50", grar=False)["miou"] == 42.3
    assert table.find(backbone="ResNet-50", grar=True, sr_loss=False)["miou"] == 51.7
    assert table.find(backbone="ResNet-101", ms=False)["miou"] == 54.8


def test_table2_spot_checks(tables):
    table = tables[2]
    assert table.find(pos=True, neg=False, affinity="Conv")["miou"] == 48.1
    assert table.find(pos=False, neg=True, affinity="Graph")["miou"] == 49.3
    assert table.find(pos=True, neg=True, affinity="Graph")["miou"] == 51.7
    assert table.rows[0]["affinity"] == "N.A."


def test_table3_spot_checks(tables):
    table = tables[3]
    assert table.input_shape == (1, 2048, 68, 68)
    assert table.find(method="GRAr (ours)") == {
        "method": "GRAr (ours)",
        "ref": None,
        "parameters": 2.4,
        "memory": 95.0,
        "time": 42.0,
        "miou": 51.7,
    }
    assert table.find(method="DANet") == {
        "method": "DANet",
        "ref": 20,
        "parameters": 10.6,
        "memory": 668.0,
        "time": 101.0,
        "miou": 50.6,
    }
    units = {c.key: c.unit for c in table.columns}
    assert (units["parameters"], units["memory"], units["time"], units["miou"]) == ("M", "M", "ms", "%")


def test_tables_4_to_6_spot_checks(tables):
    assert tables[4].find(method="OCR", backbone="HRNetV2-W48")["miou"] == 56.2
    assert tables[4].find(method="Ours", backbone="ResNest101")["miou"] == 57.0
    assert tables[4].rows[0] == {"method": "FCN-8s", "ref": 56, "backbone": "VGG16", "miou": 39.1}
    assert tables[5].find(method="RefineNet")["backbone"] == "ResNet152"
    assert tables[5].find(method="Ours", backbone="ResNet101")["miou"] == 47.1
    assert tables[6].find(method="FCN") == {"method": "FCN", "ref": 6, "backbone": "VGG16", "miou": 22.7}
    assert tables[6].find(method="Ours", backbone="ResNest101")["miou"] == 42.6
    with pytest.raises(KeyError, match="Table 4: 2 rows match"):
        tables[4].find(method="OCR")


def broken(tmp_path, edit):
    """A copy of the tables file with ``edit`` applied to its parsed content."""
    raw = yaml.safe_load(PAPER_TABLES.read_text(encoding="utf-8"))
    edit(raw["tables"])
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t[2].update(source="Ding et al. 2021"),
            "tables[2]: source 'Ding et al. 2021', expected 'Ding et al., ICCV 2021, Table 3'",
        ),
        (lambda t: t[0]["rows"][1].pop(), "tables[0].rows[1]: expected a list of 5 values"),
        (lambda t: t[0]["rows"][2].__setitem__(4, "53.0"), "tables[0].rows[2]: miou = '53.0' is not float"),
        (lambda t: t[3]["rows"][0].__setitem__(1, "56"), "tables[3].rows[0]: ref = '56' is not int?"),
        (lambda t: t[3]["rows"][0].__setitem__(2, None), "tables[3].rows[0]: backbone = None is not str"),
        (lambda t: t[1]["rows"][0].__setitem__(1, 1), "tables[1].rows[0]: pos = 1 is not bool"),
        (lambda t: t[4].update(year=2021), "tables[4]: unknown key(s) year"),
        (lambda t: t[5].pop("caption"), "tables[5]: missing key(s) caption"),
        (lambda t: t[5].update(dataset="coco"), "tables[5]: dataset 'coco'; allowed: embedded, ade20k"),
        (lambda t: t[0]["columns"][0].update(type="text"), "tables[0].columns[0]: type 'text'; allowed: str, bool"),
        (lambda t: t.pop(0), "tables[0]: number 2, expected 1"),
        (lambda t: t.clear(), "expected a non-empty list 'tables'"),
    ],
    ids=[
        "source",
        "row-length",
        "string-number",
        "string-ref",
        "null-backbone",
        "int-as-bool",
        "unknown-key",
        "missing-key",
        "dataset",
        "column-type",
        "order",
        "empty",
    ],
)
def test_schema_errors_name_the_entry(tmp_path, edit, message):
    path = broken(tmp_path, edit)
    with pytest.raises(DataError) as info:
        load_paper_tables(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
