"""Safe extraction: malicious zip/tar members are refused and nothing is extracted."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.datasets import extract
from pipeline.datasets.extract import Member, archive_stem, extract_archive, unsafe_reason
from pipeline.errors import DataError


def make_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # S_IFLNK
            zf.writestr(info, target)
    return path


def make_tar(path: Path, files: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    """``links``: name -> (tarfile.SYMTYPE | LNKTYPE, target), stored before the files (as an attack would)."""
    with tarfile.open(path, "w") as tf:
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def assert_nothing_extracted(tmp_path: Path, target: Path) -> None:
    assert not target.exists()
    assert not target.parent.exists()  # refused before any folder (temporary or not) is made
    assert not (tmp_path / "evil.txt").exists()


def test_good_zip_and_tar_extract_with_stamp(tmp_path):
    files = {"root/a.txt": b"alpha", "root/sub/b.txt": b"beta"}
    for archive in (make_zip(tmp_path / "x.zip", files), make_tar(tmp_path / "x.tar", files)):
        target = tmp_path / "out" / archive_stem(archive.name)
        extract_archive(archive, target, stamp="sha1 abc")
        assert (target / "root" / "a.txt").read_bytes() == b"alpha"
        assert (target / "root" / "sub" / "b.txt").read_bytes() == b"beta"
        assert (target / ".grar-extracted").read_text() == "sha1 abc"


def test_links_inside_the_target_are_kept(tmp_path):
    tar = make_tar(tmp_path / "x.tar", {"d/a.txt": b"alpha"}, {"d/link": (tarfile.SYMTYPE, "a.txt")})
    extract_archive(tar, tmp_path / "t")
    assert (tmp_path / "t" / "d" / "link").is_symlink()
    assert (tmp_path / "t" / "d" / "link").read_bytes() == b"alpha"
    zipped = make_zip(tmp_path / "x.zip", {"d/a.txt": b"alpha"}, {"d/link": "a.txt"})
    extract_archive(zipped, tmp_path / "z")
    assert (tmp_path / "z" / "d" / "link").read_bytes() == b"alpha"


def test_zip_with_dotdot_member_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bad.zip", {"ok/a.txt": b"fine", "ok/../../evil.txt": b"pwned"})
    target = tmp_path / "out" / "bad"
    with pytest.raises(
        DataError, match=r"bad\.zip: refusing to extract: member 'ok/\.\./\.\./evil\.txt' contains '\.\.'"
    ):
        extract_archive(archive, target)
    assert_nothing_extracted(tmp_path, target)


def test_zip_with_symlink_out_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bad.zip", {"a.txt": b"fine"}, {"escape": "../../etc"})
    with pytest.raises(DataError, match="member 'escape' is a link pointing out of the target"):
        extract_archive(archive, tmp_path / "out" / "bad")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "bad")


def test_tar_with_absolute_member_is_refused(tmp_path):
    archive = make_tar(tmp_path / "bad.tar", {"a.txt": b"fine", str(tmp_path / "evil.txt"): b"pwned"})
    target = tmp_path / "out" / "bad"
    with pytest.raises(DataError, match="has an absolute path; nothing was extracted"):
        extract_archive(archive, target)
    assert_nothing_extracted(tmp_path, target)


def test_tar_with_symlink_out_is_refused(tmp_path):
    archive = make_tar(tmp_path / "bad.tar", {"a.txt": b"fine"}, {"d/up": (tarfile.SYMTYPE, "../../evil.txt")})
    with pytest.raises(
        DataError, match=r"member 'd/up' is a link pointing out of the target \('\.\./\.\./evil\.txt'\)"
    ):
        extract_archive(archive, tmp_path / "out" / "bad")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "bad")


def test_tar_writing_through_an_inner_symlink_is_refused(tmp_path):
    # 'x' -> 'd' is harmless alone, but a later link could retarget 'x'; writing 'x/f' through it is refused.
    archive = make_tar(tmp_path / "bad.tar", {"x/f": b"through"}, {"x": (tarfile.SYMTYPE, "d")})
    with pytest.raises(DataError, match="member 'x/f' is written through a link stored in the archive"):
        extract_archive(archive, tmp_path / "out" / "bad")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "bad")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (Member("/etc/passwd", "file"), "has an absolute path"),
        (Member("C:\\evil.txt", "file"), "has an absolute path"),
        (Member("a\\..\\..\\evil.txt", "file"), "contains '..'"),
        (Member("a/b", "symlink", "/etc"), "is a link to an absolute path ('/etc')"),
        (Member("a/b", "symlink", "../.."), "is a link pointing out of the target ('../..')"),
        (Member("a/b", "hardlink", "../x"), "is a link pointing out of the target ('../x')"),
        (Member("a/b", "symlink", "l/.."), "is a link through another link ('l/..')"),
        (Member("dev/null", "special"), "is a device or FIFO"),
        (Member("a/b", "symlink", "../c"), None),  # a/../c stays inside
        (Member("a/b", "hardlink", "a/c"), None),  # hard links are relative to the archive root
        (Member("a/./b.txt", "file"), None),
    ],
)
def test_unsafe_reason(member, reason):
    assert unsafe_reason(member, links={"a/l", "l"}) == reason


def test_tar_with_hardlink_out_is_refused(tmp_path):
    archive = make_tar(tmp_path / "bad.tar", {"a.txt": b"fine"}, {"h": (tarfile.LNKTYPE, "../evil.txt")})
    with pytest.raises(DataError, match="member 'h' is a link pointing out"):
        extract_archive(archive, tmp_path / "out" / "bad")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "bad")


def test_tar_with_fifo_is_refused(tmp_path):
    archive = make_tar(tmp_path / "bad.tar", {"a.txt": b"fine"})
    with tarfile.open(archive, "a") as tf:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        tf.addfile(info)
    with pytest.raises(DataError, match="member 'pipe' is a device or FIFO"):
        extract_archive(archive, tmp_path / "out" / "bad")


def test_not_an_archive_and_truncated_archive(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match=r"junk\.zip: not a zip or tar archive"):
        extract_archive(tmp_path / "junk.zip", tmp_path / "out" / "junk")
    good = make_zip(tmp_path / "good.zip", {"a.txt": b"x" * 5000})
    data = bytearray(good.read_bytes())
    data[40:60] = b"\0" * 20  # damage the member's data, keep the directory readable
    good.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"good\.zip: corrupt archive"):
        extract_archive(good, tmp_path / "out" / "good")
    assert not (tmp_path / "out" / "good").exists()


def patch_zip(path: Path, flags: int | None = None, method: int | None = None) -> Path:
    """Rewrite the general-purpose flags and/or compression method of every member, in both headers."""
    data = bytearray(path.read_bytes())
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        while at != -1:
            if flags is not None:
                data[at + flag_at : at + flag_at + 2] = flags.to_bytes(2, "little")
            if method is not None:
                data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


def test_zip_bomb_member_is_refused_by_its_ratio(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("zeros.bin", bytes(4 * 1024**2))  # 4 MiB of zeros deflate to ~4 KiB
    packed = zipfile.ZipFile(archive).getinfo("zeros.bin").compress_size
    ratio = f"{4 * 1024**2 / packed:,.0f}"
    message = (
        rf"bomb\.zip: refusing to extract: member 'zeros\.bin' expands {packed:,} bytes to 4,194,304 "
        rf"\(ratio {ratio}:1, cap 200:1\): a zip bomb\?; nothing was extracted$"
    )
    with pytest.raises(DataError, match=message):
        extract_archive(archive, tmp_path / "out" / "bomb")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "bomb")


def test_small_compressible_members_are_not_bombs(tmp_path):
    archive = tmp_path / "text.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("objectInfo150.txt", b"1\t0.1\twall\n" * 50_000)  # 550 KB at ~300:1, under the 1 MiB floor
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "objectInfo150.txt").stat().st_size == 550_000


def test_tar_of_sparse_or_gzip_bomb_is_refused_by_its_overall_ratio(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 8 * 1024**2
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    size = archive.stat().st_size
    message = (
        rf"bomb\.tar\.gz: refusing to extract: {size:,} bytes expand to 8,388,608 \(ratio {8 * 1024**2 / size:,.0f}:1, "
        rf"cap 200:1\): a tar bomb\?; nothing was extracted$"
    )
    with pytest.raises(DataError, match=message):
        extract_archive(archive, tmp_path / "out" / "bomb")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "bomb")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_members_are_refused(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(extract, "MAX_MEMBERS", 3)
    files = {f"f{i}.txt": b"x" for i in range(5)}
    archive = (make_zip if kind == "zip" else make_tar)(tmp_path / f"many.{kind}", files)
    message = rf"many\.{kind}: refusing to extract: more than 3 members \(the cap; the real archives have under "
    with pytest.raises(DataError, match=message):
        extract_archive(archive, tmp_path / "out" / "many")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "many")


def test_total_size_cap_and_free_disk_space(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "big.tar", {"a.bin": bytes(3000), "b.bin": bytes(2000)})
    monkeypatch.setattr(extract, "MAX_TOTAL_BYTES", 4999)
    over = r"big\.tar: refusing to extract: 5,000 bytes unpacked, over the cap of 4,999: a zip bomb\?"
    with pytest.raises(DataError, match=over):
        extract_archive(archive, tmp_path / "out" / "big")
    monkeypatch.setattr(extract, "MAX_TOTAL_BYTES", 5000)
    free = 5000 + 2 * 4096 + extract.FREE_MARGIN - 1  # one byte short
    seen = []
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda path: seen.append(path) or SimpleNamespace(free=free))
    target = tmp_path / "out" / "big"
    message = (
        rf"big\.tar: not enough disk space to extract into {target}: needs {free + 1:,} bytes \(5,000 unpacked, "
        rf"2 members, 268,435,456 kept free\) but {free:,} are free; nothing was extracted$"
    )
    with pytest.raises(DataError, match=message):
        extract_archive(archive, target)
    assert seen == [tmp_path]  # the nearest existing folder: the target's file system
    assert_nothing_extracted(tmp_path, target)


@pytest.mark.parametrize(
    ("flags", "method", "reason"),
    [
        (0x1, None, "is encrypted \\(password-protected\\)"),
        (
            None,
            9,
            r"uses compression method 9 \(Deflate64, as Windows zips large files\), which Python's zipfile "
            "cannot read",
        ),
        (None, 42, "uses compression method 42, which Python's zipfile cannot read"),
    ],
)
def test_encrypted_or_unsupported_zip_member_is_one_line(tmp_path, flags, method, reason):
    archive = patch_zip(make_zip(tmp_path / "locked.zip", {"d/a.txt": b"secret"}), flags=flags, method=method)
    message = rf"^{tmp_path}/locked\.zip: refusing to extract: member 'd/a\.txt' {reason}; nothing was extracted$"
    with pytest.raises(DataError, match=message):
        extract_archive(archive, tmp_path / "out" / "locked")
    assert_nothing_extracted(tmp_path, tmp_path / "out" / "locked")


@pytest.mark.parametrize(
    ("content", "looks"),
    [
        (
            b"<!DOCTYPE html>\n<html><body>503 Service Unavailable</body></html>",
            "it starts with '<!DOCTYPE html>' \\(an HTML page, not the archive\\)",
        ),
        (b"", "it is empty"),
        (b"\x89PNG\r\n\x1a\n\0\0", "it starts with the bytes 89 50 4e 47 0d 0a 1a 0a"),
    ],
)
def test_not_an_archive_says_what_it_looks_like(tmp_path, content, looks):
    (tmp_path / "page.zip").write_bytes(content)
    with pytest.raises(DataError, match=rf"page\.zip: not a zip or tar archive: {looks}$"):
        extract_archive(tmp_path / "page.zip", tmp_path / "out" / "page")
