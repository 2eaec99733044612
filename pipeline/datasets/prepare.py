"""Prepare a dataset into the canonical layout, atomically.

``PREPARERS`` maps a dataset name to the module whose ``prepare(params, out_dir)``
writes the layout into ``out_dir`` (imported on use, so ``grar --help`` stays
fast and a missing dependency of one dataset does not hide the others).
``prepare_dataset`` runs it in a temporary folder, checks the result against
the layout contract (after keeping the first ``data.max_images`` images of each
split, when set), and only then renames it to ``data/<name>`` (replacing a
previous version): on any error nothing is left behind and the old dataset, if
any, is untouched. A dataset of ``data.folders`` is converted by
``pipeline.datasets.folder``. Every prepared dataset holds ``MARKER``; an
existing ``data/<name>`` that grar did not write is refused, never replaced.
"""

from __future__ import annotations

import errno
import functools
import importlib
import json
import os
from collections import Counter
from pathlib import Path

from pipeline.config import Params
from pipeline.datasets.layout import CLASSES_FILE, IMAGE_SUFFIXES, SPLITS, read_classes
from pipeline.errors import ConfigError, DataError
from pipeline.fingerprint import content_fingerprint, listing_fingerprint
from pipeline.io import atomic_dir, check_new_output, overlaps
from pipeline.paths import DATASET_MARKER, dataset_dir

PREPARERS: dict[str, str] = {
    "embedded": "pipeline.datasets.embedded",
    "ade20k": "pipeline.datasets.ade20k",
    "pascal_context": "pipeline.datasets.pascal_context",
    "coco_stuff": "pipeline.datasets.coco_stuff",
}
MARKER = DATASET_MARKER  # in every prepared dataset: what grar wrote (and may replace), and its fingerprints


def prepare_dataset(params: Params, name: str) -> Path:
    """Write dataset ``name`` (built-in, or a folder of ``data.folders``) to ``dataset_dir(params, name)``."""
    target = dataset_dir(params, name)
    source = params.data.folder(name)
    if source is not None:
        if overlaps(source.path, target):  # also checked when params load; the folder may be a new link since
            raise ConfigError(f"data.folders.{name}: {source.path} overlaps the output {target}; put it elsewhere")
        prepare = functools.partial(importlib.import_module("pipeline.datasets.folder").prepare, name=name)
    elif name in PREPARERS:
        local = params.data.local.get(name)
        if local is not None and overlaps(local, target):  # checked when params load; it may be a new link since
            raise ConfigError(f"data.local.{name}: {local} overlaps the output {target}; put it elsewhere")
        prepare = importlib.import_module(PREPARERS[name]).prepare
    else:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {', '.join(params.data.names)}")
    check_new_output(target, folder=True, ours=is_prepared_dataset, what="prepared dataset", writer="grar prepare")
    try:
        with atomic_dir(target) as tmp:
            prepare(params, tmp)
            if params.data.max_images is not None:
                keep_first(tmp, params.data.max_images)
            counts = check_layout(tmp)
            fingerprint = {"dataset": name, **content_fingerprint(tmp, skip=MARKER)}
            (tmp / MARKER).write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DataError(
            f"{target}: not prepared: {err.strerror} (writing {written_name(err, target)}); "
            f"{target} is as it was: free some space and run `grar prepare {name}` again"
        ) from None
    print(f"{name}: " + ", ".join(f"{split} {n} images" for split, n in counts.items()) + f" -> {target}")
    return target


def written_name(err: OSError, target: Path) -> str:
    """The file a failed write of ``prepare_dataset`` names, relative to the dataset (its temporary folder)."""
    if not isinstance(err.filename, str | bytes | os.PathLike):
        return str(target)
    path = Path(os.fsdecode(err.filename))
    temporary = next((parent for parent in path.parents if parent.name.startswith(f".{target.name}.")), None)
    return str(path.relative_to(temporary)) if temporary is not None else str(path)


def keep_first(root: Path, limit: int) -> None:
    """Keep the first ``limit`` images of each split of the layout in ``root`` (by stem), removing the others.

    ``data.max_images``: a smoke run of the pipeline on a real dataset. The
    choice is by name, so it is the same on every machine; ``root`` is the
    temporary folder ``prepare_dataset`` converts into, never a user's folder.
    """
    for split in SPLITS:
        labels = sorted((root / split / "labels").glob("*.png"))
        for label in labels[limit:]:
            label.unlink()
            for suffix in IMAGE_SUFFIXES:
                (root / split / "images" / f"{label.stem}{suffix}").unlink(missing_ok=True)


def source_fingerprint(params: Params, name: str) -> dict[str, object]:
    """What ``prepare@NAME`` reads from outside the pipeline, summarised so that any change shows.

    For a folder dataset (``data.folders``) and a local copy of a downloaded
    one (``data.local``): its definition, and the count, total size and a
    SHA-256 of the listing (relative path, size, modification time) of every
    file under it (``pipeline.fingerprint.listing_fingerprint``), so an added, removed or edited
    file changes the fingerprint without reading the files. Downloaded datasets
    are tracked by the download stage and params: a constant. The ``sources``
    stage writes it on every ``dvc repro``; ``prepare`` re-runs only when it changed.
    """
    spec = params.data.folder(name)
    if spec is None:
        if name not in params.data.names:
            raise ConfigError(f"unknown dataset {name!r}; allowed: {', '.join(params.data.names)}")
        local = params.data.local.get(name)
        if local is None:
            return {"dataset": name, "source": "built-in"}
        root = Path(local)
        if not root.is_dir():
            raise DataError(f"{root}: folder not found (data.local.{name})")
        return {"dataset": name, "source": "local", "path": str(root.resolve()), **listing_fingerprint(root)}
    root = Path(spec.path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (data.folders.{name})")
    return {
        "dataset": name,
        "source": "folder",
        "definition": spec.model_dump(mode="json"),
        "path": str(root.resolve()),
        **listing_fingerprint(root),
    }


def is_prepared_dataset(folder: Path) -> bool:
    """Whether grar wrote ``folder``: its ``MARKER``, or (a grar from before the marker) the canonical layout."""
    if (folder / MARKER).is_file():
        return True
    try:
        check_layout(folder)
    except DataError:
        return False
    return True


def check_layout(root: Path) -> dict[str, int]:
    """Check ``root`` against the canonical layout; return the number of images per split.

    Checked without decoding: ``classes.csv`` (``pipeline.datasets.layout.read_classes``),
    every split non-empty, every label ``<stem>.png`` with exactly one image
    ``<stem>.jpg`` or ``<stem>.png`` and vice versa.
    """
    table = root / CLASSES_FILE
    if not table.is_file():
        raise DataError(f"{table}: class table not written")
    read_classes(table)
    counts = {}
    for split in SPLITS:
        labels = {p.stem for p in (root / split / "labels").glob("*.png")}
        images = Counter(p.stem for p in (root / split / "images").glob("*") if p.suffix in IMAGE_SUFFIXES)
        if not labels:
            raise DataError(f"{root / split / 'labels'}: empty split: no label written")
        if set(images) != labels or any(n > 1 for n in images.values()):
            odd = sorted((set(images) ^ labels) | {stem for stem, n in images.items() if n > 1})
            raise DataError(f"{root / split}: images and labels do not pair up one to one (e.g. {odd[:3]})")
        counts[split] = len(labels)
    return counts
