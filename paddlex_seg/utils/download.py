"""Resumable, verified downloads and safe archive extraction.

Two promises hold for every function here:

* a file appears under its final name only when it is complete (and, when a
  checksum is known, verified): bytes are streamed to ``<name>.part`` and renamed
  into place with ``os.replace``. An interrupted download leaves only the
  ``.part`` file, which the next attempt continues with an HTTP ``Range`` request
  when the server allows it;
* an archive is checked member by member before anything is written, and is
  unpacked into a private temporary folder first, so a malicious or broken
  archive leaves nothing behind outside that folder.

When the network is unreachable the error says, on one line, which URL failed and
the exact path where the file can be placed by hand.
"""
import gzip
import hashlib
import json
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
import zlib

import requests
import urllib3
from tqdm import tqdm

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "download",
    "download_and_decompress",
    "sha256sum",
]

# Raised by tarfile's own 'data' filter (Python >= 3.11.4), our second line of defence.
_TAR_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
# Suffixes that download_and_decompress unpacks; anything else is only downloaded.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched (network, HTTP status, incomplete or corrupt body).

    Attributes:
        url (str or None): the address that failed.
        reason (str): a short, one-line cause (without the advice in the message).
    """

    def __init__(self, message, url=None, reason=None):
        super().__init__(message)
        self.url = url
        self.reason = reason if reason is not None else message


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


def download(url, dest_path, sha256=None, timeout=30, progress=True, retries=2):
    """Download ``url`` to ``dest_path``, resumably and atomically.

    Bytes go to ``dest_path + '.part'``. If that file already exists, the download
    continues from its end with a ``Range`` request; a server that answers with the
    whole body (200) instead of a part (206) makes it start over. A connection that
    breaks mid-body is retried ``retries`` times, each retry resuming the same way.
    Only a complete (and, if ``sha256`` is given, verified) file is renamed to
    ``dest_path``.

    Args:
        url (str): http(s) address of the file.
        dest_path (str): where the file ends up. Its folder is created if needed.
        sha256 (str, optional): expected hex digest. On mismatch the ``.part`` file
            is deleted and ChecksumError is raised. Default: None (no checksum; the
            body is then only checked against the server's Content-Length).
        timeout (float): seconds to wait for the connection and for each read.
            Default: 30.
        progress (bool): show a tqdm progress bar (only when stderr is a terminal).
            Default: True.
        retries (int): extra attempts when the connection breaks after the body
            started (each resumes). A server that cannot be reached is not retried.
            Default: 2.

    Returns:
        str: ``dest_path``.

    Raises:
        DownloadError: the server is unreachable, answers with an error status, or
            the connection keeps breaking. The message names the URL and says where
            to place the file by hand.
        ChecksumError: the complete file does not match ``sha256``.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url={url!r} is not an http(s) address")
    if retries < 0:
        raise ValueError(f"retries={retries!r} must be >= 0")
    dest_path = os.fspath(dest_path)
    folder = os.path.dirname(os.path.abspath(dest_path))
    os.makedirs(folder, exist_ok=True)
    part_path = dest_path + ".part"

    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part_path, timeout, progress)
            break
        except _IncompleteBody as exc:
            if attempt == retries:
                raise _download_error(url, dest_path, exc) from exc
            time.sleep(min(0.5 * (attempt + 1), 2.0))
        except requests.RequestException as exc:
            # No connection, HTTP error status, bad URL: an immediate retry will not help
            # (and offline, failing fast gets the advice to the user sooner).
            raise _download_error(url, dest_path, exc) from exc

    if sha256 is not None:
        actual = sha256sum(part_path)
        if actual.lower() != sha256.lower():
            os.remove(part_path)
            reason = f"sha256 mismatch: expected {sha256.lower()}, got {actual}"
            raise ChecksumError(
                f"{reason} for {url} (the corrupt download was deleted; try again)",
                url=url, reason=reason)
    os.replace(part_path, dest_path)
    return dest_path


def download_and_decompress(url, path="./", sha256=None, timeout=30, progress=True):
    """Download an archive into ``path`` and unpack it there, once.

    ``.tar.gz``, ``.tgz``, ``.tar`` and ``.zip`` files are unpacked; any other URL
    is simply downloaded into ``path`` and the file path returned. The archive is
    downloaded resumably (see :func:`download`) and deleted after a successful
    extraction. Every member is checked first: absolute names, ``..`` components,
    links pointing outside ``path`` and device files are refused. Completion is
    recorded in a marker file ``.<archive name>.done`` written atomically after the
    extraction, so a second call returns at once. The marker is keyed by the
    archive's file name, not the full URL.

    An archive placed at ``<path>/<archive name>`` by hand (e.g. on an offline
    machine) is used instead of downloading.

    Args:
        url (str): address of the archive.
        path (str): folder to download into and extract to. Default: './'.
        sha256 (str, optional): expected digest of the archive. Default: None.
        timeout (float): network timeout in seconds. Default: 30.
        progress (bool): show a progress bar on a terminal. Default: True.

    Returns:
        str: the archive's single top-level folder inside ``path`` if it has one,
        else ``path`` itself (for a non-archive URL: the downloaded file).

    Raises:
        DownloadError: the archive could not be fetched; the message names the URL
            and the exact path where the archive can be placed by hand.
        UnsafeArchiveError: a member would land outside ``path``; nothing is written.
    """
    path = os.fspath(path)
    name = _file_name_of(url)
    archive_path = os.path.join(path, name)
    kind = _archive_kind(name)
    if kind is None:
        if not os.path.isfile(archive_path):
            download(url, archive_path, sha256=sha256, timeout=timeout, progress=progress)
        return archive_path

    marker_path = os.path.join(path, f".{name}.done")
    done = _read_marker(marker_path, path)
    if done is not None:
        return done
    if not os.path.isfile(archive_path):
        download(url, archive_path, sha256=sha256, timeout=timeout, progress=progress)
    elif sha256 is not None:
        # Placed by hand (or left by an interrupted extraction): check before trusting it.
        actual = sha256sum(archive_path)
        if actual != sha256.lower():
            reason = f"sha256 mismatch: expected {sha256.lower()}, got {actual}"
            raise ChecksumError(f"{reason} for {archive_path} (expected the archive from "
                                f"{url}); delete it to download it again", url=url, reason=reason)
    result = _extract_safely(archive_path, kind, path)
    _write_atomically(marker_path, json.dumps({"url": url, "extracted": os.path.relpath(result, path)}))
    os.remove(archive_path)
    return result


def sha256sum(file_path):
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(file_path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------- downloading


class _IncompleteBody(IOError):
    """The connection closed before Content-Length bytes arrived."""


def _fetch_into(url, part_path, timeout, progress):
    """Append the rest of ``url`` to ``part_path`` (start over if the server can't resume)."""
    have = os.path.getsize(part_path) if os.path.isfile(part_path) else 0
    # 'identity': byte counts and ranges must refer to the file, not a gzip of it.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and have:
            # The .part is not a prefix the server recognises (e.g. the file changed).
            os.remove(part_path)
            return _fetch_into(url, part_path, timeout, progress)
        if resp.status_code not in (200, 206):
            raise requests.HTTPError(f"HTTP {resp.status_code} {resp.reason}", response=resp)
        if resp.status_code == 206 and not _range_starts_at(resp, have):
            os.remove(part_path)  # a part we did not ask for: start over cleanly
            return _fetch_into(url, part_path, timeout, progress)
        resuming = resp.status_code == 206
        if not resuming:
            have = 0  # the server ignored Range and sends the whole file
        body_len = resp.headers.get("Content-Length")
        expected = have + int(body_len) if body_len and body_len.isdigit() else None
        show = progress and sys.stderr.isatty()
        with open(part_path, "ab" if resuming else "wb") as out, tqdm(
                total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=_file_name_of(url), disable=not show, leave=False) as bar:
            try:
                for chunk in _chunks(resp):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError,
                    urllib3.exceptions.HTTPError) as exc:
                raise _IncompleteBody(str(exc)) from exc
    got = os.path.getsize(part_path)
    if expected is not None and got != expected:
        raise _IncompleteBody(f"received {got} of {expected} bytes")


def _chunks(resp):
    """The body as it arrives.

    ``read1`` hands over whatever bytes have arrived, so when the connection breaks
    everything received so far is already on disk and the next attempt resumes
    from there; ``iter_content`` would drop the unfinished chunk.
    """
    read1 = getattr(resp.raw, "read1", None)  # urllib3 >= 2
    if read1 is None:
        yield from resp.iter_content(64 * 1024)
        return
    while True:
        chunk = read1(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _range_starts_at(resp, offset):
    """True if a 206 answer's Content-Range begins at ``offset``."""
    content_range = resp.headers.get("Content-Range", "")
    return content_range.replace(" ", "").startswith(f"bytes{offset}-")


def _download_error(url, dest_path, exc):
    """A DownloadError whose one-line message says what failed and where to put the file."""
    detail = " ".join(str(exc).split())
    if len(detail) > 200:
        detail = detail[:200] + "..."
    reason = f"{type(exc).__name__}: {detail}"
    return DownloadError(
        f"could not download {url} ({reason}); if this machine is offline, fetch the "
        f"file elsewhere and place it at {os.path.abspath(dest_path)}",
        url=url, reason=reason)


def _file_name_of(url):
    name = posixpath.basename(urllib.parse.urlsplit(url).path)
    if not name:
        raise ValueError(f"url={url!r} does not end in a file name")
    return name


# ---------------------------------------------------------------------- extracting


def _archive_kind(name):
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    return None


def _read_marker(marker_path, path):
    """The recorded extraction result if the marker exists and it is still there."""
    try:
        with open(marker_path, encoding="utf-8") as f:
            extracted = json.load(f)["extracted"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    result = os.path.normpath(os.path.join(path, extracted))
    return result if os.path.exists(result) else None


def _write_atomically(file_path, text):
    tmp_path = f"{file_path}.tmp{os.getpid()}"
    with open(tmp_path, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp_path, file_path)


def _check_member_name(archive_path, name):
    """Refuse absolute names and '..' components (either slash, any drive letter)."""
    unified = name.replace("\\", "/")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(
            f"refusing to extract {archive_path}: member {name!r} would be written "
            f"outside the target folder")
    return "/".join(parts)


def _check_tar_members(archive_path, tar):
    for member in tar.getmembers():
        clean = _check_member_name(archive_path, member.name)
        if member.issym() or member.islnk():
            # A symlink resolves relative to its own folder; a hard link to the archive root.
            base = posixpath.dirname(clean) if member.issym() else ""
            target = member.linkname.replace("\\", "/")
            resolved = posixpath.normpath(posixpath.join(base, target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise UnsafeArchiveError(
                    f"refusing to extract {archive_path}: link member {member.name!r} "
                    f"points outside the target folder ({member.linkname!r})")
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"refusing to extract {archive_path}: member {member.name!r} is a "
                f"device or fifo, not a file or folder")


def _extract_safely(archive_path, kind, path):
    """Check every member, unpack into a temporary folder, then move into ``path``."""
    os.makedirs(path, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".extracting-", dir=path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive_path) as zf:
                for info in zf.infolist():
                    _check_member_name(archive_path, info.filename)
                zf.extractall(staging)
        else:
            with tarfile.open(archive_path) as tar:
                _check_tar_members(archive_path, tar)
                # The 'data' filter (Python >= 3.11.4) is a second, independent guard.
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, **extra)
        entries = sorted(os.listdir(staging))
        for entry in entries:
            _merge_move(os.path.join(staging, entry), os.path.join(path, entry))
    except _TAR_FILTER_ERRORS as exc:
        raise UnsafeArchiveError(f"refusing to extract {archive_path}: {exc}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DownloadError(
            f"{archive_path} is not a readable {kind} archive ({exc}); delete it and "
            f"try again") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if len(entries) == 1 and os.path.isdir(os.path.join(path, entries[0])):
        return os.path.join(path, entries[0])
    return path


def _merge_move(src, dst):
    """Move ``src`` to ``dst``; folders are merged file by file, files replaced.

    Merging (instead of deleting an existing folder first) keeps whatever the user
    already has beside the archive's files in ``path``.
    """
    src_is_dir = os.path.isdir(src) and not os.path.islink(src)
    dst_is_dir = os.path.isdir(dst) and not os.path.islink(dst)
    if src_is_dir and dst_is_dir:
        for child in os.listdir(src):
            _merge_move(os.path.join(src, child), os.path.join(dst, child))
    elif os.path.lexists(dst) and src_is_dir != dst_is_dir:
        kinds = ("folder", "file") if src_is_dir else ("file", "folder")
        raise DownloadError(f"cannot extract a {kinds[0]} over the existing {kinds[1]} {dst}")
    else:
        os.replace(src, dst)
