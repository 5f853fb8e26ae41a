"""download: an overall deadline, a size cap and Content-Length checked, against a misbehaving loopback server."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from gen_assets.sources.common import DownloadLimits, SourceError, download
from gen_assets.sources.texts import collect_texts

BODY = b"A short document.\n" * 50  # 900 bytes


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """Each path a way for a server to misbehave; every one ends within a few seconds on its own."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _head(self, length: int | None = None, chunked: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_GET(self):  # noqa: N802 (the http.server API)
        try:
            if self.path == "/whole.txt":
                self._head(len(BODY))
                self.wfile.write(BODY)
            elif self.path == "/truncated.txt":  # announces 900 bytes, sends 400, closes
                self._head(len(BODY))
                self.wfile.write(BODY[:400])
            elif self.path == "/chunked-truncated.txt":  # one chunk, then closes without the last chunk
                self._head(chunked=True)
                self.wfile.write(b"190\r\n" + BODY[:400] + b"\r\n")
            elif self.path == "/drip-headers.txt":  # the status line and headers a byte every 0.1 s: 3 s at most
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Padding: " + b"x" * 40 + b"\r\n"
                for i in range(30):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
                self.close_connection = True
            elif self.path == "/drip.txt":  # a byte every 0.1 s: 3 s at most, each read well inside any timeout
                self._head(30)
                for i in range(30):
                    self.wfile.write(BODY[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/silent.txt":  # headers, then nothing for 3 s
                self._head(len(BODY))
                self.wfile.flush()
                time.sleep(3)
            elif self.path == "/announced-big.txt":
                self._head(10_000)
                self.wfile.write(b"x" * 10_000)
            elif self.path == "/unannounced-big.txt":  # no Content-Length: the body ends when the connection does
                self._head()
                self.wfile.write(b"x" * 10_000)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass


@pytest.fixture
def base():
    """A misbehaving web server on 127.0.0.1 (never the internet)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_whole_body_is_downloaded(base):
    with download(f"{base}/whole.txt") as f:
        assert f.read() == BODY


def test_a_body_shorter_than_its_content_length_is_an_error(base):
    url = f"{base}/truncated.txt"
    with pytest.raises(SourceError, match=r"truncated\.txt: truncated: 400 bytes received of the 900 announced"):
        download(url)
    with pytest.raises(SourceError, match=r"truncated: 400 bytes received of the 900"):
        collect_texts(url)  # not a 400-byte document


def test_a_chunked_body_cut_short_is_an_error(base):
    with pytest.raises(SourceError, match=r"chunked-truncated\.txt: truncated: the connection closed"):
        download(f"{base}/chunked-truncated.txt")


def test_a_server_dripping_its_headers_meets_the_overall_deadline(base):
    limits = DownloadLimits(deadline_s=0.6, read_timeout_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"drip-headers\.txt: download not finished within its deadline"):
        download(f"{base}/drip-headers.txt", limits)
    assert time.monotonic() - t0 < 2.0


def test_a_dripping_server_meets_the_overall_deadline(base):
    limits = DownloadLimits(deadline_s=0.6, read_timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"drip\.txt: download not finished within its deadline of 0\.6 s"):
        download(f"{base}/drip.txt", limits)
    assert time.monotonic() - t0 < 2  # every read came within 0.1 s: only the deadline stops it
    with pytest.raises(SourceError, match=r"deadline of 0\.6 s"):
        collect_texts(f"{base}/drip.txt", download_limits=limits)


def test_a_silent_server_meets_the_deadline_not_the_longer_read_timeout(base):
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"silent\.txt: download not finished within its deadline of 0\.5 s"):
        download(f"{base}/silent.txt", DownloadLimits(deadline_s=0.5, read_timeout_s=30))
    assert time.monotonic() - t0 < 2
    with pytest.raises(SourceError, match=r"silent\.txt: download failed: no data for 0\.3 s"):
        download(f"{base}/silent.txt", DownloadLimits(deadline_s=30, read_timeout_s=0.3))


def test_a_body_over_the_size_cap_is_an_error_announced_or_not(base):
    small = DownloadLimits(max_bytes=5_000)
    with pytest.raises(SourceError, match=r"announced-big\.txt: announces 10000 bytes \(Content-Length\), more than "
                                          r"the limit of 5000 bytes"):
        download(f"{base}/announced-big.txt", small)
    with pytest.raises(SourceError, match=r"unannounced-big\.txt: larger than the limit of 5000 bytes"):
        download(f"{base}/unannounced-big.txt", small)
    with download(f"{base}/unannounced-big.txt", DownloadLimits(max_bytes=10_000)) as f:
        assert len(f.read()) == 10_000  # exactly at the cap is fine


def test_download_limits_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        DownloadLimits(deadline_s=0)


def test_the_raw_texts_asset_passes_its_download_bounds_to_the_reader(base, tmp_path):
    """The bounds are the asset's config, not only the reader's defaults."""
    import dagster as dg

    from gen_assets.defs.assets.raw import raw_texts
    from gen_assets.defs.resources import ArtifactStore

    def run(**config):
        return dg.materialize([raw_texts], raise_on_error=False,
                              resources={"artifacts": ArtifactStore(home=str(tmp_path))},
                              run_config={"ops": {"raw_texts": {"config": {"source": f"{base}/announced-big.txt",
                                                                           **config}}}})

    assert run().success
    refused = run(download_max_bytes=1000)
    assert not refused.success
    error = refused.get_step_failure_events()[0].step_failure_data.error
    while error.cause is not None:
        error = error.cause
    assert "10000" in error.message or "1000" in error.message, error.message
