"""The real datasets' archives (``ARCHIVES``: official URLs and checksums), where their files are, and
``download_dataset``, which fetches them through ``pipeline.download`` into ``<data.downloads>/<name>/``
and extracts the archives among them into a folder named after the archive
(``.../ade20k/ADEChallengeData2016/``): an extracted folder whose stamp names the
archive's checksum is not extracted again. COCO-Stuff-10k publishes no checksum:
its SHA-256 is recorded (trust on first use) once its first download has
extracted successfully; keep the file (or compare its value with a colleague's
copy): deleting it restarts the trust.

**Local copy.** ``data.local.NAME: PATH`` names a folder already holding the
dataset as its archives unpack (``LOCAL_LAYOUTS``): nothing is fetched, and the
converters read that folder in place (``source_paths``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.datasets.extract import STAMP_NAME, archive_stem, extract_archive
from pipeline.download import (
    TOFU_ALGORITHM,
    Archive,
    describe_start,
    fetch,
    is_archive,
    record_tofu,
    resolve_url,
    tofu_record,
)
from pipeline.errors import ConfigError, DataError
from pipeline.paths import download_dir

ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "ade20k": (
        Archive(
            key="ADEChallengeData2016",
            filename="ADEChallengeData2016.zip",
            url="http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
            algorithm="sha1",
            checksum="219e1696abb36c8ba3a3afe7fb2f4b4606a897c7",
            extract=True,
        ),
    ),
    "pascal_context": (
        Archive(
            key="VOC2010",
            filename="VOCtrainval_03-May-2010.tar",
            url="http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
            algorithm="md5",
            checksum="da459979d0c395079b5c75ee67908abb",
            extract=True,
        ),
        Archive(
            # PASCAL in Detail's merged annotations, the copy PyTorch-Encoding,
            # mmsegmentation and gluon-cv download. No primary source publishes a
            # checksum; this SHA-1 is the one the widely used converters verify by default:
            # https://github.com/zhanghang1989/PyTorch-Encoding/blob/master/scripts/prepare_pcontext.py
            # https://github.com/dmlc/gluon-cv/blob/master/scripts/datasets/pascal_context.py
            # An MD5 (3c2d0c0656b7be9eb61928ffe885d8ce) circulates only in torchvision-style
            # forks (torchvision itself has no PASCAL-Context loader) and is not checked.
            key="trainval_merged",
            filename="trainval_merged.json",
            url="https://codalabuser.blob.core.windows.net/public/trainval_merged.json",
            algorithm="sha1",
            checksum="169325d9f7e9047537fedca7b04de4dddf10b881",
            extract=False,
        ),
    ),
    "coco_stuff": (
        Archive(
            # The official README (https://github.com/nightrome/cocostuff10k#dataset) links
            # http://calvin.inf.ed.ac.uk/...; the host serves that folder over https too
            # (public scripts fetch https://calvin.inf.ed.ac.uk/wp-content/uploads/data/
            # cocostuffdataset/ with `curl -f`; not checkable from the build machines). With
            # no checksum published, https is what protects the first, trusted download.
            key="cocostuff-10k",
            filename="cocostuff-10k-v1.1.zip",
            url="https://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/cocostuff-10k-v1.1.zip",
            algorithm=TOFU_ALGORITHM,
            checksum=None,  # none published: trust on first use
            extract=True,
        ),
    ),
}


def archives_for(name: str) -> tuple[Archive, ...]:
    """The archives of dataset ``name``; an unknown or generated dataset raises ``ConfigError``."""
    if name not in ARCHIVES:
        hint = " (it is generated, not downloaded: run `grar prepare embedded`)" if name == "embedded" else ""
        raise ConfigError(f"no download for dataset {name!r}{hint}; datasets with archives: {', '.join(ARCHIVES)}")
    return ARCHIVES[name]


# What a local copy of a dataset (``data.local.NAME: PATH``) holds, as the official archives unpack: for each
# archive key, the entry of PATH a converter reads in place of the extracted folder (or file).


LOCAL_LAYOUTS: dict[str, dict[str, str]] = {
    "ade20k": {"ADEChallengeData2016": "."},  # PATH/ADEChallengeData2016/{images,annotations}/, objectInfo150.txt
    "pascal_context": {"VOC2010": ".", "trainval_merged": "trainval_merged.json"},  # PATH/VOCdevkit/VOC2010/
    "coco_stuff": {"cocostuff-10k": "."},  # PATH/{images,annotations,imageLists}/
}
# Entries of PATH that must exist, checked before anything is read (the converters check the rest).


LOCAL_REQUIRED: dict[str, tuple[str, ...]] = {
    "ade20k": ("ADEChallengeData2016/images", "ADEChallengeData2016/annotations"),
    "pascal_context": ("VOCdevkit/VOC2010/JPEGImages", "trainval_merged.json"),
    "coco_stuff": ("images", "annotations", "imageLists"),
}


def local_source(params: Params, name: str) -> Path | None:
    """The folder of ``data.local.NAME`` after checking its layout, or ``None`` when the dataset is downloaded.

    A missing entry raises ``DataError`` naming it and the layout expected.
    """
    path = params.data.local.get(name)
    if path is None:
        return None
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.local.{name}: {root}: folder not found; expected {local_layout_text(name)}")
    for entry in LOCAL_REQUIRED[name]:
        if not (root / entry).exists():
            raise DataError(f"data.local.{name}: {root / entry} not found; expected {local_layout_text(name)}")
    return root


def local_layout_text(name: str) -> str:
    """The layout of a local copy of ``name`` in words, for error messages."""
    entries = ", ".join(f"{entry}/" if "." not in Path(entry).name else entry for entry in LOCAL_REQUIRED[name])
    return f"the folder holding {entries} (as the official archives unpack)"


def source_paths(params: Params, name: str) -> dict[str, Path]:
    """Archive key -> what a converter reads: the extracted folder, or the file itself.

    With ``data.local.NAME`` set, those are entries of that folder (``LOCAL_LAYOUTS``),
    read in place. Raises ``DataError`` naming the first missing path and the command
    that makes it.
    """
    local = local_source(params, name)
    if local is not None:
        return {key: local / entry for key, entry in LOCAL_LAYOUTS[name].items()}
    root = download_dir(params, name)
    paths = {}
    for archive in archives_for(name):
        path = root / (archive_stem(archive.filename) if archive.extract else archive.filename)
        if not path.exists():
            raise DataError(f"{path} not found: run `grar download {name}` first")
        paths[archive.key] = path
    return paths


def download_dataset(params: Params, name: str, force: bool = False) -> list[Path]:
    """Fetch, verify and extract every archive of dataset ``name``; return what a converter reads.

    A dataset of ``data.local`` is not downloaded: its folder's layout is checked and its entries returned.
    """
    archives = archives_for(name)
    if local_source(params, name) is not None:
        print(f"{name}: using the local copy {params.data.local[name]} (data.local.{name}); nothing downloaded")
        return list(source_paths(params, name).values())
    root = download_dir(params, name)
    results = []
    for archive in archives:
        target = root / archive.filename
        digest = fetch(archive, target, params.data.mirror, force=force)
        untrusted = archive.checksum is None and not tofu_record(target).exists()
        if archive.extract:
            if untrusted and not is_archive(target):
                looks = describe_start(target)
                target.unlink()
                url = resolve_url(archive, params.data.mirror)
                raise DataError(
                    f"{target}: from {url}, is not a zip or tar archive: {looks}; deleted, no checksum recorded "
                    f"(check the URL or data.mirror, then run the command again)"
                )
            folder = root / archive_stem(archive.filename)
            stamp = f"{archive.filename} {archive.algorithm} {digest}"
            stamp_file = folder / STAMP_NAME
            if force or not stamp_file.exists() or stamp_file.read_text(encoding="utf-8") != stamp:
                extract_archive(target, folder, stamp)
            results.append(folder)
        else:
            results.append(target)
        if untrusted:  # only now that it extracted: an archive that fails to is never trusted
            record_tofu(target, digest)
    return results
