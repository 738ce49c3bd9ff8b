"""The upstream client against a server that is not Modelport's (the standard library's
``http.server``), over TLS with certificates from a test CA (``trustme``)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from modelport.core.routing import Upstream
from modelport.gateway import UpstreamError, UpstreamPool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server does

    def do_POST(self) -> None:  # the standard library names it so
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part in (b'{"echo":', body, b"}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        reply = b'{"seen":"' + self.headers.get("authorization", "").encode() + b'"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def https_server(ca: trustme.CA) -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Upstream("localhost", server.server_address[1], tls=True)
    server.shutdown()
    server.server_close()


async def test_tls_upstream_verified_by_its_ca(ca: trustme.CA, https_server: Upstream) -> None:
    pool = UpstreamPool()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    pool.use_tls_context(context)
    headers = [(b"authorization", b"Bearer sk-upstream")]
    for _ in range(3):  # the second and third reuse the TLS connection
        response = await pool.request(https_server, "POST", "/v1/chat", headers, b"{}")
        assert response.status == 200 and response.body == b'{"seen":"Bearer sk-upstream"}'
    chunked = await pool.request(https_server, "POST", "/chunked", [], b"[1,2]")
    assert chunked.body == b'{"echo":[1,2]}'
    await pool.close()


async def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    https_server: Upstream,
) -> None:
    pool = UpstreamPool()  # the system's CAs: the test CA is not among them
    with pytest.raises(UpstreamError) as refused:
        await pool.request(https_server, "POST", "/v1/chat", [], b"{}")
    assert not refused.value.maybe_processed  # safe to try elsewhere: nothing was sent
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    await pool.close()
