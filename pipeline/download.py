"""Downloading a published file: resumable, verified, idempotent, mirror-aware (datasets' archives, weights).

An ``Archive`` is one published file: its official URL, name and checksum. ``fetch``
brings it to a target path; the datasets (``pipeline.datasets.download``) and
the backbones' ImageNet weights (``pipeline.weights``) both go through it:

- **Resumable.** Bytes arrive in ``<file>.part``; a later attempt asks the server
  for the rest with an HTTP ``Range`` request (a server that ignores it, or answers
  with another range than asked, is read from the start). A dropped connection or
  a timeout is retried a few times; a full disk stops with the ``.part`` kept.
- **Verified before use.** A finished ``.part`` is hashed; only a match is renamed
  to ``<file>``. A mismatch deletes it and raises ``DataError`` with the expected
  and actual checksums. An existing ``<file>`` is re-hashed at every call.
- **Idempotent.** A verified file is not fetched again (no request is made);
  ``force=True`` fetches it anyway.
- **Mirror.** A mirror (``https://host/path``, ``http://...``, ``file:///path``,
  or for weights a local folder) replaces the official host and path; the file
  name is kept: ``<mirror>/<file name>`` (``resolve_url``).
- **Checksum prefixes.** A file published with only the first hex digits of its
  SHA-256 (torch.hub's ``name-<prefix>.pth`` convention: ``pipeline.weights``)
  is checked against that prefix, and its full digest is then recorded as below.
- **Trust on first use (TOFU).** A file published without a checksum (COCO-Stuff-10k)
  or with a prefix only gets its full SHA-256 recorded in ``<file>.sha256`` beside
  it once it proved good (``record_tofu``), loudly; every later use verifies
  against that record. A download that should be an archive but is no zip or tar
  (an HTML error page a mirror serves with status 200) is deleted and named.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from pipeline.errors import ConfigError, DataError
from pipeline.io import write_text_atomic

CHUNK = 1 << 20


TOFU_ALGORITHM = "sha256"


@dataclass(frozen=True)
class Archive:
    """One downloadable file of a dataset.

    ``checksum`` is ``None`` when the publisher gives none: trust on first use;
    shorter than a full digest, it is a published prefix (``prefix``).
    ``extract`` says whether the file is a zip/tar to unpack (else it is read as is).
    """

    key: str
    filename: str
    url: str
    algorithm: str
    checksum: str | None
    extract: bool

    @property
    def prefix(self) -> bool:
        """Whether only a prefix of the digest is published (the full one is recorded at first use)."""
        return self.checksum is not None and len(self.checksum) < 2 * hashlib.new(self.algorithm).digest_size

    @property
    def trusted_on_first_use(self) -> bool:
        """Whether the full digest is recorded at first use rather than published."""
        return self.checksum is None or self.prefix


class TransferInterrupted(Exception):
    """A transfer stopped early; what arrived stays in the ``.part`` file for a resume."""


def resolve_url(archive: Archive, mirror: str | None, key: str = "data.mirror", local_folders: bool = False) -> str:
    """The official URL, or ``<mirror>/<file name>`` when a mirror is set.

    ``local_folders``: a mirror without a scheme is a local folder (``/shared/weights``).
    """
    if mirror is None:
        return archive.url
    if local_folders and urlparse(mirror).scheme == "":
        return (Path(mirror).absolute() / archive.filename).as_uri()
    if urlparse(mirror).scheme not in ("http", "https", "file"):
        raise ConfigError(
            f"{key}: {mirror!r} must start with http://, https:// or file:// (e.g. file:///shared/datasets)"
        )
    return f"{mirror.rstrip('/')}/{archive.filename}"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of ``path``, with a progress bar (archives are gigabytes)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f, byte_bar(path.stat().st_size, f"verify {path.name}", leave=False) as bar:
        while block := f.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def expected_checksum(archive: Archive, target: Path) -> str | None:
    """The published checksum, or the one recorded at first use (``None``: not recorded yet).

    A published prefix counts until the full digest is recorded; a record that contradicts it raises ``DataError``.
    """
    if not archive.trusted_on_first_use:
        return archive.checksum
    record = tofu_record(target)
    if not record.exists():
        return archive.checksum
    digest = (record.read_text(encoding="utf-8").split() or [""])[0]
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or not digest.startswith(archive.checksum or ""):
        raise DataError(
            f"{record}: not a {TOFU_ALGORITHM} record of {archive.filename} (expected '<64 hex digits"
            f"{', starting ' + archive.checksum if archive.checksum else ''}>  {target.name}')"
        )
    return digest


def matches(actual: str, expected: str | None) -> bool:
    """Whether digest ``actual`` is ``expected`` (or starts with it, when a prefix is published); ``None``: unknown."""
    return expected is None or actual.startswith(expected) and len(expected) >= 8


def tofu_record(target: Path) -> Path:
    """Where the trust-on-first-use checksum of ``target`` is kept."""
    return target.with_name(f"{target.name}.{TOFU_ALGORITHM}")


def fetch(
    archive: Archive,
    target: Path,
    mirror: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    retries: int = 3,
    url: str | None = None,
    replace_mismatch: bool = True,
) -> str:
    """Make ``target`` a verified copy of ``archive``; return its checksum.

    An existing, verified ``target`` is kept without any request unless ``force``.
    With no checksum published or recorded yet, nothing is verified or recorded here:
    ``download_dataset`` records it once the archive has extracted. ``url``
    replaces ``resolve_url(archive, mirror)``. An existing ``target`` that fails
    verification is downloaded again, or with ``replace_mismatch=False`` left
    untouched and named in a ``DataError`` (a file grar may not have written).
    """
    url = url or resolve_url(archive, mirror)
    if target.exists() and not force:
        expected = expected_checksum(archive, target)
        actual = file_digest(target, archive.algorithm)
        if matches(actual, expected):
            return actual
        if not replace_mismatch:
            raise DataError(
                f"{target}: not the expected file {archive.filename} from {url} ({archive.algorithm} expected "
                f"{expected}{'...' if len(expected or '') < len(actual) else ''}, got {actual}); left untouched: "
                f"move it away (or point the params at it as a file of yours) and fetch again"
            )
        print(f"{target}: checksum mismatch (expected {archive.algorithm} {expected}, got {actual}); downloading again")
        target.unlink()
    part = target.with_name(target.name + ".part")
    if force:
        part.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            transfer(url, part, timeout)
            break
        except TransferInterrupted as err:
            if attempt == retries:
                raise DataError(f"{url}: {err}; {part} keeps what arrived: run the command again to resume") from None
            print(f"{url}: {err}; resuming (attempt {attempt + 2} of {retries + 1})")
    return verify_part(archive, part, target, url)


def verify_part(archive: Archive, part: Path, target: Path, url: str) -> str:
    """Hash the finished ``part``; rename it to ``target`` on a match, delete it otherwise."""
    actual = file_digest(part, archive.algorithm)
    expected = expected_checksum(archive, target)
    if not matches(actual, expected):
        looks = f"; {describe_start(part)}" if archive.extract and not is_archive(part) else ""
        part.unlink()
        origin = "published" if expected == archive.checksum else f"recorded at first use in {tofu_record(target)}"
        raise DataError(
            f"{url}: corrupt download, deleted: {archive.algorithm} expected {expected} ({origin}), got {actual}"
            f"{looks} (a wrong mirror file, or damaged in transit: run the command again)"
        )
    os.replace(part, target)
    return actual


def record_tofu(
    target: Path, digest: str, why: str = "no official checksum is published", proof: str = "it extracted"
) -> None:
    """Record the full checksum of a file whose publisher gives none (or only a prefix), and say so."""
    record = tofu_record(target)
    write_text_atomic(record, f"{digest}  {target.name}\n")
    print(
        f"{target.name}: {why}; TRUST ON FIRST USE: {proof}, so recorded "
        f"{TOFU_ALGORITHM} {digest} in {record}. Later runs verify against it; keep that file."
    )


def transfer(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (resuming from its size); raise ``TransferInterrupted`` when cut short."""
    offset = part.stat().st_size if part.exists() else 0
    if urlparse(url).scheme == "file":
        copy_local(Path(urllib.request.url2pathname(urlparse(url).path)), part, offset, url)
        return
    headers = {"User-Agent": "grar-download/1", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left at this offset: the part is whole, or too long
            size = re.fullmatch(r"bytes \*/(\d+)", err.headers.get("Content-Range", ""))
            if size and int(size.group(1)) == offset:
                return
            part.unlink()
            raise TransferInterrupted(f"server refused to resume at byte {offset} (HTTP 416)") from None
        raise DataError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            raise TransferInterrupted(f"no answer within {timeout:g} s") from None
        raise DataError(f"{url}: cannot connect ({err.reason})") from None
    except (TimeoutError, ConnectionError) as err:
        raise TransferInterrupted(f"connection failed ({err})") from None
    with response:
        if offset and response.status != 206:  # the server ignored Range: read from the start
            offset = 0
        elif offset and resumed_at(response) != offset:
            # a 206 for another range than asked: appending it would corrupt the part, so start over
            print(
                f"{url}: asked to resume at byte {offset}, the server answered "
                f"{response.headers.get('Content-Range')!r}; downloading from the start"
            )
            part.unlink()
            response.close()
            return transfer(url, part, timeout)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with (
            writing(part, url),
            open(part, "ab" if offset else "wb") as out,
            byte_bar(total, part.name, initial=offset) as bar,
        ):
            while block := read_block(response, received):
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise TransferInterrupted(f"connection closed after {received} of {total} bytes")


def resumed_at(response: http.client.HTTPResponse) -> int | None:
    """The first byte a 206 answer holds, from its ``Content-Range: bytes FIRST-LAST/SIZE`` (None if absent)."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def writing(part: Path, url: str) -> Iterator[None]:
    """Turn a failed write to ``part`` (a full disk, above all) into one line; ``part`` is kept for a resume."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            size = part.stat().st_size if part.exists() else 0
            raise DataError(
                f"{part}: disk full ({err.strerror}) after {size:,} bytes of {url}; the partial download is kept: "
                f"free some space on that file system and run the command again to resume"
            ) from None
        raise DataError(f"{part}: download failed while writing ({err.strerror or err})") from None


def read_block(response: http.client.HTTPResponse, received: int) -> bytes:
    """The next chunk of ``response``; a reset or timeout becomes ``TransferInterrupted``."""
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as err:  # timeouts and resets are OSErrors
        raise TransferInterrupted(f"connection lost after {received} bytes ({err})") from None


def copy_local(source: Path, part: Path, offset: int, url: str) -> None:
    """The ``file://`` case of ``transfer``: copy the rest of ``source`` from ``offset``."""
    if not source.is_file():
        raise DataError(f"{url}: no such file {source}")
    with (
        writing(part, url),
        open(source, "rb") as src,
        open(part, "ab" if offset else "wb") as out,
        byte_bar(source.stat().st_size, part.name, initial=offset) as bar,
    ):
        src.seek(offset)
        while block := src.read(CHUNK):
            out.write(block)
            bar.update(len(block))


def byte_bar(total: int | None, desc: str, initial: int = 0, leave: bool = True) -> tqdm:
    """A progress bar counting bytes (downloads, hashing, extraction)."""
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=leave)


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a zip or a tar (by content, not name): what ``extract_archive`` accepts."""
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def describe_start(path: Path) -> str:
    """What a file that should be an archive looks like: ``starts with '<!DOCTYPE html>'`` (an error page)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "it is empty"
    text = head.split(b"\n", 1)[0].strip()
    if text and all(32 <= byte < 127 or byte == 9 for byte in text):
        html = " (an HTML page, not the archive)" if text.startswith(b"<") else ""
        return f"it starts with {text.decode('ascii')[:40]!r}{html}"
    return f"it starts with the bytes {head[:8].hex(' ')}"
