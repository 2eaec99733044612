"""Safe extraction: malicious zip/tar members are refused and nothing is extracted."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.datasets.extract import Member, archive_stem, extract_archive, unsafe_reason
from pipeline.errors import DataError


def make_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK
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
    with pytest.raises(DataError, match=r"bad\.zip: refusing to extract: member 'ok/\.\./\.\./evil\.txt' contains '\.\.'"):
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
    with pytest.raises(DataError, match=r"member 'd/up' is a link pointing out of the target \('\.\./\.\./evil\.txt'\)"):
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
