"""ImageNet weights: `imagenet` resolution per backbone and stem, fetching (resume, mirror, local folder, foreign
file, PyTorch-Encoding's zips), the run hash."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from model.backbones import tiny_resnet
from pipeline import weights as weights_module
from pipeline.cli.main import main
from pipeline.config import load_params, with_overrides
from pipeline.errors import ConfigError, DataError
from pipeline.rundir import config_hash
from pipeline.training.build import build_segmentor
from pipeline.weights import PUBLISHED, fetch_weights, needed_files, pretrained_file

REPO = Path(__file__).resolve().parents[2]
FAKE = {  # small stand-ins for the published files: bytes whose checksums the test knows
    "resnet50": bytes(range(256)) * 601 + b"r50",  # 153,859 bytes: several blocks, odd
    "resnet101": b"resnet101 weights" * 999,
    "resnest101": b"resnest101 weights" * 77,
    "resnet50s": b"resnet50s weights" * 501,
    "resnet101s": b"resnet101s weights" * 33,
    "resnet50_v1c": b"resnet50_v1c weights" * 55,
    "resnet101_v1c": b"resnet101_v1c weights" * 66,
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def zipped(members: dict[str, bytes]) -> bytes:
    """A zip holding ``members`` (name -> bytes), as PyTorch-Encoding's model store serves its files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_name(name: str) -> str:
    return PUBLISHED[name].url.rsplit("/", 1)[1]


@pytest.fixture
def fake(server, monkeypatch):
    """PUBLISHED pointing at the loopback server: each published file name serves its stand-in, of known checksum
    (PyTorch-Encoding's: a zip holding it, with its full SHA-1, as encoding/models/model_store.py publishes them)."""
    table = {}
    for name, data in FAKE.items():
        archive = PUBLISHED[name]
        if archive.extract:
            server.files[zip_name(name)] = zipped({archive.filename: data})
            table[name] = dataclasses.replace(archive, url=server.url(zip_name(name)), checksum=sha1(data))
        else:
            server.files[archive.filename] = data
            table[name] = dataclasses.replace(archive, url=server.url(archive.filename), checksum=sha256(data)[:8])
    monkeypatch.setattr(weights_module, "PUBLISHED", table)
    return table


@pytest.fixture
def params(tmp_path):
    """The embedded profile with its weights under ``tmp_path/weights``, the grids as given per test."""
    root = tmp_path / "weights"
    return with_overrides(
        load_params(REPO / "profiles" / "embedded.yaml"),
        {
            "weights.root": str(root),
            "weights.files": {name: str(root / PUBLISHED[name].filename) for name in FAKE},
            "grid.grids": {},
        },
    )


def cells(*sets: dict) -> dict:
    return {"grid.grids": {"t": [{"name": f"c{i}", "set": s} for i, s in enumerate(sets)]}}


R50 = {"model.backbone": "resnet50", "model.pretrained": "imagenet"}


def test_nothing_is_fetched_when_no_config_loads_weights(params, fake, server, capsys):
    assert fetch_weights(with_overrides(params, cells({"model.head": "fcn"}))) == []
    assert server.requests == []
    assert (
        "model.pretrained is null in the base config and every grid cell: nothing to fetch" in capsys.readouterr().out
    )
    assert not Path(params.weights.root).exists()


def test_imagenet_resolves_per_grid_cell_to_the_backbone_file(params, tmp_path):
    mine = tmp_path / "mine.pth"
    config = with_overrides(
        params,
        cells(
            R50,
            {"model.head": "fcn"},
            {"model.backbone": "resnest101", "model.pretrained": "imagenet"},
            {**R50, "model.head": "fcn"},
            {"model.pretrained": str(mine)},
        ),
    )
    assert pretrained_file(config) is None
    found = [(item.path, item.name, item.published and item.published.key, item.where) for item in needed_files(config)]
    root = Path(params.weights.root)
    assert found == [
        (root / "resnet50-0676ba61.pth", "resnet50", "resnet50", "grid t cell c0"),
        (root / "resnest101-22405ba7.pth", "resnest101", "resnest101", "grid t cell c2"),
        (mine, "tiny_resnet", None, "grid t cell c4"),
    ]


def test_fetch_downloads_verifies_records_and_then_makes_no_request(params, fake, server, capsys):
    config = with_overrides(params, cells(R50))
    target = Path(params.weights.files["resnet50"])
    assert fetch_weights(config) == [target]
    assert target.read_bytes() == FAKE["resnet50"]
    assert server.requests == [(f"/{fake['resnet50'].filename}", None)]  # only the backbone the cell loads
    record = target.with_name("resnet50-0676ba61.pth.sha256")
    assert record.read_text() == f"{sha256(FAKE['resnet50'])}  resnet50-0676ba61.pth\n"
    assert "TRUST ON FIRST USE" in capsys.readouterr().out
    fetch_weights(config)
    assert len(server.requests) == 1


def test_interrupted_download_resumes(params, fake, server):
    server.drop_once.add(fake["resnet50"].filename)
    fetch_weights(with_overrides(params, cells(R50)))
    half = len(FAKE["resnet50"]) // 2
    assert [r[1] for r in server.requests] == [None, f"bytes={half}-"]
    assert Path(params.weights.files["resnet50"]).read_bytes() == FAKE["resnet50"]


def test_http_mirror_and_local_folder_replace_the_official_host(params, fake, server, tmp_path):
    name = fake["resnet101"].filename
    server.files[f"mirror/{name}"] = server.files.pop(name)
    config = with_overrides(
        params,
        {"model.backbone": "resnet101", "model.pretrained": "imagenet", "weights.mirror": f"{server.base}/mirror/"},
    )
    fetch_weights(config)
    assert server.requests == [(f"/mirror/{name}", None)]
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / fake["resnest101"].filename).write_bytes(FAKE["resnest101"])
    for mirror in (str(shared), shared.as_uri()):
        config = with_overrides(
            params, {"model.backbone": "resnest101", "model.pretrained": "imagenet", "weights.mirror": mirror}
        )
        fetch_weights(config, force=True)
        assert Path(params.weights.files["resnest101"]).read_bytes() == FAKE["resnest101"]
    assert len(server.requests) == 1


def test_a_foreign_file_is_named_and_never_replaced(params, fake, server):
    target = Path(params.weights.files["resnet50"])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    with pytest.raises(DataError) as err:
        fetch_weights(with_overrides(params, cells(R50)))
    assert str(err.value) == (
        f"{target}: not the expected file {fake['resnet50'].filename} from {fake['resnet50'].url} "
        f"(sha256 expected {sha256(FAKE['resnet50'])[:8]}..., "
        f"got {sha256(b'someone else' + chr(39).encode() + b's file')}); "
        f"left untouched: move it away (or point the params at it as a file of yours) and fetch again"
    )
    assert target.read_bytes() == b"someone else's file" and server.requests == []


def test_a_changed_file_fails_against_the_recorded_digest(params, fake, server):
    config = with_overrides(params, cells(R50))
    fetch_weights(config)
    target = Path(params.weights.files["resnet50"])
    target.write_bytes(FAKE["resnet50"][:-1] + b"X")
    with pytest.raises(DataError, match=f"expected {sha256(FAKE['resnet50'])}, got"):
        fetch_weights(config)


def test_a_corrupt_download_is_deleted(params, fake, server):
    server.files[fake["resnet50"].filename] = b"<html>not found</html>"
    with pytest.raises(DataError, match=f"corrupt download, deleted: sha256 expected {sha256(FAKE['resnet50'])[:8]} "):
        fetch_weights(with_overrides(params, cells(R50)))
    assert list(Path(params.weights.root).iterdir()) == []


def test_names_fetch_one_file_and_unknown_names_are_config_errors(params, fake, server):
    assert fetch_weights(params, ("resnest101",)) == [Path(params.weights.files["resnest101"])]
    assert server.requests == [(f"/{fake['resnest101'].filename}", None)]
    with pytest.raises(
        ConfigError,
        match="weights: no file 'tiny_resnet' in weights.files; it has: resnet50, resnet101, resnest101, resnet50s, ",
    ):
        fetch_weights(params, ("tiny_resnet",))


def test_a_missing_file_of_yours_is_named_with_its_cell(params, tmp_path):
    mine = tmp_path / "mine.pth"
    with pytest.raises(
        DataError, match=f"model.pretrained: {mine} \\(grid t cell c0\\): file not found; it is a file of yours"
    ):
        fetch_weights(with_overrides(params, cells({"model.pretrained": str(mine)})))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"model.pretrained": "imagenet"},
            "model.pretrained: imagenet: no ImageNet file is published for backbone 'tiny_resnet' with stem "
            "'standard' (published for: resnest101, resnet101, resnet50); set model.pretrained: null or a file's path",
        ),
        (
            {**R50, "model.stem": "deep", "weights.files": {"resnet50": "weights/resnet50-0676ba61.pth"}},
            "model.pretrained: imagenet: weights.files has no 'resnet50s' file for backbone 'resnet50' with stem "
            "'deep' (it has: resnet50); add weights.files.resnet50s, or set model.pretrained: null or a file's path",
        ),
        (
            {"weights.files.resnet50": "elsewhere/resnet50.pth"},
            "weights.files.resnet50: elsewhere/resnet50.pth must lie inside weights.root",
        ),
        ({"weights.files.tiny_resnet": "weights/t.pth"}, "weights.files.tiny_resnet"),
        ({"weights.mirror": 3}, "weights.mirror"),
    ],
)
def test_bad_weights_settings_are_config_errors(overrides, message):
    base = load_params(REPO / "profiles" / "embedded.yaml")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_overrides(base, overrides)


def test_a_grid_cell_loading_imagenet_without_a_file_is_named():
    base = load_params(REPO / "profiles" / "embedded.yaml")
    with pytest.raises(
        ConfigError, match="grid.grids.t cell 'c0': .*no ImageNet file is published for backbone 'tiny_resnet'"
    ):
        with_overrides(base, cells({"model.pretrained": "imagenet"}))


def test_the_run_hash_counts_only_the_run_backbone_file(params):
    r50 = with_overrides(params, R50)
    same = [
        with_overrides(r50, {"weights.files.resnest101": str(Path(params.weights.root) / "other.pth")}),
        with_overrides(r50, {"weights.mirror": "https://mirror.example.org/w"}),
        with_overrides(r50, {"weights.root": str(Path(params.weights.root).parent)}),
    ]
    assert {config_hash(config) for config in same} == {config_hash(r50)}
    moved = with_overrides(r50, {"weights.files.resnet50": str(Path(params.weights.root) / "r50-other.pth")})
    assert config_hash(moved) != config_hash(r50)
    # a run without pretrained weights does not depend on the weights section at all
    assert config_hash(with_overrides(params, {"weights.files": {}})) == config_hash(params)


def test_the_published_table_matches_torchvision_and_torch_hub():
    from torch.hub import HASH_REGEX
    from torchvision.models import ResNet50_Weights, ResNet101_Weights

    assert PUBLISHED["resnet50"].url == ResNet50_Weights.IMAGENET1K_V1.url
    assert PUBLISHED["resnet101"].url == ResNet101_Weights.IMAGENET1K_V1.url
    for archive in PUBLISHED.values():
        if archive.extract:  # PyTorch-Encoding: <name>-<sha1[:8]>.zip holding <name>-<sha1[:8]>.pth, full SHA-1
            assert archive.url.rsplit("/", 1)[1] == archive.filename.removesuffix(".pth") + ".zip"
            assert archive.algorithm == "sha1" and not archive.prefix and len(archive.checksum) == 40
            assert archive.filename == f"{archive.key}-{archive.checksum[:8]}.pth"
            continue
        assert archive.url.rsplit("/", 1)[1] == archive.filename
        assert HASH_REGEX.search(archive.filename).group(1) == archive.checksum  # what torch.hub verifies
        assert archive.algorithm == "sha256" and archive.prefix and len(archive.checksum) == 8
    # the sources' own figures (encoding/models/model_store.py _model_sha1 and its URL format; mmcv's
    # mmcv/model_zoo/open_mmlab.json for open-mmlab://resnet50_v1c and resnet101_v1c)
    encoding = "https://s3.us-west-1.wasabisys.com/encoding/models/"
    assert {name: (PUBLISHED[name].checksum, PUBLISHED[name].url) for name in ("resnet50s", "resnet101s")} == {
        "resnet50s": ("a75c83cfc89a56a4e8ba71b14f1ec67e923787b3", encoding + "resnet50s-a75c83cf.zip"),
        "resnet101s": ("03a0f310d6447880f1b22a83bd7d1aa7fc702c6e", encoding + "resnet101s-03a0f310.zip"),
    }
    openmmlab = "https://download.openmmlab.com/pretrain/third_party/"
    assert PUBLISHED["resnet50_v1c"].url == openmmlab + "resnet50_v1c-2cccc1ad.pth"
    assert PUBLISHED["resnet101_v1c"].url == openmmlab + "resnet101_v1c-e67eebb6.pth"
    for profile in ("embedded", "paper"):
        files = yaml.safe_load((REPO / "profiles" / f"{profile}.yaml").read_text())["weights"]["files"]
        assert {name: Path(path).name for name, path in files.items()} == {
            name: archive.filename for name, archive in PUBLISHED.items()
        }


def published_as(path: Path, monkeypatch, name: str = "resnet50") -> None:
    """Make the file at ``path`` the published file ``name`` (its digest: the prefix, or the full SHA-1 of
    PyTorch-Encoding's), as the real file would be: a miniature stands in for it."""
    archive = PUBLISHED[name]
    digest = hashlib.new(archive.algorithm, path.read_bytes()).hexdigest()
    checksum = digest if len(archive.checksum or "") == len(digest) else digest[:8]
    monkeypatch.setitem(weights_module.PUBLISHED, name, dataclasses.replace(archive, checksum=checksum))


def test_a_state_dict_of_another_backbone_names_the_expected_published_file(params, tmp_path, monkeypatch):
    path = Path(params.weights.files["resnet50"])
    path.parent.mkdir(parents=True)
    torch.save(tiny_resnet().body.state_dict(), path)
    published_as(path, monkeypatch)
    config = with_overrides(params, {**R50, "model.width": 16, "model.aux": False}).model
    with pytest.raises(DataError) as err:
        build_segmentor(config, 3, torch.eye(3), weights=params.weights)
    message = str(err.value)
    assert message.startswith(f"model.pretrained: {path}: keys do not match the resnet50 backbone: ")
    assert message.endswith(
        "; expected the published resnet50 ImageNet file resnet50-0676ba61.pth "
        "(torchvision ResNet50_Weights.IMAGENET1K_V1, 7x7 stem; https://download.pytorch.org/models/resnet50-0676ba61.pth)"
    )
    path.unlink()
    with pytest.raises(DataError, match=r"file not found; expected the published .*\(run `grar weights fetch`\)"):
        build_segmentor(config, 3, torch.eye(3), weights=params.weights)


def test_imagenet_weights_are_loaded_into_the_backbone(params, monkeypatch):
    """`imagenet` loads weights.files[backbone]; resnet50 is stubbed by the tiny backbone to stay fast."""
    from model import backbones
    from pipeline.training import build

    monkeypatch.setitem(build.BACKBONES, "resnet50", backbones.tiny_resnet)
    torch.manual_seed(3)
    source = tiny_resnet().body.state_dict()
    path = Path(params.weights.files["resnet50"])
    path.parent.mkdir(parents=True)
    torch.save(source, path)
    published_as(path, monkeypatch)
    config = with_overrides(params, {**R50, "model.width": 16}).model
    model = build_segmentor(config, 3, torch.eye(3), weights=params.weights)
    for key, value in source.items():
        torch.testing.assert_close(model.backbone.body.state_dict()[key], value)


def test_the_command_fetches_and_lists(params, fake, server, tmp_path, monkeypatch, capsys):
    raw = params.model_dump(mode="json")
    raw["grid"]["grids"] = {"t": [{"name": "r50", "set": R50}]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"resnet50      {params.weights.files['resnet50']}  missing; needed by grid t cell r50" in listed
    assert "resnest101" in listed and "not needed by these params" in listed
    # the deep-stem files, each with its source and URL
    for name, source in (
        ("resnet50s", "PyTorch-Encoding resnet50s, deep stem 64-64-128"),
        ("resnet101s", "PyTorch-Encoding resnet101s, deep stem 64-64-128"),
        ("resnet50_v1c", "mmsegmentation open-mmlab://resnet50_v1c, ResNetV1c deep stem 32-32-64"),
        ("resnet101_v1c", "mmsegmentation open-mmlab://resnet101_v1c, ResNetV1c deep stem 32-32-64"),
    ):
        assert f"{name:<13} {params.weights.files[name]}  missing; not needed by these params\n" in listed
        assert f"{'':<13} {source}, from {fake[name].url}\n" in listed
    assert main(["weights", "fetch"]) == 0
    assert f"ready: {params.weights.files['resnet50']}" in capsys.readouterr().out
    assert main(["weights", "fetch", "resnet50s"]) == 0
    assert f"ready: {params.weights.files['resnet50s']}" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert "present, verified (sha256 recorded); needed by grid t cell r50" in listed
    assert (
        "resnet50s     " + params.weights.files["resnet50s"] + "  present (checked against the published sha1" in listed
    )


def test_imagenet_and_the_same_path_written_out_are_one_run(params):
    r50 = with_overrides(params, R50)
    written = with_overrides(params, {**R50, "model.pretrained": params.weights.files["resnet50"]})
    assert config_hash(written) == config_hash(r50)
    mine = with_overrides(params, {**R50, "model.pretrained": str(Path(params.weights.root) / "mine.pth")})
    assert config_hash(mine) != config_hash(r50)


def test_a_declared_file_under_another_name_is_yours(params, fake, server, capsys):
    mine = Path(params.weights.root) / "r50-mine.pth"
    config = with_overrides(params, {**cells(R50), "weights.files.resnet50": str(mine)})
    assert [(n.path, n.published) for n in needed_files(config)] == [(mine, None)]
    with pytest.raises(DataError, match="file not found; it is a file of yours"):
        fetch_weights(config)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"not the published bytes")
    assert fetch_weights(config) == [mine]
    assert "your own resnet50 weights (grid t cell c0), present; not verified" in capsys.readouterr().out
    assert server.requests == [] and mine.read_bytes() == b"not the published bytes"


def test_imagenet_names_one_file_per_backbone_and_stem(params):
    root = Path(params.weights.root)
    resolved = {
        (backbone, stem): pretrained_file(
            with_overrides(params, {"model.backbone": backbone, "model.stem": stem, "model.pretrained": "imagenet"})
        )
        for backbone, stem in (
            ("resnet50", "standard"),
            ("resnet50", "deep"),
            ("resnet50", "deep_v1c"),
            ("resnet101", "standard"),
            ("resnet101", "deep"),
            ("resnet101", "deep_v1c"),
            ("resnest101", "standard"),
            ("resnest101", "deep"),
        )
    }
    assert resolved == {
        ("resnet50", "standard"): root / "resnet50-0676ba61.pth",
        ("resnet50", "deep"): root / "resnet50s-a75c83cf.pth",
        ("resnet50", "deep_v1c"): root / "resnet50_v1c-2cccc1ad.pth",
        ("resnet101", "standard"): root / "resnet101-63fe2227.pth",
        ("resnet101", "deep"): root / "resnet101s-03a0f310.pth",
        ("resnet101", "deep_v1c"): root / "resnet101_v1c-e67eebb6.pth",
        ("resnest101", "standard"): root / "resnest101-22405ba7.pth",  # its own deep stem either way
        ("resnest101", "deep"): root / "resnest101-22405ba7.pth",
    }
    with pytest.raises(ConfigError, match="resnest101 has its own deep stem"):
        with_overrides(params, {"model.backbone": "resnest101", "model.stem": "deep_v1c"})


def test_the_paper_profile_takes_deep_stem_weights(tmp_path, monkeypatch, capsys):
    """`grar config` accepts the paper profile with model.stem deep and imagenet; every cell needs its file."""
    monkeypatch.chdir(REPO)
    assert main(["config", "--params", "profiles/paper.yaml", "--set", "model.stem=deep"]) == 0
    assert "stem: deep" in capsys.readouterr().out
    params = load_params(REPO / "profiles" / "paper.yaml", ("model.stem=deep",))
    needed = {item.name: item.where for item in needed_files(params)}
    assert needed == {
        "resnet101s": "the base config",
        "resnet50s": "grid table1 cell r50-fcn",
        "resnest101": "grid table1 cell resnest101-grar-sr",
    }


R50_DEEP = {**R50, "model.stem": "deep"}


def test_an_encoding_zip_is_fetched_unpacked_verified_and_deleted(params, fake, server, capsys):
    config = with_overrides(params, cells(R50_DEEP))
    target = Path(params.weights.files["resnet50s"])
    assert fetch_weights(config) == [target]
    assert server.requests == [(f"/{zip_name('resnet50s')}", None)]
    assert target.read_bytes() == FAKE["resnet50s"]
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]  # no zip, .part or record
    out = capsys.readouterr().out
    assert f"{target}: resnet50s-a75c83cf.pth verified (sha1 {sha1(FAKE['resnet50s'])[:16]}..., published)" in out
    assert "TRUST ON FIRST USE" not in out  # the full SHA-1 is published
    fetch_weights(config)
    assert len(server.requests) == 1  # present and matching: no request


def test_an_interrupted_encoding_zip_resumes(params, fake, server):
    server.drop_once.add(zip_name("resnet101s"))
    fetch_weights(with_overrides(params, cells({**R50_DEEP, "model.backbone": "resnet101"})))
    half = len(server.files[zip_name("resnet101s")]) // 2
    assert [request[1] for request in server.requests] == [None, f"bytes={half}-"]
    assert Path(params.weights.files["resnet101s"]).read_bytes() == FAKE["resnet101s"]


@pytest.mark.parametrize(
    ("served", "message"),
    [
        (
            zipped({"resnet50s-a75c83cf.pth": b"other bytes"}),
            "resnet50s-a75c83cf.pth in the zip is not the published file (sha1 expected {sha1}, got "
            + sha1(b"other bytes")
            + "); zip deleted",
        ),
        (
            zipped({"README": b"x", "models/other.pth": b"y"}),
            "the zip holds 0 file(s) named resnet50s-a75c83cf.pth (it holds: README, models/other.pth)",
        ),
        (b"<html>not found</html>", "not a zip (it starts with '<html>not found</html>' (an HTML page, not the"),
    ],
)
def test_a_bad_encoding_zip_is_named_and_deleted(params, fake, server, served, message):
    server.files[zip_name("resnet50s")] = served
    with pytest.raises(DataError) as err:
        fetch_weights(with_overrides(params, cells(R50_DEEP)))
    assert str(err.value).startswith(f"{fake['resnet50s'].url}: ")
    assert message.format(sha1=sha1(FAKE["resnet50s"])) in str(err.value)
    assert list(Path(params.weights.root).iterdir()) == []  # nothing half-made is left to be trusted later


def test_a_member_in_a_folder_of_the_zip_is_found(params, fake, server):
    server.files[zip_name("resnet50s")] = zipped({"models/resnet50s-a75c83cf.pth": FAKE["resnet50s"]})
    fetch_weights(with_overrides(params, cells(R50_DEEP)))
    assert Path(params.weights.files["resnet50s"]).read_bytes() == FAKE["resnet50s"]


def test_a_foreign_file_at_an_encoding_path_is_never_replaced(params, fake, server):
    target = Path(params.weights.files["resnet50s"])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"mine")
    with pytest.raises(DataError) as err:
        fetch_weights(with_overrides(params, cells(R50_DEEP)))
    assert str(err.value) == (
        f"{target}: not the expected file resnet50s-a75c83cf.pth from {fake['resnet50s'].url} (sha1 expected "
        f"{sha1(FAKE['resnet50s'])}, got {sha1(b'mine')}); left untouched: move it away (or point the params at "
        f"it as a file of yours) and fetch again"
    )
    assert target.read_bytes() == b"mine" and server.requests == []


def test_a_mirror_folder_serves_the_encoding_zip(params, fake, server, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / zip_name("resnet50s")).write_bytes(server.files[zip_name("resnet50s")])
    fetch_weights(with_overrides(params, {**cells(R50_DEEP), "weights.mirror": str(shared)}))
    assert Path(params.weights.files["resnet50s"]).read_bytes() == FAKE["resnet50s"]
    assert server.requests == [] and (shared / zip_name("resnet50s")).exists()  # the mirror's copy is not touched


def test_an_mmseg_v1c_file_is_verified_by_its_sha256_prefix(params, fake, server):
    config = with_overrides(params, cells({**R50, "model.stem": "deep_v1c"}))
    target = Path(params.weights.files["resnet50_v1c"])
    assert fetch_weights(config) == [target]
    assert server.requests == [("/resnet50_v1c-2cccc1ad.pth", None)]
    assert target.with_name(target.name + ".sha256").read_text() == f"{sha256(FAKE['resnet50_v1c'])}  {target.name}\n"


@pytest.mark.parametrize(
    ("stem", "name", "layout"),
    [
        # PyTorch-Encoding's ImageNet resnet50s: its ResNet's own state dict (conv1.0 ... conv1.6, bn1, fc)
        (
            "deep",
            "resnet50s",
            lambda state: {**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)},
        ),
        # mmsegmentation's ResNetV1c: the deep stem as stem.0 (conv) stem.1 (BN) stem.3 stem.4 stem.6 stem.7 (BN),
        # mmcv's checkpoint dict {"meta", "state_dict"}
        ("deep_v1c", "resnet50_v1c", lambda state: {"meta": {}, "state_dict": v1c_names(state)}),
    ],
)
def test_imagenet_deep_stem_files_load_into_the_backbone(params, monkeypatch, stem, name, layout):
    """A miniature file in each publisher's layout (the tiny backbone stands in for resnet50, as above)."""
    from model import backbones
    from pipeline.training import build

    monkeypatch.setitem(build.BACKBONES, "resnet50", backbones.tiny_resnet)
    torch.manual_seed(4)
    source = tiny_resnet(stem).body.state_dict()
    path = Path(params.weights.files[name])
    path.parent.mkdir(parents=True)
    torch.save(layout(source), path)
    published_as(path, monkeypatch, name)
    config = with_overrides(params, {**R50, "model.stem": stem, "model.width": 16}).model
    torch.manual_seed(5)
    model = build_segmentor(config, 3, torch.eye(3), weights=params.weights)
    loaded = model.backbone.body.state_dict()
    assert set(loaded) == set(source)
    for key, value in source.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def v1c_names(state: dict) -> dict:
    """This project's deep-stem names as mmsegmentation's ResNetV1c writes them (mmseg/models/backbones/resnet.py)."""
    renames = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.", "conv1.4.": "stem.4."}
    renames |= {"conv1.6.": "stem.6.", "bn1.": "stem.7."}
    out = {}
    for key, value in state.items():
        old = next((old for old in renames if key.startswith(old)), None)
        out[renames[old] + key.removeprefix(old) if old else key] = value
    assert "stem.7.running_mean" in out and not any(key.startswith(("conv1.", "bn1.")) for key in out)
    return out


def test_a_published_file_of_other_content_is_refused_before_its_first_use(params, monkeypatch):
    """A valid state dict at the published path, copied there by hand (no record): verified like a fetch."""
    from model import backbones
    from pipeline.training import build

    monkeypatch.setitem(build.BACKBONES, "resnet50", backbones.tiny_resnet)
    path = Path(params.weights.files["resnet50"])
    path.parent.mkdir(parents=True)
    torch.save(tiny_resnet().body.state_dict(), path)
    config = with_overrides(params, {**R50, "model.width": 16}).model
    with pytest.raises(DataError) as err:
        build_segmentor(config, 3, torch.eye(3), weights=params.weights)
    assert str(err.value) == (
        f"model.pretrained: {path}: not the published resnet50 ImageNet file resnet50-0676ba61.pth from "
        "https://download.pytorch.org/models/resnet50-0676ba61.pth: sha256 expected 0676ba61... (published, in "
        f"its name), got {sha256(path.read_bytes())}; fetch it again (move this file away, then `grar weights "
        "fetch`) or point model.pretrained at it under another name as a file of yours"
    )
    published_as(path, monkeypatch)  # its prefix matches: the full digest recorded at fetch is what counts then
    record = path.with_name(path.name + ".sha256")
    record.write_text(sha256(path.read_bytes())[:8] + "0" * 56 + f"  {path.name}\n")
    with pytest.raises(DataError, match=rf"sha256 expected {sha256(path.read_bytes())[:8]}0{{56}} \(recorded in "):
        build_segmentor(config, 3, torch.eye(3), weights=params.weights)
    record.unlink()
    build_segmentor(config, 3, torch.eye(3), weights=params.weights)  # the right file loads
