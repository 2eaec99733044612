"""data.local: a downloaded dataset read in place from a copy already on disk (a cluster's shared storage)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from test_ade20k import install_fixture
from test_coco_stuff import write_miniature as write_coco
from test_pascal_context import write_miniature as write_pascal

from pipeline.config import with_overrides
from pipeline.datasets.download import download_dataset
from pipeline.datasets.prepare import MARKER, listing_fingerprint, prepare_dataset, source_fingerprint
from pipeline.errors import ConfigError, DataError
from stages.download import download_all


def official_ade20k(params, folder: Path) -> None:
    """The folder holding ADEChallengeData2016/ (and objectInfo150.csv), as the archive unpacks."""
    extracted = install_fixture(params).parent  # downloads/ade20k/ADEChallengeData2016 (the extraction folder)
    shutil.copytree(extracted, folder)


def official_pascal_context(params, folder: Path) -> None:
    """The folder holding VOCdevkit/VOC2010/ and trainval_merged.json."""
    voc, json_path = write_pascal(folder.parent / "build")
    shutil.copytree(voc, folder)
    shutil.copy(json_path, folder / "trainval_merged.json")


def official_coco_stuff(params, folder: Path) -> None:
    """The folder holding images/, annotations/ and imageLists/."""
    write_coco(folder)


BUILDERS = {"ade20k": official_ade20k, "pascal_context": official_pascal_context, "coco_stuff": official_coco_stuff}
# Where each local copy's content sits in the downloads folder, as `grar download` extracts it.
EXTRACTED = {
    "ade20k": {".": "ADEChallengeData2016"},
    "pascal_context": {
        "VOCdevkit": "VOCtrainval_03-May-2010/VOCdevkit",
        "trainval_merged.json": "trainval_merged.json",
    },
    "coco_stuff": {".": "cocostuff-10k-v1.1"},
}


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` with its size and modification time: what 'nothing written' compares."""
    return sorted((p.relative_to(root).as_posix(), p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*"))


def local_params(params, tmp_path: Path, name: str):
    folder = tmp_path / "shared" / name
    BUILDERS[name](params, folder)
    if name == "ade20k":  # install_fixture filled the downloads folder: keep only the shared copy
        shutil.rmtree(Path(params.data.downloads))
    return with_overrides(params, {"data.local": {name: str(folder)}}), folder


@pytest.mark.parametrize("name", BUILDERS)
def test_prepare_from_the_local_copy_equals_prepare_from_the_download_and_writes_nothing_there(params, tmp_path, name):
    local, folder = local_params(params, tmp_path, name)
    before = listing(folder)
    out = json.loads((prepare_dataset(local, name) / MARKER).read_text())
    assert listing(folder) == before
    downloads = Path(params.data.downloads) / name
    for entry, extracted in EXTRACTED[name].items():
        shutil.copytree(folder / entry, downloads / extracted) if (folder / entry).is_dir() else shutil.copy(
            folder / entry, downloads / extracted
        )
    downloaded = with_overrides(params, {"data.root": str(tmp_path / "from-downloads")})
    again = json.loads((prepare_dataset(downloaded, name) / MARKER).read_text())
    # the same content; the listing (modification times) is each copy's own
    assert {**again, "listing_sha256": None} == {**out, "listing_sha256": None}
    assert out["files"] > 0


@pytest.mark.parametrize("name", BUILDERS)
def test_download_fetches_nothing_for_a_local_dataset(params, tmp_path, server, capsys, name):
    local, folder = local_params(params, tmp_path, name)
    local = with_overrides(local, {"data.mirror": server.base, "data.datasets": [name]})
    paths = download_dataset(local, name)
    assert server.requests == []
    assert all(path == folder or folder in path.parents for path in paths)
    assert f"{name}: using the local copy {folder} (data.local.{name}); nothing downloaded" in capsys.readouterr().out
    manifest = download_all(local)
    assert manifest == {name: [str(path.resolve()) for path in paths]} and server.requests == []
    assert not (Path(params.data.downloads) / name).exists()


@pytest.mark.parametrize(
    "name, remove, missing",
    [
        ("ade20k", "ADEChallengeData2016", "ADEChallengeData2016/images"),
        ("pascal_context", "trainval_merged.json", "trainval_merged.json"),
        ("pascal_context", "VOCdevkit", "VOCdevkit/VOC2010/JPEGImages"),
        ("coco_stuff", "imageLists", "imageLists"),
    ],
)
def test_a_missing_entry_names_it_and_the_layout(params, tmp_path, name, remove, missing):
    local, folder = local_params(params, tmp_path, name)
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    expected = {
        "ade20k": "the folder holding ADEChallengeData2016/images/, ADEChallengeData2016/annotations/",
        "pascal_context": "the folder holding VOCdevkit/VOC2010/JPEGImages/, trainval_merged.json",
        "coco_stuff": "the folder holding images/, annotations/, imageLists/",
    }[name]
    for action in (download_dataset, prepare_dataset):
        with pytest.raises(DataError) as err:
            action(local, name)
        assert str(err.value) == (
            f"data.local.{name}: {folder / missing} not found; expected {expected} (as the official archives unpack)"
        )
    assert not Path(params.data.root, name).exists()


@pytest.mark.parametrize(
    "local, message",
    [
        (
            {"embedded": "/shared/x"},
            "data.local.embedded: only a downloaded dataset can be read from a local copy; "
            "allowed: ade20k, pascal_context, coco_stuff",
        ),
        ({"nope": "/shared/x"}, "data.local.nope: only a downloaded dataset"),
        (
            {"ade20k": "{root}/ade20k/x"},
            "data.local.ade20k: {root}/ade20k/x overlaps {root}/ade20k, where grar writes "
            "the prepared 'ade20k' dataset",
        ),
        (
            {"coco_stuff": "{downloads}"},
            "data.local.coco_stuff: {downloads} overlaps {downloads}, where grar writes downloads",
        ),
        ({"ade20k": ""}, "data.local.ade20k"),
    ],
)
def test_bad_local_settings_are_config_errors(params, local, message):
    fill = {"root": params.data.root, "downloads": params.data.downloads}
    local = {name: path.format(**fill) for name, path in local.items()}
    with pytest.raises(ConfigError, match=message.format(**fill).replace("(", r"\(")):
        with_overrides(params, {"data.local": local})


def test_a_folder_dataset_cannot_be_local(params, tmp_path):
    own = with_overrides(params, {"data.folders": {"mine": str(tmp_path / "mine")}})
    with pytest.raises(ConfigError, match="data.local.mine: only a downloaded dataset can be read from a local copy"):
        with_overrides(own, {"data.local": {"mine": str(tmp_path / "mine")}})


def test_the_source_fingerprint_follows_the_local_folder(params, tmp_path):
    local, folder = local_params(params, tmp_path, "coco_stuff")
    first = source_fingerprint(local, "coco_stuff")
    assert first["source"] == "local" and first["path"] == str(folder.resolve()) and first["files"] == 6
    assert source_fingerprint(local, "coco_stuff") == first
    image = next((folder / "images").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1))
    touched = source_fingerprint(local, "coco_stuff")
    assert touched["listing_sha256"] != first["listing_sha256"] and touched["files"] == 6
    (folder / "imageLists" / "extra.txt").write_text("x\n")
    assert source_fingerprint(local, "coco_stuff")["files"] == 7
    assert source_fingerprint(params, "coco_stuff") == {"dataset": "coco_stuff", "source": "built-in"}


def test_the_listing_fingerprint_is_the_one_folder_datasets_had(tmp_path):
    """Same value as the rglob listing before scandir (so no folder dataset re-prepares): path order by components."""
    for name in ("a/b.png", "a-c.png", "a/b/c.txt", "z.jpg", ".hidden", "a/b-d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "link").symlink_to(tmp_path / "a")  # a link to a folder is not followed
    digest = hashlib.sha256()
    files = size = 0
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(tmp_path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files, size = files + 1, size + stat.st_size
    assert listing_fingerprint(tmp_path) == {"files": files, "bytes": size, "listing_sha256": digest.hexdigest()}
    assert files == 6
