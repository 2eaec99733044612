"""Cost of a run's data identity (``pipeline.rundir.data_fingerprint``) on a prepared dataset of ``--images``.

The run identity holds the content SHA-256 of the training dataset *as it is
now*: the listing (relative path, size, modification time of every file) is
compared with the one ``prepare`` recorded, and every byte is read again only
when it differs. Builds a prepared tree of ``--images`` images of ``--image-kb``
KB and as many labels of ``--label-kb`` KB (split 80/20 into train and val,
ADE20K-like defaults), records its fingerprints as ``prepare`` does, then
prints the wall time of:

- the marker alone (what the identity cost before: the data was not looked at);
- unchanged data in a fresh process (the listing: one ``stat`` per file);
- one file edited (the listing, then every byte hashed, then the hash kept beside the data);
- the same edited data in the next process (the listing, then the hash kept beside the data).

    .venv/bin/python benchmarks/data_identity.py [--images 25000] [--image-kb 100] [--label-kb 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import rundir
from pipeline.fingerprint import content_fingerprint
from pipeline.paths import DATASET_MARKER


def fresh_process() -> None:
    """Forget what this process knows of the data (as a new `grar` process would)."""
    rundir._listings.clear()
    rundir._contents.clear()
    rundir._read_marker.cache_clear()


def best(fn: Callable[[], object], repeats: int, before: Callable[[], None] = fresh_process) -> float:
    """Best wall time of ``repeats`` calls of ``fn``, each after ``before``."""
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build(root: Path, images: int, image_kb: int, label_kb: int) -> int:
    """The prepared tree (random bytes stand in for JPEGs and PNGs: hashing does not decode); its size in bytes."""
    block = os.urandom(max(image_kb, label_kb) * 1024)
    for index in range(images):
        split = "train" if index % 5 else "val"
        for kind, kb, suffix in (("images", image_kb, ".jpg"), ("labels", label_kb, ".png")):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:08d}{suffix}").write_bytes(index.to_bytes(4, "big") + block[: kb * 1024 - 4])
    (root / "classes.csv").write_text("id,name\n0,a\n1,b\n")
    return images * (image_kb + label_kb) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=25000)
    parser.add_argument("--image-kb", type=int, default=100, help="bytes per image (ADE20K's JPEGs: ~100 KB)")
    parser.add_argument("--label-kb", type=int, default=8, help="bytes per label PNG")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "data" / "mine"
        size = build(dataset, args.images, args.image_kb, args.label_kb)
        marker = {"dataset": "mine", **content_fingerprint(dataset, skip=DATASET_MARKER)}
        (dataset / DATASET_MARKER).write_text(json.dumps(marker))
        prepared = marker["sha256"]
        figures = {
            "marker only (before: the data itself not looked at)": best(
                lambda: json.loads((dataset / DATASET_MARKER).read_text())["sha256"], args.repeats
            ),
            "unchanged data (listing)": best(lambda: rundir.data_fingerprint(dataset), args.repeats),
        }
        assert rundir.data_fingerprint(dataset) == prepared
        edited = dataset / "train" / "images" / "00000001.jpg"
        counter = iter(range(1 << 30))

        def edit() -> None:
            fresh_process()
            (dataset.parent / rundir.FINGERPRINTS / "mine.json").unlink(missing_ok=True)
            edited.write_bytes(next(counter).to_bytes(8, "big") + edited.read_bytes()[8:])

        figures["one file edited (listing + every byte read)"] = best(
            lambda: rundir.data_fingerprint(dataset), args.repeats, edit
        )
        figures["edited, next process (listing + the hash kept beside the data)"] = best(
            lambda: rundir.data_fingerprint(dataset), args.repeats
        )
        assert rundir.data_fingerprint(dataset) != prepared
    files = 2 * args.images + 1
    print(
        f"data identity of a prepared dataset of {args.images:,} images ({files:,} files, "
        f"{size / 2**30:.2f} GiB), best of {args.repeats}:"
    )
    for name, seconds in figures.items():
        print(f"  {name:<66} {seconds:8.3f} s")
    print(f"  hashing rate: {size / 2**20 / figures['one file edited (listing + every byte read)']:,.0f} MiB/s")


if __name__ == "__main__":
    main()
