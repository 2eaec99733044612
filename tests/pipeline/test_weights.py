"""ImageNet weights: `imagenet` resolution, fetching (resume, mirror, local folder, foreign file), the run hash."""

from __future__ import annotations

import dataclasses
import hashlib
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
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(server, monkeypatch):
    """PUBLISHED pointing at the loopback server: each published file name serves its stand-in, of known SHA-256."""
    table = {}
    for name, data in FAKE.items():
        filename = PUBLISHED[name].filename
        server.files[filename] = data
        table[name] = dataclasses.replace(
            PUBLISHED[name], filename=filename, url=server.url(filename), checksum=sha256(data)[:8]
        )
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
    found = [
        (item.path, item.backbone, item.published and item.published.key, item.where) for item in needed_files(config)
    ]
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


def test_names_fetch_one_backbone_and_unknown_names_are_config_errors(params, fake, server):
    assert fetch_weights(params, ("resnest101",)) == [Path(params.weights.files["resnest101"])]
    assert server.requests == [(f"/{fake['resnest101'].filename}", None)]
    with pytest.raises(
        ConfigError,
        match="weights: no file for backbone 'tiny_resnet' in weights.files; it has: resnet50, resnet101, resnest101",
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
            "model.pretrained: imagenet: weights.files has no file for backbone "
            "'tiny_resnet' (it has: resnet50, resnet101, resnest101)",
        ),
        (
            {**R50, "model.stem": "deep"},
            "model.pretrained: imagenet: the published ImageNet files have the standard stem, not 'deep'",
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
        ConfigError, match="grid.grids.t cell 'c0': .*weights.files has no file for backbone 'tiny_resnet'"
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
        assert archive.url.rsplit("/", 1)[1] == archive.filename
        assert HASH_REGEX.search(archive.filename).group(1) == archive.checksum  # what torch.hub verifies
        assert archive.algorithm == "sha256" and archive.prefix and len(archive.checksum) == 8
    for profile in ("embedded", "paper"):
        files = yaml.safe_load((REPO / "profiles" / f"{profile}.yaml").read_text())["weights"]["files"]
        assert {name: Path(path).name for name, path in files.items()} == {
            name: archive.filename for name, archive in PUBLISHED.items()
        }


def published_as(path: Path, monkeypatch) -> None:
    """Make the file at ``path`` the published resnet50 file (its SHA-256 prefix), as the real file would be."""
    digest = sha256(path.read_bytes())[:8]
    monkeypatch.setitem(
        weights_module.PUBLISHED, "resnet50", dataclasses.replace(PUBLISHED["resnet50"], checksum=digest)
    )


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
        "(https://download.pytorch.org/models/resnet50-0676ba61.pth)"
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
    assert f"resnet50    {params.weights.files['resnet50']}  missing; needed by grid t cell r50" in listed
    assert "resnest101" in listed and "not needed by these params" in listed
    assert main(["weights", "fetch"]) == 0
    assert f"ready: {params.weights.files['resnet50']}" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    assert "present, verified (sha256 recorded); needed by grid t cell r50" in capsys.readouterr().out


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
