"""Download code against a real HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from recsys.data.datasets import download, fetch, registry
from recsys.errors import RecsysError


class RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server API)
        self.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(self.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toy/u.data", "1\t10\t4\t100\n2\t10\t3\t101\n" * 500)
    RangeHandler.payload, RangeHandler.requests = buf.getvalue(), []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/toy.zip", hashlib.md5(RangeHandler.payload).hexdigest()
    httpd.shutdown()
    thread.join()


def test_fetch_resumes_a_partial_download(server, tmp_path):
    url, md5 = server
    dest = tmp_path / "toy.zip"
    half = len(RangeHandler.payload) // 2
    (tmp_path / "toy.zip.part").write_bytes(RangeHandler.payload[:half])
    fetch(url, dest, md5=md5, progress=False)
    assert dest.read_bytes() == RangeHandler.payload
    assert RangeHandler.requests == [f"bytes={half}-"]
    fetch(url, dest, md5=md5, progress=False)  # cached: no new request
    assert len(RangeHandler.requests) == 1


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    url, _ = server
    with pytest.raises(RecsysError, match="MD5 .* does not match"):
        fetch(url, tmp_path / "toy.zip", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_extracts_and_caches(server, tmp_path):
    url, md5 = server
    spec = {"url": url, "md5": md5, "folder": "toy", "ratings": "u.data"}
    path = download("toy", cache_dir=tmp_path, spec=spec, progress=False)
    assert path == tmp_path / "toy" / "u.data" and path.read_text().startswith("1\t10")
    assert download("toy", cache_dir=tmp_path, spec=spec) == path
    assert len(RangeHandler.requests) == 1


def test_registry_entries_are_complete():
    for name, spec in registry().items():
        assert {"url", "md5", "folder", "ratings", "licence"} <= set(spec), name
        assert len(spec["md5"]) == 32 and spec["url"].startswith("https://")
    with pytest.raises(RecsysError, match="unknown data set"):
        download("nope")
