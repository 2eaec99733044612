"""The backbones' ImageNet weights: which file a config loads, and fetching the published ones.

``model.pretrained`` is ``null`` (random initialisation), a path to a weight
file of the user's, or ``imagenet``: the file ``weights.files[model.backbone]``
names, one of the published files of ``PUBLISHED``. ``pretrained_path``
resolves it (model building and the run identity, ``pipeline.rundir``, both
use it); ``needed_files`` lists what the base config and every grid cell load;
``fetch_weights`` (``grar weights fetch``, the ``weights`` stage) downloads the
published ones through the datasets' downloader (``pipeline.datasets.download``:
resumable, verified, ``weights.mirror`` as a URL or a local folder).

Checksums: the publishers give only the first 8 hex digits of each file's
SHA-256, in its name (torch.hub's ``<name>-<prefix>.pth`` convention, checked by
``torch.hub.download_url_to_file``). The prefix is verified, then the full
digest is recorded beside the file at first fetch (``<file>.sha256``). Every
use verifies it too, not only a fetch: before a model loads a published file
(``verify_published``, called by ``pipeline.training.build``), its SHA-256 is
checked against that record, or the published prefix when there is none, so a
file copied there by hand is verified the same way. A file at the expected path
that does not match is never replaced: it is named in a one-line error with the
expected checksum and the URL it comes from.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import IMAGENET, ModelConfig, Params, WeightsConfig, with_overrides
from pipeline.download import Archive, expected_checksum, fetch, matches, record_tofu, resolve_url, tofu_record
from pipeline.errors import ConfigError, DataError

# The published ImageNet file of each backbone. torchvision: ``ResNet50_Weights.IMAGENET1K_V1`` and
# ``ResNet101_Weights.IMAGENET1K_V1`` (torchvision/models/resnet.py, the V1 files: the original ResNet recipe
# the paper's backbones were trained with). ResNeSt-101: the file timm's ``resnest101e`` loaded from its
# release (timm <= 0.6 timm/models/resnest.py default_cfgs['resnest101e'].url; timm 1.x serves the same
# weights from the HF hub as timm/resnest101e.in1k), the authors' release of zhanghang1989/ResNeSt whose
# ``_model_sha256`` table (resnest/torch/models/resnest.py) gives the prefix 22405ba7. Each prefix is the
# one in the file name, which torch.hub checks against the file's SHA-256 (torch/hub.py, HASH_REGEX).
PUBLISHED: dict[str, Archive] = {
    "resnet50": Archive(
        key="resnet50",
        filename="resnet50-0676ba61.pth",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        algorithm="sha256",
        checksum="0676ba61",
        extract=False,
    ),
    "resnet101": Archive(
        key="resnet101",
        filename="resnet101-63fe2227.pth",
        url="https://download.pytorch.org/models/resnet101-63fe2227.pth",
        algorithm="sha256",
        checksum="63fe2227",
        extract=False,
    ),
    "resnest101": Archive(
        key="resnest101",
        filename="resnest101-22405ba7.pth",
        url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-resnest/resnest101-22405ba7.pth",
        algorithm="sha256",
        checksum="22405ba7",
        extract=False,
    ),
}


@dataclass(frozen=True)
class Needed:
    """One weight file a config loads: where, for which backbone, the published file (``None``: the user's own)."""

    path: Path
    backbone: str
    published: Archive | None
    where: str  # "the base config", "grid table1 cell r50-fcn"


def pretrained_path(model: ModelConfig, weights: WeightsConfig | None) -> Path | None:
    """The weight file ``model`` loads: ``weights.files[backbone]`` for ``imagenet``, the path given, or ``None``."""
    if model.pretrained is None:
        return None
    if model.pretrained != IMAGENET:
        return Path(model.pretrained)
    files = {} if weights is None else weights.files
    if model.backbone not in files:
        raise ConfigError(
            f"model.pretrained: imagenet: weights.files has no file for backbone {model.backbone!r} "
            f"(it has: {', '.join(files) or 'none'}); set model.pretrained: null or a file's path"
        )
    return Path(files[model.backbone])


def pretrained_file(params: Params) -> Path | None:
    """The weight file the run of ``params`` loads (``None``: random initialisation)."""
    return pretrained_path(params.model, params.weights)


def published_for(model: ModelConfig, weights: WeightsConfig | None) -> Archive | None:
    """The published file ``model`` loads: ``imagenet``, or a path that is ``weights.files[backbone]``.

    Only a ``weights.files`` entry under the published file's name is the
    published file; one under another name is a file of the user's declared
    once for its backbone (checked to exist, neither fetched nor verified).
    """
    path = pretrained_path(model, weights)
    if path is None or weights is None or model.backbone not in weights.files:
        return None
    published = PUBLISHED[model.backbone]
    if Path(weights.files[model.backbone]).absolute() != path.absolute() or path.name != published.filename:
        return None
    return published


def expected_text(model: ModelConfig, weights: WeightsConfig | None) -> str:
    """For a load error: the published file ``model`` expects and where it comes from ('' for a file of the user's)."""
    archive = published_for(model, weights)
    if archive is None:
        return ""
    return f"; expected the published {model.backbone} ImageNet file {archive.filename} ({archive.url})"


def needed_files(params: Params) -> list[Needed]:
    """Every weight file the base config and the cells of ``grid.grids`` load, each once (first use named)."""
    configs = [("the base config", params)] + [
        (f"grid {grid} cell {cell}", with_overrides(params, overrides))
        for grid, spec in params.grid.grids.items()
        for cell, overrides in spec.overrides().items()
    ]
    found: dict[Path, Needed] = {}
    for where, config in configs:
        path = pretrained_file(config)
        if path is not None and path not in found:
            archive = published_for(config.model, config.weights)
            found[path] = Needed(path, config.model.backbone, archive, where)
    return list(found.values())


def fetch_weights(params: Params, names: tuple[str, ...] = (), force: bool = False) -> list[Path]:
    """Make every needed weight file present and verified (or the files of backbones ``names``); return them.

    Published files are downloaded from their official URL or ``weights.mirror``
    (a URL, ``file://`` or a folder); a file of the user's is only checked to
    exist. Nothing needed: nothing is fetched, and that is said.
    """
    weights = params.weights
    if names:
        unknown = [name for name in names if name not in weights.files]
        if unknown:
            raise ConfigError(
                f"weights: no file for backbone {unknown[0]!r} in weights.files; it has: {', '.join(weights.files)}"
            )
        needed = [Needed(Path(weights.files[name]), name, PUBLISHED[name], "the command line") for name in names]
    else:
        needed = needed_files(params)
    if not needed:
        print("weights: model.pretrained is null in the base config and every grid cell: nothing to fetch")
        return []
    for item in needed:
        if item.published is None:
            if not item.path.is_file():
                raise DataError(
                    f"model.pretrained: {item.path} ({item.where}): file not found; it is a file of yours "
                    f"(grar fetches the files of weights.files: model.pretrained: imagenet)"
                )
            print(f"{item.path}: your own {item.backbone} weights ({item.where}), present; not verified")
            continue
        fetch_published(item.published, item.path, weights, force)
    return [item.path for item in needed]


def fetch_published(archive: Archive, target: Path, weights: WeightsConfig, force: bool = False) -> str:
    """Download (or verify) ``archive`` into ``target``; record its full SHA-256 at first use; return it."""
    url = resolve_url(archive, weights.mirror, key="weights.mirror", local_folders=True)
    untrusted = not tofu_record(target).exists()
    digest = fetch(archive, target, url=url, force=force, replace_mismatch=False)
    if untrusted:
        record_tofu(
            target,
            digest,
            why=f"only the SHA-256 prefix {archive.checksum} is published (in the file name)",
            proof="it matches that prefix",
        )
    print(f"{target}: {archive.filename} verified (sha256 {digest[:16]}...)")
    return digest


def verify_published(archive: Archive, path: Path) -> None:
    """Before a model loads published file ``path``: ``DataError`` unless its SHA-256 is the one recorded at
    first fetch (``<file>.sha256``), or starts with the published prefix when there is no record.

    Wherever the file came from (fetched, copied, a mirror, edited since): one line naming the file, the
    expected and actual checksums and the official URL. A missing file is left to the loader's own message.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return
    expected = expected_checksum(archive, path)
    actual = _sha256(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if matches(actual, expected):
        return
    record = tofu_record(path)
    origin = f"recorded in {record}" if record.exists() else "published, in its name"
    raise DataError(
        f"model.pretrained: {path}: not the published {archive.key} ImageNet file {archive.filename} from "
        f"{archive.url}: {archive.algorithm} expected {expected}{'...' if len(expected or '') < 64 else ''} "
        f"({origin}), got {actual}; fetch it again (move this file away, then `grar weights fetch`) or point "
        "model.pretrained at it under another name as a file of yours"
    )


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, _size: int, _mtime_ns: int, _inode: int) -> str:
    """SHA-256 of ``path``, once per version of the file in this process (the grid's runs share one file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
