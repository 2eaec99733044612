"""The run-folder contract, without torch: the files of a run folder, the config hash, finished metrics, the log.

A run folder ``<grid.runs>/<cell>-s<seed>-<hash10>/`` (or ``grar train --out``)
holds, written by ``pipeline.training.run.run_cell``:

- ``config.yaml``: the resolved params, written at start;
- ``train_log.csv``: one row per iteration (``LOG_COLUMNS``): ``iteration``
  (1-based: the row of iteration i is written after i steps), ``lr``, ``loss``
  (the weighted total that is minimised), the unweighted terms ``ce``, ``aux``,
  ``coarse``, ``sr``, ``danet`` (empty when the run has no such term),
  ``seconds`` (wall time of the iteration, data loading included),
  ``lambda_pos`` and ``lambda_neg`` (GRAr's learnt λ of Eq. 2 and λ̂ of Eq. 3
  after the iteration's step; empty for other heads and for a disabled
  direction; logs written before these columns existed simply lack them);
- ``checkpoint.pt``: ``pipeline.training.checkpoint.save_checkpoint`` (model,
  criterion and optimiser states, iteration, RNG states, params, config hash,
  class names: all that rebuilds the model);
- ``metrics.json``, written last: ``pipeline.training.run.run_cell`` (scores
  single scale and MS, iterations, times, provenance);
- ``confusion.npy``, ``confusion_ms.npy``: the (K, K) int64 dataset-level
  confusion matrices, rows = ground truth; ``confusion_images.npz``,
  ``confusion_images_ms.npz``: the same counts per val image, sparse
  (``pipeline.scores.per_image``);
- ``.grar-run`` (``RUN_MARKER``), the lock ``grar.lock.N`` (``pipeline.lock``)
  and, after a failure, ``error.txt`` (``pipeline.cluster.grids``).

A run is *done* when its ``metrics.json`` holds its config's hash
(``finished_metrics``). ``pipeline.cluster`` and the report find, name and read
runs through this module (``grar grid status`` answers without importing torch).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import ADDED_KEYS, IMAGENET, Params, default_of
from pipeline.errors import DataError
from pipeline.fingerprint import Entry, content_sha256, listing_sha256, walk
from pipeline.io import write_text_atomic
from pipeline.lock import RUN_LOCK
from pipeline.paths import DATASET_MARKER
from pipeline.weights import published_for

CONFIG_FILE = "config.yaml"
LOG_FILE = "train_log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.npy"
CONFUSION_MS_FILE = "confusion_ms.npy"
RUN_MARKER = ".grar-run"  # in every run folder grar trains into: what grar wrote, and may write again
CONFUSION_IMAGES_FILE = "confusion_images.npz"  # per image, sparse (pipeline.scores.per_image)
CONFUSION_IMAGES_MS_FILE = "confusion_images_ms.npz"
TERMS = ("ce", "aux", "coarse", "sr", "danet")
LAMBDAS = ("lambda_pos", "lambda_neg")  # GRAr's λ (Eq. 2) and λ̂ (Eq. 3) after each iteration; logs before had none
LOG_COLUMNS = ("iteration", "lr", "loss", *TERMS, "seconds", *LAMBDAS)
# Sections and keys that change neither the trained model nor its evaluation: left out of the config hash.
# Worker counts only parallelise work whose result does not depend on them (per-sample seeding, deterministic
# generation and counting); the mirror only changes where verified archives come from.
# Which datasets the pipeline prepares (data.datasets) and the other datasets' folders (data.folders) do not
# change a run either: only the definition of the run's own dataset (``train.dataset``) is hashed. Where a
# local copy of a dataset lies (data.local) does not either: the prepared data's fingerprint is hashed. Of the
# weights section only the file of the run's backbone counts (``model.pretrained`` resolved).
UNHASHED = ("grid", "executor", "bench", "profile", "weights")
UNHASHED_KEYS = (
    ("data", "workers"),
    ("data", "mirror"),
    ("stats", "workers"),
    ("train", "workers"),
    ("data", "datasets"),
    ("data", "folders"),
    ("data", "local"),
)
# Keys added after runs were trained (``pipeline.config.ADDED_KEYS``), each at its default, the value that does
# what grar did before the key existed: at that value a key is left out of the hash, so the runs trained before
# it keep their identity (their folders are collected, never retrained); any other value is hashed. (A
# schedule's optional ``head_lr_mult`` is left out of the dump itself when unset: ``ScheduleConfig``.)
NEUTRAL: dict[tuple[str, ...], Any] = {path: default_of(path) for path in ADDED_KEYS}


def config_hash(params: Params) -> str:
    """SHA-256 (hex) of the canonical JSON of ``run_identity(params)``: a run's identity."""
    return hashlib.sha256(json.dumps(run_identity(params), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_identity(params: Params) -> dict[str, Any]:
    """What ``config_hash`` digests: ``params`` as JSON types without ``UNHASHED`` / ``UNHASHED_KEYS``.

    A folder dataset's definition (path, ignore, remap) is part of the identity
    of the runs that train on it, as ``data.train_folder``, and so is the content
    fingerprint of the prepared training dataset as it is now (``data_fingerprint``:
    every file of ``data.root/<train.dataset>``, both splits), so re-prepared or
    edited data never passes an old run off as done, and unchanged data keeps
    the hash it had. Before the dataset is
    prepared the fingerprint is ``None``: run folders named then differ from
    the ones named after. ``model.pretrained: imagenet`` is hashed as the path
    it resolves to (``pipeline.weights``: the ``weights.files`` entry of the backbone and stem, so
    another backbone's file or a mirror leaves the hash alone), and a published
    ImageNet file with its published checksum (the content the weights stage
    verified). Null and a file of the user's are hashed as written. Keys added
    after runs existed are left out at their ``NEUTRAL`` value.
    """
    raw = {key: value for key, value in params.model_dump(mode="json").items() if key not in UNHASHED}
    for section, key in UNHASHED_KEYS:
        del raw[section][key]
    for path, neutral in NEUTRAL.items():
        *parents, last = path
        node = functools.reduce(lambda section, name: section[name], parents, raw)
        if node[last] == neutral and type(node[last]) is type(neutral):
            del node[last]
    if params.model.pretrained == IMAGENET:  # the path as weights.files writes it; a path of yours is kept as is
        raw["model"]["pretrained"] = params.weights.files[params.model.imagenet_file]
    published = published_for(params.model, params.weights)
    if published is not None:  # null and files of yours add nothing: those runs keep their hash
        raw["model"]["pretrained_published"] = f"{published.filename} {published.algorithm} {published.checksum}"
    folder = params.data.folder(params.train.dataset)
    if folder is not None:
        raw["data"]["train_folder"] = folder.model_dump(mode="json")
    raw["data"]["train_data_sha256"] = data_fingerprint(Path(params.data.root) / params.train.dataset)
    return raw


LISTING_TTL_S = 60.0  # a process lists a dataset's files again at most this often (data_fingerprint)
FINGERPRINTS = ".grar-fingerprints"  # <data.root>/.grar-fingerprints/<name>.json: content hash of the latest listing


def data_fingerprint(dataset: Path) -> str | None:
    """The content SHA-256 of prepared dataset folder ``dataset`` as it is now; ``None`` when not prepared (yet).

    ``prepare`` records in the dataset's marker its content SHA-256 and its listing (relative path, size and
    modification time of every file: ``pipeline.fingerprint``). The listing of the files as they are now
    (one ``stat`` per file, at most once per ``LISTING_TTL_S`` per process) is compared with it: the same
    listing is the recorded content hash, so unchanged data keeps its runs. Another listing (a file edited,
    added or removed, or copied without its times) costs one read of every byte; that content hash is kept in
    ``<data.root>/.grar-fingerprints/<name>.json`` beside the data for the next processes (never inside the
    dataset, whose content DVC tracks), and when it is not the prepared one a note says so once.
    """
    marker = dataset / DATASET_MARKER
    try:
        stat = marker.stat()
    except OSError:
        return None
    recorded = _read_marker(marker, stat.st_mtime_ns, stat.st_size)
    if recorded is None:
        return None
    prepared, prepared_listing = recorded
    listing, entries = _listing(dataset)
    if listing == prepared_listing:
        return prepared
    cached = _cached_content(dataset, listing)
    if cached is None:
        cached = content_sha256(dataset, entries if entries is not None else walk(dataset, DATASET_MARKER))
        _cache_content(dataset, listing, cached)
    if cached != prepared and (dataset, listing) not in _noted:
        _noted.add((dataset, listing))
        print(
            f"grar: note: {dataset}: its files changed since `grar prepare` (content sha256 {cached[:12]}, prepared "
            f"{prepared[:12]}): runs train on the data as it is now, as new runs; prepare it again to go back",
            file=sys.stderr,
            flush=True,
        )
    return cached


_listings: dict[Path, tuple[float, str]] = {}  # dataset -> (when listed, listing SHA-256)
_contents: dict[tuple[Path, str], str] = {}  # (dataset, listing SHA-256) -> content SHA-256
_noted: set[tuple[Path, str]] = set()


def _listing(dataset: Path) -> tuple[str, list[Entry] | None]:
    """The listing SHA-256 of ``dataset`` now (the files but the marker), and the entries when just walked."""
    now = time.monotonic()
    known = _listings.get(dataset)
    if known is not None and now - known[0] < LISTING_TTL_S:
        return known[1], None
    entries = walk(dataset, DATASET_MARKER)
    listing = listing_sha256(entries)
    _listings[dataset] = (now, listing)
    return listing, entries


def _cached_content(dataset: Path, listing: str) -> str | None:
    """The content SHA-256 known for ``listing`` of ``dataset`` (this process, or the file beside the data)."""
    if (dataset, listing) in _contents:
        return _contents[dataset, listing]
    try:
        raw = json.loads((dataset.parent / FINGERPRINTS / f"{dataset.name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(raw, dict) and raw.get("listing_sha256") == listing and isinstance(raw.get("sha256"), str):
        _contents[dataset, listing] = raw["sha256"]
        return raw["sha256"]
    return None


def _cache_content(dataset: Path, listing: str, content: str) -> None:
    """Remember ``content`` for ``listing``, here and (when the folder is writable) beside the data."""
    _contents[dataset, listing] = content
    with contextlib.suppress(OSError):
        write_text_atomic(
            dataset.parent / FINGERPRINTS / f"{dataset.name}.json",
            json.dumps({"listing_sha256": listing, "sha256": content}) + "\n",
        )


@functools.lru_cache(maxsize=64)
def _read_marker(marker: Path, _mtime_ns: int, _size: int) -> tuple[str, str | None] | None:
    """(content SHA-256, listing SHA-256 or ``None`` for a marker of an older grar) of a dataset marker."""
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("sha256"), str):
        return None
    listing = raw.get("listing_sha256")
    return raw["sha256"], listing if isinstance(listing, str) else None


def is_run_folder(folder: Path) -> bool:
    """Whether grar wrote ``folder``: its ``RUN_MARKER``, its lock (``pipeline.lock``: a run killed before the
    marker), or (older grar) a checkpoint or finished metrics."""
    if any((folder / name).is_file() for name in (RUN_MARKER, CHECKPOINT_FILE, METRICS_FILE)):
        return True
    return any(path.name.startswith(f"{RUN_LOCK}.") for path in folder.iterdir())


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a ``train_log.csv`` as dicts (column -> text)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# Tracked files that `dvc repro` rewrites while it runs: a change there does not make the source dirty.
GENERATED = ("dvc.lock",)
SOURCE_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def source_commit(root: Path = SOURCE_ROOT) -> str:
    """``git rev-parse HEAD`` of the source tree ``root`` (+ ``-dirty`` when ``git status`` shows changes).

    Changes to ``GENERATED`` files do not count: the pipeline updates
    ``dvc.lock`` stage by stage, and runs trained on a clean checkout must not
    read as dirty. ``unknown`` when git or the repository is not there (an
    installed copy).
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain", "--", ".", *(f":(exclude){path}" for path in GENERATED))
        return commit + ("-dirty" if changes else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def finished_metrics(run_dir: Path, digest: str) -> dict[str, Any] | None:
    """The ``metrics.json`` of a finished run of config ``digest``; ``None`` when there is none.

    A ``metrics.json`` of another config is an error: the folder belongs to another run.
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        stored = metrics["provenance"]["config_hash"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: unreadable metrics ({err}); delete it to evaluate the run again") from None
    if stored != digest:
        raise DataError(
            f"{path}: finished run of another configuration (config hash {stored[:10]}, this run {digest[:10]}); "
            "train into another folder"
        )
    return metrics
