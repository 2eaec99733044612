"""Cost of the source fingerprint of a local dataset copy (``pipeline.datasets.prepare.listing_fingerprint``).

``sources@NAME`` lists every file of a ``data.local`` / ``data.folders`` folder
on every ``dvc repro`` (names, sizes, modification times; no content read).
Builds a tree shaped like COCO-Stuff-10k unpacked (``images/`` and
``annotations/`` of ``--files / 2`` small files each, ``imageLists/``) in a
temporary folder, then prints files/s of the ``os.scandir`` listing beside the
``Path.rglob`` + ``stat`` listing it replaced (same fingerprint, checked), and the ratio.

    .venv/bin/python benchmarks/listing_throughput.py [--files 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from prepare_throughput import timed  # beside this script: best wall time of `repeats` calls

from pipeline.datasets.prepare import listing_fingerprint


def rglob_fingerprint(root: Path) -> dict[str, object]:
    """The listing as grar computed it before ``listing_fingerprint``: ``sorted(rglob)``, then a stat per path."""
    listing = hashlib.sha256()
    files = size = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            listing.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files, size = files + 1, size + stat.st_size
    return {"files": files, "bytes": size, "listing_sha256": listing.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000, help="images + annotations (COCO-Stuff-10k: 20000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder, suffix in (("images", ".jpg"), ("annotations", ".mat")):
            (root / folder).mkdir()
            for index in range(args.files // 2):
                (root / folder / f"COCO_train2014_{index:012d}{suffix}").write_bytes(b"x")
        (root / "imageLists").mkdir()
        (root / "imageLists" / "train.txt").write_text("x\n")
        assert listing_fingerprint(root) == rglob_fingerprint(root)
        files = listing_fingerprint(root)["files"]
        rates = {
            "rglob + stat (before)": files / timed(lambda: rglob_fingerprint(root), args.repeats),
            "os.scandir (listing_fingerprint)": files / timed(lambda: listing_fingerprint(root), args.repeats),
        }
    print(f"listing a tree of {files} files (best of {args.repeats})")
    for name, rate in rates.items():
        print(f"  {name:<34} {rate:>10,.0f} files/s")
    before, after = rates.values()
    print(f"  ratio scandir / rglob: {after / before:.2f}x")


if __name__ == "__main__":
    main()
