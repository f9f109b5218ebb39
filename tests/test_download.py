"""paddlex_seg.utils.download against a local HTTP server (127.0.0.1 only, no network).

The server (``FileServer``, reused by test_weights.py) serves in-memory files,
honours ``Range`` requests, and can be told to drop the connection half-way
through a file once, to exercise resuming.
"""
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import zipfile

import pytest

from paddlex_seg import utils
from paddlex_seg.utils.download import (ChecksumError, DownloadError, UnsafeArchiveError, download,
                                        download_and_decompress)


class FileServer:
    """In-memory files over HTTP on 127.0.0.1 (port chosen by the OS), in a thread.

    Attributes:
        files (dict): URL path (without leading '/') -> bytes.
        drop_once (dict): URL path -> byte count: the next GET of that path sends the
            full Content-Length but only that many bytes, then closes the connection.
        supports_range (bool): answer ``Range`` requests with 206 (else always 200).
        log (list): ``(path, range_header_or_None)`` for every GET received.
    """

    def __init__(self):
        self.files, self.drop_once, self.log = {}, {}, []
        self.supports_range = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                wanted = self.headers.get("Range")
                server.log.append((name, wanted))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                if wanted and server.supports_range:
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drop_once.pop(name, None)
                if cut is not None:
                    self.wfile.write(body[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def gets(self, name):
        return [rng for path, rng in self.log if path == name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def dead_url():
    """A 127.0.0.1 URL whose port is bound but not listening: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/weights/model.pdparams"
    sock.close()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def payload(n=300_000, seed=1):
    return bytes((i * 7919 + seed) % 251 for i in range(n))


# ---------------------------------------------------------------------- download()


def test_download_verifies_and_renames(server, tmp_path):
    data = payload()
    server.files["w.bin"] = data
    dest = tmp_path / "sub" / "w.bin"
    assert download(server.url("w.bin"), str(dest), sha256=sha(data), progress=False) == str(dest)
    assert dest.read_bytes() == data
    assert not os.path.exists(str(dest) + ".part")


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    data = payload()
    server.files["bad.bin"] = data[:-1] + b"X"  # corrupt on the server
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumError) as err:
        download(server.url("bad.bin"), str(dest), sha256=sha(data), progress=False)
    msg = str(err.value)
    assert server.url("bad.bin") in msg and sha(data) in msg and sha(server.files["bad.bin"]) in msg
    assert os.listdir(tmp_path) == []  # neither the final name nor a .part


def test_dropped_connection_resumes_with_range_on_next_call(server, tmp_path):
    data = payload()
    half = len(data) // 2
    server.files["big.bin"] = data
    server.drop_once["big.bin"] = half
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError) as err:
        download(server.url("big.bin"), str(dest), sha256=sha(data), progress=False, retries=0)
    assert server.url("big.bin") in str(err.value)
    assert not dest.exists(), "an incomplete file must never take the final name"
    assert os.path.getsize(str(dest) + ".part") == half

    download(server.url("big.bin"), str(dest), sha256=sha(data), progress=False, retries=0)
    assert server.gets("big.bin") == [None, f"bytes={half}-"]
    assert dest.read_bytes() == data
    assert not os.path.exists(str(dest) + ".part")


def test_dropped_connection_is_retried_within_one_call(server, tmp_path):
    data = payload()
    server.files["big.bin"] = data
    server.drop_once["big.bin"] = 1000
    dest = tmp_path / "big.bin"
    download(server.url("big.bin"), str(dest), sha256=sha(data), progress=False)
    assert server.gets("big.bin") == [None, "bytes=1000-"]
    assert dest.read_bytes() == data


def test_server_without_range_support_restarts(server, tmp_path):
    data = payload()
    server.files["w.bin"] = data
    server.supports_range = False
    dest = tmp_path / "w.bin"
    (tmp_path / "w.bin.part").write_bytes(b"stale bytes that are not a prefix")
    download(server.url("w.bin"), str(dest), sha256=sha(data), progress=False)
    assert server.gets("w.bin") == ["bytes=33-"]  # asked to resume, got 200, started over
    assert dest.read_bytes() == data


def test_unreachable_server_one_line_message(dead_url, tmp_path):
    dest = tmp_path / "model.pdparams"
    with pytest.raises(DownloadError) as err:
        download(dead_url, str(dest), progress=False, retries=0, timeout=5)
    msg = str(err.value)
    assert "\n" not in msg
    assert dead_url in msg and str(dest) in msg
    assert not dest.exists()


def test_http_error_names_url(server, tmp_path):
    with pytest.raises(DownloadError, match="404") as err:
        download(server.url("missing.bin"), str(tmp_path / "m.bin"), progress=False)
    assert server.url("missing.bin") in str(err.value)
    assert len(server.log) == 1, "an HTTP error status is not retried"


# ----------------------------------------------------------- download_and_decompress


def make_tar(members, mode="w:gz"):
    """members: list of (name, bytes) for files, or (name, ('sym'|'hard', target))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "sym" else tarfile.LNKTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members:
            zf.writestr(zipfile.ZipInfo(name), content)
    return buf.getvalue()


def test_utils_exports_download_and_decompress():
    assert utils.download_and_decompress is download_and_decompress


@pytest.mark.parametrize("name,mode", [("pkg.tar.gz", "w:gz"), ("pkg.tgz", "w:gz"), ("pkg.tar", "w")])
def test_tar_extracts_once_into_top_folder(server, tmp_path, name, mode):
    server.files[name] = make_tar([("pkg/model.pdparams", b"weights"), ("pkg/sub/a.txt", b"a"),
                                   ("pkg/link", ("sym", "sub/a.txt"))], mode)
    out = tmp_path / "out"
    result = download_and_decompress(server.url(name), str(out))
    assert result == str(out / "pkg")
    assert (out / "pkg" / "model.pdparams").read_bytes() == b"weights"
    assert (out / "pkg" / "link").read_bytes() == b"a"
    assert not (out / name).exists(), "the archive is removed after extraction"
    assert sorted(os.listdir(out)) == [f".{name}.done", "pkg"]  # no staging leftovers

    assert download_and_decompress(server.url(name), str(out)) == result
    assert len(server.gets(name)) == 1, "a completed extraction is not redone"


def test_zip_without_single_folder_returns_path(server, tmp_path):
    server.files["flat.zip"] = make_zip([("a.txt", b"A"), ("b/c.txt", b"C")])
    out = tmp_path / "out"
    assert download_and_decompress(server.url("flat.zip"), str(out)) == str(out)
    assert (out / "a.txt").read_bytes() == b"A" and (out / "b" / "c.txt").read_bytes() == b"C"


def test_extraction_merges_into_existing_folder(server, tmp_path):
    out = tmp_path / "out"
    (out / "pkg").mkdir(parents=True)
    (out / "pkg" / "mine.txt").write_bytes(b"keep me")
    server.files["pkg.zip"] = make_zip([("pkg/model.pdparams", b"w")])
    assert download_and_decompress(server.url("pkg.zip"), str(out)) == str(out / "pkg")
    assert (out / "pkg" / "mine.txt").read_bytes() == b"keep me"
    assert (out / "pkg" / "model.pdparams").read_bytes() == b"w"


def test_archive_placed_by_hand_is_used(tmp_path, dead_url):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pkg.tar.gz").write_bytes(make_tar([("pkg/model.pdparams", b"w")]))
    url = dead_url.rsplit("/", 2)[0] + "/pkg.tar.gz"
    assert download_and_decompress(url, str(out)) == str(out / "pkg")


def test_non_archive_url_is_only_downloaded(server, tmp_path):
    server.files["x/model.pdparams"] = b"w"
    assert download_and_decompress(server.url("x/model.pdparams"), str(tmp_path)) == \
        str(tmp_path / "model.pdparams")


EVIL = {
    "dotdot": lambda root: "../evil.txt",
    "nested_dotdot": lambda root: "pkg/../../evil.txt",
    "absolute": lambda root: f"{root}/abs_evil.txt",
}


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
@pytest.mark.parametrize("evil", sorted(EVIL))
def test_malicious_member_names_rejected(server, tmp_path, kind, evil):
    bad_name = EVIL[evil](tmp_path)
    members = [("pkg/ok.txt", b"ok"), (bad_name, b"pwned")]
    name = f"evil.{kind}"
    server.files[name] = make_tar(members) if kind == "tar.gz" else make_zip(members)
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        download_and_decompress(server.url(name), str(out))
    assert repr(bad_name) in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["out"], "nothing written beside the target folder"
    assert os.listdir(out) == [name], "nothing extracted, not even the harmless member"


@pytest.mark.parametrize("link", [("sym", "../../outside.txt"), ("sym", "/etc/passwd"),
                                  ("hard", "../outside.txt")])
def test_tar_links_pointing_outside_rejected(server, tmp_path, link):
    server.files["links.tar.gz"] = make_tar([("pkg/ok.txt", b"ok"), ("pkg/link", link)])
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="'pkg/link'"):
        download_and_decompress(server.url("links.tar.gz"), str(out))
    assert os.listdir(out) == ["links.tar.gz"]


def test_truncated_archive_is_a_clear_error(server, tmp_path):
    server.files["cut.tar.gz"] = make_tar([("pkg/a.bin", payload(50_000))])[:-2000]
    with pytest.raises(DownloadError, match="not a readable tar archive"):
        download_and_decompress(server.url("cut.tar.gz"), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "pkg").exists()


def test_offline_archive_message_names_exact_path(dead_url, tmp_path):
    url = dead_url.rsplit("/", 2)[0] + "/resnet50_vd_ssld_v2.tar.gz"
    out = tmp_path / "cache"
    with pytest.raises(DownloadError) as err:
        download_and_decompress(url, str(out), timeout=5)
    msg = str(err.value)
    assert "\n" not in msg
    assert url in msg and str(out / "resnet50_vd_ssld_v2.tar.gz") in msg
