"""Downloads against a loopback server: resume, corrupt, idempotent, mirror, TOFU, HTTP errors."""

from __future__ import annotations

import errno
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from pipeline import download
from pipeline.config import with_overrides
from pipeline.datasets.download import ARCHIVES, archives_for, download_dataset, source_paths
from pipeline.download import Archive, fetch, resolve_url
from pipeline.errors import ConfigError, DataError

DATA = bytes(range(256)) * 1031 + b"tail"  # 263,940 bytes: odd, several blocks


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_for(url: str, data: bytes = DATA, checksum: str | None = "auto", extract: bool = False) -> Archive:
    name = url.rsplit("/", 1)[1]
    return Archive(
        key=name,
        filename=name,
        url=url,
        algorithm="sha256",
        checksum=sha256(data) if checksum == "auto" else checksum,
        extract=extract,
    )


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.files["a.bin"] = DATA
    server.drop_once.add("a.bin")
    target = tmp_path / "a.bin"
    digest = fetch(archive_for(server.url("a.bin")), target)
    assert server.requests == [("/a.bin", None), ("/a.bin", f"bytes={len(DATA) // 2}-")]
    assert target.read_bytes() == DATA
    assert digest == sha256(DATA)
    assert not (tmp_path / "a.bin.part").exists()


def test_server_ignoring_range_is_read_from_the_start(server, tmp_path):
    server.files["a.bin"] = DATA
    server.drop_once.add("a.bin")
    server.ignore_range = True
    target = tmp_path / "a.bin"
    fetch(archive_for(server.url("a.bin")), target)
    assert [r[1] for r in server.requests] == [None, f"bytes={len(DATA) // 2}-"]
    assert target.read_bytes() == DATA


def test_complete_part_file_is_finished_without_a_body(server, tmp_path):
    server.files["a.bin"] = DATA
    (tmp_path / "a.bin.part").write_bytes(DATA)  # a previous run died between transfer and verification
    fetch(archive_for(server.url("a.bin")), tmp_path / "a.bin")
    assert server.requests == [("/a.bin", f"bytes={len(DATA)}-")]
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_gives_up_after_the_retries_and_keeps_the_part(server, tmp_path):
    server.files["a.bin"] = DATA
    server.drop_once.add("a.bin")
    with pytest.raises(DataError, match=r"a\.bin: connection closed after 131970 of 263940 bytes; .*resume"):
        fetch(archive_for(server.url("a.bin")), tmp_path / "a.bin", retries=0)
    assert (tmp_path / "a.bin.part").stat().st_size == len(DATA) // 2
    assert not (tmp_path / "a.bin").exists()


def test_corrupt_download_is_deleted_and_reported(server, tmp_path):
    server.files["a.bin"] = DATA[:-1] + b"X"
    expected = sha256(DATA)
    with pytest.raises(DataError) as err:
        fetch(archive_for(server.url("a.bin")), tmp_path / "a.bin")
    message = str(err.value)
    assert server.url("a.bin") in message and "corrupt" in message
    assert f"expected {expected} (published), got {sha256(DATA[:-1] + b'X')}" in message
    assert list(tmp_path.iterdir()) == []


def test_verified_archive_is_not_fetched_again_unless_forced(server, tmp_path):
    server.files["a.bin"] = DATA
    archive = archive_for(server.url("a.bin"))
    fetch(archive, tmp_path / "a.bin")
    fetch(archive, tmp_path / "a.bin")
    assert len(server.requests) == 1
    fetch(archive, tmp_path / "a.bin", force=True)
    assert len(server.requests) == 2


def test_existing_corrupt_archive_is_replaced(server, tmp_path, capsys):
    server.files["a.bin"] = DATA
    (tmp_path / "a.bin").write_bytes(b"truncated")
    fetch(archive_for(server.url("a.bin")), tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == DATA
    assert "checksum mismatch" in capsys.readouterr().out


def test_mirror_replaces_host_and_path_and_keeps_the_file_name(server, tmp_path):
    server.files["mirror/datasets/a.bin"] = DATA
    archive = archive_for("http://official.invalid/some/path/a.bin")
    fetch(archive, tmp_path / "a.bin", mirror=f"{server.base}/mirror/datasets/")
    assert server.requests == [("/mirror/datasets/a.bin", None)]
    assert (tmp_path / "a.bin").read_bytes() == DATA


def test_file_mirror_resumes_a_part(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "a.bin").write_bytes(DATA)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.bin.part").write_bytes(DATA[:1000])
    fetch(
        archive_for("http://official.invalid/a.bin"), tmp_path / "out" / "a.bin", mirror=(tmp_path / "mirror").as_uri()
    )
    assert (tmp_path / "out" / "a.bin").read_bytes() == DATA


@pytest.mark.parametrize("mirror", ["/shared/datasets", "ftp://host/x", "shared"])
def test_mirror_must_be_http_or_file_url(mirror):
    with pytest.raises(ConfigError, match="data.mirror: .* must start with http://, https:// or file://"):
        resolve_url(archive_for("http://official.invalid/a.bin"), mirror)


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DataError, match=rf"^{server.url('missing.bin')}: HTTP 404 Not Found$"):
        fetch(archive_for(server.url("missing.bin")), tmp_path / "missing.bin")


def test_unreachable_host_names_the_url(tmp_path):
    with pytest.raises(DataError, match=r"http://127\.0\.0\.1:9/a\.bin: cannot connect"):
        fetch(archive_for("http://127.0.0.1:9/a.bin"), tmp_path / "a.bin", timeout=2)


def test_registry_has_official_urls_and_checksums():
    names = {a.filename: a for archives in ARCHIVES.values() for a in archives}
    assert names["ADEChallengeData2016.zip"].checksum == "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"
    assert names["ADEChallengeData2016.zip"].algorithm == "sha1"
    assert names["VOCtrainval_03-May-2010.tar"].checksum == "da459979d0c395079b5c75ee67908abb"
    assert names["trainval_merged.json"].checksum == "169325d9f7e9047537fedca7b04de4dddf10b881"
    assert names["trainval_merged.json"].algorithm == "sha1"  # as PyTorch-Encoding and gluon-cv publish it
    assert names["cocostuff-10k-v1.1.zip"].checksum is None  # trust on first use ...
    assert names["cocostuff-10k-v1.1.zip"].url.startswith("https://calvin.inf.ed.ac.uk/")  # ... over https
    assert all(a.url.endswith("/" + a.filename) for a in names.values())
    for archive in names.values():  # the algorithm matches the checksum's length
        assert archive.checksum is None or len(archive.checksum) == hashlib.new(archive.algorithm).digest_size * 2


def test_embedded_and_unknown_datasets_have_no_download():
    with pytest.raises(ConfigError, match="generated, not downloaded"):
        archives_for("embedded")
    with pytest.raises(ConfigError, match="datasets with archives: ade20k, pascal_context, coco_stuff"):
        archives_for("ade2k")


def mini_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("top/readme.txt", "hello")
    return buffer.getvalue()


def test_download_dataset_extracts_once(server, params, monkeypatch):
    data = mini_zip()
    server.files["m/mini.zip"] = data
    monkeypatch.setitem(ARCHIVES, "ade20k", (archive_for("http://official.invalid/mini.zip", data, extract=True),))
    params = with_overrides(params, {"data.mirror": f"{server.base}/m"})
    folder = Path(params.data.downloads) / "ade20k" / "mini"
    assert download_dataset(params, "ade20k") == [folder]
    assert (folder / "top" / "readme.txt").read_text() == "hello"
    stamp = folder / ".grar-extracted"
    assert stamp.read_text() == f"mini.zip sha256 {sha256(data)}"
    before = stamp.stat().st_mtime_ns
    assert download_dataset(params, "ade20k") == [folder]
    assert len(server.requests) == 1 and stamp.stat().st_mtime_ns == before
    assert source_paths(params, "ade20k") == {"mini.zip": folder}


def test_source_paths_tell_which_download_is_missing(params):
    with pytest.raises(DataError, match=r"ADEChallengeData2016 not found: run `grar download ade20k` first"):
        source_paths(params, "ade20k")


def test_resume_answered_from_another_offset_starts_over(server, tmp_path, capsys):
    server.files["a.bin"] = DATA
    server.drop_once.add("a.bin")
    server.range_start = 1000  # a 206 that does not start where the part ends
    target = tmp_path / "a.bin"
    fetch(archive_for(server.url("a.bin")), target)
    half = len(DATA) // 2
    assert server.requests == [("/a.bin", None), ("/a.bin", f"bytes={half}-"), ("/a.bin", None)]
    assert target.read_bytes() == DATA
    assert (
        f"asked to resume at byte {half}, the server answered 'bytes 1000-263939/263940'; downloading from the start"
        in capsys.readouterr().out
    )


class FullDisk:
    """A file opened for writing that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def test_full_disk_keeps_the_part_and_a_later_run_resumes(server, tmp_path, monkeypatch):
    server.files["a.bin"] = DATA
    archive = archive_for(server.url("a.bin"))
    part = tmp_path / "a.bin.part"
    monkeypatch.setattr(
        download,
        "open",
        lambda path, mode="r": FullDisk(open(path, mode), 100_000),  # noqa: SIM115 - FullDisk closes it
        raising=False,
    )
    message = (
        rf"^{part}: disk full \(No space left on device\) after 100,000 bytes of {server.url('a.bin')}; "
        r"the partial download is kept: free some space on that file system and run the command again to resume$"
    )
    with pytest.raises(DataError, match=message):
        fetch(archive, tmp_path / "a.bin")
    assert part.read_bytes() == DATA[:100_000]
    monkeypatch.undo()
    fetch(archive, tmp_path / "a.bin")
    assert server.requests[-1] == ("/a.bin", "bytes=100000-")
    assert (tmp_path / "a.bin").read_bytes() == DATA


def tofu_setup(server, params, monkeypatch, data: bytes):
    """Serve ``data`` as a TOFU archive (no checksum) of 'ade20k' through a mirror; return params and its path."""
    server.files["m/mini.zip"] = data
    archive = archive_for("http://official.invalid/mini.zip", data, checksum=None, extract=True)
    monkeypatch.setitem(ARCHIVES, "ade20k", (archive,))
    params = with_overrides(params, {"data.mirror": f"{server.base}/m"})
    return params, Path(params.data.downloads) / "ade20k" / "mini.zip"


def test_trust_on_first_use_records_after_extraction_then_verifies(server, params, monkeypatch, capsys):
    data = mini_zip()
    params, target = tofu_setup(server, params, monkeypatch, data)
    record = target.with_name("mini.zip.sha256")
    assert fetch(ARCHIVES["ade20k"][0], target, params.data.mirror) == sha256(data)
    assert not record.exists()  # fetched, not extracted yet: not trusted
    download_dataset(params, "ade20k")
    assert record.read_text() == f"{sha256(data)}  mini.zip\n"
    assert f"TRUST ON FIRST USE: it extracted, so recorded sha256 {sha256(data)} in {record}" in capsys.readouterr().out
    server.files["m/mini.zip"] = b"tampered" + data
    recorded = rf"expected {sha256(data)} \(recorded at first use in {record}\)"
    with pytest.raises(DataError, match=rf"{recorded}, got {sha256(b'tampered' + data)} \(a wrong mirror"):
        download_dataset(params, "ade20k", force=True)
    assert record.read_text() == f"{sha256(data)}  mini.zip\n"
    record.write_text("garbage\n")
    with pytest.raises(DataError, match=r"mini\.zip\.sha256: not a sha256 record"):
        download_dataset(params, "ade20k")


def test_error_page_served_as_the_archive_is_never_trusted(server, params, monkeypatch):
    page = b"<!DOCTYPE html>\n<html><head><title>Site maintenance</title></head></html>\n"
    params, target = tofu_setup(server, params, monkeypatch, page)
    message = (
        rf"^{target}: from {server.base}/m/mini\.zip, is not a zip or tar archive: it starts with '<!DOCTYPE html>' "
        r"\(an HTML page, not the archive\); deleted, no checksum recorded \(check the URL or data\.mirror, then run "
        r"the command again\)$"
    )
    with pytest.raises(DataError, match=message):
        download_dataset(params, "ade20k")
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no archive, no record, no folder


def test_archive_that_fails_to_extract_is_not_trusted(server, params, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.txt", "pwned")
    params, target = tofu_setup(server, params, monkeypatch, buffer.getvalue())
    with pytest.raises(DataError, match=r"mini\.zip: refusing to extract: member '\.\./evil\.txt' contains '\.\.'"):
        download_dataset(params, "ade20k")
    assert sorted(p.name for p in target.parent.iterdir()) == ["mini.zip"]  # kept to inspect, not trusted


def test_error_page_instead_of_a_published_archive_says_what_it_is(server, tmp_path):
    server.files["a.zip"] = b"<html><body>404</body></html>"
    archive = archive_for(server.url("a.zip"), data=mini_zip(), extract=True)
    with pytest.raises(
        DataError, match=r"a\.zip: corrupt download, deleted: .*; it starts with '<html><body>404</body>"
    ):
        fetch(archive, tmp_path / "a.zip")
