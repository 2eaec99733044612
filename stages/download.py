"""DVC stage `download`: fetch, verify and extract the archives of every real dataset in data.datasets.

Generated datasets (the embedded one) have no archives and are skipped. The
stage also writes ``manifest.json`` into the downloads folder: for each dataset,
the archive files and their checksums that the prepare stage reads (an empty
mapping in the embedded profile). A dataset read from a local copy
(``data.local``) is not downloaded: the manifest names its folder's entries,
so pointing ``data.local`` elsewhere re-runs prepare.
"""

from __future__ import annotations

import json

from pipeline.config import Params
from pipeline.datasets.download import ARCHIVES, download_dataset
from pipeline.io import write_text_atomic
from pipeline.paths import downloads_dir
from stages import stage_main


def download_all(params: Params) -> dict[str, list[str]]:
    """Download every dataset of ``params.data.datasets`` that has archives; return and record what was fetched."""
    root = downloads_dir(params)
    manifest = {
        name: [
            str(path.relative_to(root) if path.is_relative_to(root) else path.resolve())
            for path in download_dataset(params, name)
        ]
        for name in params.data.datasets
        if name in ARCHIVES
    }
    write_text_atomic(downloads_dir(params) / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main() -> None:
    stage_main(download_all, "download")


if __name__ == "__main__":
    main()
