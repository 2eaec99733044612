"""The backbones' ImageNet weights: which file a config loads, and fetching the published ones.

``model.pretrained`` is ``null`` (random initialisation), a path to a weight
file of the user's, or ``imagenet``: the file of ``weights.files`` that
``pipeline.config.IMAGENET_FILES`` names for the run's backbone and stem, one
of the published files of ``PUBLISHED`` (torchvision's 7x7-stem ResNets,
PyTorch-Encoding's deep-stem ``resnet50s`` / ``resnet101s``, mmsegmentation's
``resnet50_v1c`` / ``resnet101_v1c``, ResNeSt-101). ``pretrained_path``
resolves it (model building and the run identity, ``pipeline.rundir``, both
use it); ``needed_files`` lists what the base config and every grid cell load;
``fetch_weights`` (``grar weights fetch``, the ``weights`` stage) downloads the
published ones through the generic downloader (``pipeline.download``:
resumable, verified, ``weights.mirror`` as a URL or a local folder).

Checksums. torchvision, timm and mmsegmentation publish only the first 8 hex
digits of each file's SHA-256, in its name (torch.hub's ``<name>-<prefix>.pth``
convention, checked by ``torch.hub.download_url_to_file``; mmsegmentation's
``tools/publish_model.py`` names its files by ``sha256sum`` the same way). The
prefix is verified, then the full digest is recorded beside the file at first
use (``<file>.sha256``) and every later use verifies against it.
PyTorch-Encoding publishes the full SHA-1 of each ``.pth``
(``encoding/models/model_store.py``, ``_model_sha1``) and serves it inside a
zip (``<name>-<sha1[:8]>.zip``): the zip is downloaded (resumable, beside the
target), the one ``.pth`` is read out of it (never extracted by path), checked
against the full SHA-1, and the zip deleted. A file at the expected path that
does not match is never replaced: it is named in a one-line error.

Every use is verified too, not only a fetch: before a model loads a published
file (``verify_published``, called by ``pipeline.training.build``), its digest is
checked against the record beside it, the published prefix when there is none,
or the published full checksum, so a file copied there by hand is verified the
same way; a mismatch is one line with the expected checksum and the URL.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.config import IMAGENET, ModelConfig, Params, WeightsConfig, imagenet_key, with_overrides
from pipeline.download import (
    Archive,
    describe_start,
    expected_checksum,
    fetch,
    file_digest,
    matches,
    record_tofu,
    resolve_url,
    tofu_record,
)
from pipeline.errors import ConfigError, DataError

# The published ImageNet files, by the key of ``weights.files`` (the publisher's model name).
#
# torchvision: ``ResNet50_Weights.IMAGENET1K_V1`` and ``ResNet101_Weights.IMAGENET1K_V1``
# (torchvision/models/resnet.py, the V1 files: the original ResNet recipe, 7x7 stem). ResNeSt-101: the file
# timm's ``resnest101e`` loaded from its release (timm <= 0.6 timm/models/resnest.py
# default_cfgs['resnest101e'].url; timm 1.x serves the same weights from the HF hub as timm/resnest101e.in1k),
# the authors' release of zhanghang1989/ResNeSt whose ``_model_sha256`` table
# (resnest/torch/models/resnest.py) gives the prefix 22405ba7. Each prefix is the one in the file name, which
# torch.hub checks against the file's SHA-256 (torch/hub.py, HASH_REGEX).
#
# PyTorch-Encoding's deep-stem ResNets (``model.stem: deep``): ``resnet50s`` / ``resnet101s``
# (encoding/models/backbone/resnet_variants.py: ``deep_stem=True``, stem width 64), the backbones of its
# segmentation models. encoding/models/model_store.py (zhanghang1989/PyTorch-Encoding, commit ac74841) gives
# their full SHA-1 in ``_model_sha1`` (a75c83cfc89a56a4e8ba71b14f1ec67e923787b3,
# 03a0f310d6447880f1b22a83bd7d1aa7fc702c6e) and the URL as ``{encoding_repo_url}/models/{name}-{sha1[:8]}.zip``
# with ``encoding_repo_url = 'https://s3.us-west-1.wasabisys.com/encoding'`` (before 2020-06-28, commit c99b108:
# https://hangzh.s3-us-west-1.amazonaws.com/encoding/models/...); ``get_model_file`` unzips it and checks the
# SHA-1 of ``{name}-{sha1[:8]}.pth``. DANet's code (junfu1115/DANet, encoding/models/model_store.py) lists
# the same two checksums and host. NOT VERIFIED HERE: this project's machines cannot reach that host, so
# whether it still serves the zips, and that they hold files of these SHA-1s, is as the source code says.
#
# mmsegmentation's ResNetV1c (``model.stem: deep_v1c``): ``pretrained='open-mmlab://resnet50_v1c'`` /
# ``'open-mmlab://resnet101_v1c'`` in its configs (configs/_base_/models/pspnet_r50-d8.py; the R101 configs,
# e.g. configs/pspnet/pspnet_r101-d8_4xb4-80k_ade20k-512x512.py), which mmcv resolves through
# mmcv/model_zoo/open_mmlab.json to https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth
# and .../resnet101_v1c-e67eebb6.pth. The 8 hex digits are taken as a SHA-256 prefix, the convention of
# torch.hub and of mmsegmentation's tools/publish_model.py (``sha256sum``); mmcv's loader itself checks no
# hash, so NOT VERIFIED HERE against the files either (no access to that host from here): a file whose
# SHA-256 does not start with them is refused, named, with the URL.
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
    # extract=True: the URL serves a zip (named as the URL's last part) holding ``filename``; ``checksum`` is
    # of ``filename``, the full SHA-1 model_store.py gives.
    "resnet50s": Archive(
        key="resnet50s",
        filename="resnet50s-a75c83cf.pth",
        url="https://s3.us-west-1.wasabisys.com/encoding/models/resnet50s-a75c83cf.zip",
        algorithm="sha1",
        checksum="a75c83cfc89a56a4e8ba71b14f1ec67e923787b3",
        extract=True,
    ),
    "resnet101s": Archive(
        key="resnet101s",
        filename="resnet101s-03a0f310.pth",
        url="https://s3.us-west-1.wasabisys.com/encoding/models/resnet101s-03a0f310.zip",
        algorithm="sha1",
        checksum="03a0f310d6447880f1b22a83bd7d1aa7fc702c6e",
        extract=True,
    ),
    "resnet50_v1c": Archive(
        key="resnet50_v1c",
        filename="resnet50_v1c-2cccc1ad.pth",
        url="https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
        algorithm="sha256",
        checksum="2cccc1ad",
        extract=False,
    ),
    "resnet101_v1c": Archive(
        key="resnet101_v1c",
        filename="resnet101_v1c-e67eebb6.pth",
        url="https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
        algorithm="sha256",
        checksum="e67eebb6",
        extract=False,
    ),
}
# Who publishes each file, for listings and errors.
SOURCES: dict[str, str] = {
    "resnet50": "torchvision ResNet50_Weights.IMAGENET1K_V1, 7x7 stem",
    "resnet101": "torchvision ResNet101_Weights.IMAGENET1K_V1, 7x7 stem",
    "resnest101": "ResNeSt-101 as timm's resnest101e loads it, its own deep stem",
    "resnet50s": "PyTorch-Encoding resnet50s, deep stem 64-64-128",
    "resnet101s": "PyTorch-Encoding resnet101s, deep stem 64-64-128",
    "resnet50_v1c": "mmsegmentation open-mmlab://resnet50_v1c, ResNetV1c deep stem 32-32-64",
    "resnet101_v1c": "mmsegmentation open-mmlab://resnet101_v1c, ResNetV1c deep stem 32-32-64",
}


@dataclass(frozen=True)
class Needed:
    """One weight file a config loads: where, under which name, the published file (``None``: the user's own)."""

    path: Path
    name: str  # the key of weights.files (a published file's name), or the backbone of a file of the user's
    published: Archive | None
    where: str  # "the base config", "grid table1 cell r50-fcn"


def pretrained_path(model: ModelConfig, weights: WeightsConfig | None) -> Path | None:
    """The weight file ``model`` loads: the ``weights.files`` entry of its backbone and stem for ``imagenet``
    (``pipeline.config.IMAGENET_FILES``), the path given, or ``None``."""
    if model.pretrained is None:
        return None
    if model.pretrained != IMAGENET:
        return Path(model.pretrained)
    try:
        key = imagenet_key(model, weights)  # a key of weights.files (it raises otherwise)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return Path(weights.files[key])


def pretrained_file(params: Params) -> Path | None:
    """The weight file the run of ``params`` loads (``None``: random initialisation)."""
    return pretrained_path(params.model, params.weights)


def published_for(model: ModelConfig, weights: WeightsConfig | None) -> Archive | None:
    """The published file ``model`` loads: ``imagenet``, or the path of its backbone and stem's ``weights.files``.

    Only a ``weights.files`` entry under the published file's name is the
    published file; one under another name is a file of the user's declared
    once for its backbone (checked to exist, neither fetched nor verified).
    """
    path = pretrained_path(model, weights)
    key = model.imagenet_file
    if path is None or weights is None or key not in weights.files:
        return None
    published = PUBLISHED[key]
    if Path(weights.files[key]).absolute() != path.absolute() or path.name != published.filename:
        return None
    return published


def expected_text(model: ModelConfig, weights: WeightsConfig | None) -> str:
    """For a load error: the published file ``model`` expects and where it comes from ('' for a file of the user's)."""
    archive = published_for(model, weights)
    if archive is None:
        return ""
    return (
        f"; expected the published {model.backbone} ImageNet file {archive.filename} ({SOURCES[archive.key]}; "
        f"{archive.url})"
    )


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
            found[path] = Needed(path, archive.key if archive else config.model.backbone, archive, where)
    return list(found.values())


def fetch_weights(params: Params, names: tuple[str, ...] = (), force: bool = False) -> list[Path]:
    """Make every needed weight file present and verified (or the ``weights.files`` of ``names``); return them.

    Published files are downloaded from their official URL or ``weights.mirror``
    (a URL, ``file://`` or a folder); a file of the user's is only checked to
    exist. Nothing needed: nothing is fetched, and that is said.
    """
    weights = params.weights
    if names:
        unknown = [name for name in names if name not in weights.files]
        if unknown:
            raise ConfigError(
                f"weights: no file {unknown[0]!r} in weights.files; it has: {', '.join(weights.files)} "
                f"(model.stem deep: resnet50s / resnet101s; deep_v1c: resnet50_v1c / resnet101_v1c)"
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
            print(f"{item.path}: your own {item.name} weights ({item.where}), present; not verified")
            continue
        fetch_published(item.published, item.path, weights, force)
    return [item.path for item in needed]


def fetch_published(archive: Archive, target: Path, weights: WeightsConfig, force: bool = False) -> str:
    """Download (or verify) ``archive`` into ``target``; record its full SHA-256 at first use; return the digest."""
    if archive.extract:
        return fetch_zipped(archive, target, weights, force)
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


def packed(archive: Archive) -> Archive:
    """The zip that serves ``archive`` (``extract``: PyTorch-Encoding's): named as its URL, no checksum of its own."""
    name = archive.url.rsplit("/", 1)[-1]
    return dataclasses.replace(archive, filename=name, algorithm="sha256", checksum=None)


def served_url(archive: Archive, weights: WeightsConfig) -> str:
    """Where ``archive`` is fetched from: its URL, or ``weights.mirror`` with the served file's name."""
    return resolve_url(packed(archive) if archive.extract else archive, weights.mirror, "weights.mirror", True)


def fetch_zipped(archive: Archive, target: Path, weights: WeightsConfig, force: bool = False) -> str:
    """A file published inside a zip with its full checksum (PyTorch-Encoding's model store; module docstring).

    A ``target`` present and matching is kept (no request); present and not
    matching, it is named and left untouched (``force``: fetched again and
    replaced). The zip goes to ``<target's folder>/<zip name>`` (resumable like
    any download), the member ``archive.filename`` is read out of it into a
    ``.part`` file, verified, renamed to ``target``; the zip is then deleted.
    """
    url = served_url(archive, weights)
    if target.exists() and not force:
        actual = file_digest(target, archive.algorithm)
        if actual == archive.checksum:
            print(f"{target}: {archive.filename} verified ({archive.algorithm} {actual[:16]}..., published)")
            return actual
        raise DataError(
            f"{target}: not the expected file {archive.filename} from {url} ({archive.algorithm} expected "
            f"{archive.checksum}, got {actual}); left untouched: move it away (or point the params at it as a "
            f"file of yours) and fetch again"
        )
    zipped = packed(archive)
    holder = target.with_name(zipped.filename)
    fetch(zipped, holder, url=url, force=force)
    part = target.with_name(target.name + ".part")
    try:
        unpack_member(holder, archive.filename, part, url)
        actual = file_digest(part, archive.algorithm)
        if actual != archive.checksum:
            part.unlink()
            raise DataError(
                f"{url}: {archive.filename} in the zip is not the published file ({archive.algorithm} expected "
                f"{archive.checksum}, got {actual}); zip deleted (a wrong mirror file, or damaged in transit: run "
                f"the command again)"
            )
        os.replace(part, target)
    except DataError:
        holder.unlink(missing_ok=True)
        raise
    holder.unlink()
    print(f"{target}: {archive.filename} verified ({archive.algorithm} {actual[:16]}..., published)")
    return actual


def unpack_member(holder: Path, filename: str, part: Path, url: str) -> None:
    """Copy the one member of zip ``holder`` named ``filename`` (at any depth) into ``part``; never by its path."""
    try:
        with zipfile.ZipFile(holder) as archive:
            members = [info for info in archive.infolist() if PurePosixPath(info.filename).name == filename]
            if len(members) != 1:
                names = ", ".join(info.filename for info in archive.infolist()[:5]) or "nothing"
                raise DataError(f"{url}: the zip holds {len(members)} file(s) named {filename} (it holds: {names})")
            with archive.open(members[0]) as source, open(part, "wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
    except (zipfile.BadZipFile, EOFError):
        raise DataError(f"{url}: not a zip ({describe_start(holder)}); deleted") from None


def verify_published(archive: Archive, path: Path) -> None:
    """Before a model loads published file ``path``: ``DataError`` unless its digest is the one recorded at
    first fetch (``<file>.sha256``), starts with the published prefix when there is no record, or is the
    published full checksum (PyTorch-Encoding's SHA-1).

    Wherever the file came from (fetched, copied, a mirror, edited since): one line naming the file, the
    expected and actual checksums and the official URL. A missing file is left to the loader's own message.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return
    expected = expected_checksum(archive, path)
    actual = _digest(path, archive.algorithm, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if matches(actual, expected):
        return
    record = tofu_record(path)
    origin = (
        f"recorded in {record}"
        if archive.trusted_on_first_use and record.exists()
        else ("published, in its name" if archive.prefix else "published")
    )
    raise DataError(
        f"model.pretrained: {path}: not the published {archive.key} ImageNet file {archive.filename} from "
        f"{archive.url}: {archive.algorithm} expected {expected}{'...' if len(expected or '') < len(actual) else ''} "
        f"({origin}), got {actual}; fetch it again (move this file away, then `grar weights fetch`) or point "
        "model.pretrained at it under another name as a file of yours"
    )


@functools.lru_cache(maxsize=8)
def _digest(path: Path, algorithm: str, _size: int, _mtime_ns: int, _inode: int) -> str:
    """``algorithm`` digest of ``path``, once per version of the file in this process (a grid's runs share it)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
