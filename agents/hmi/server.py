"""The HMI's web server: a page, its state as JSON, and the preview images.

The standard library's threaded HTTP server is enough for the few browsers of an
operator's station, and adds no dependency. Every answer says ``no-store``: a
cached state or image would show the operator a part that is long gone.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from graphrun import AgentStartError

from ..errors import HmiServerError, PreviewError


@dataclass(frozen=True)
class Site:
    """What the server serves.

    ``frame(camera)`` is the JPEG of the camera's tile, None before its first frame;
    ``next_frame(camera, after, timeout)`` is (seq, JPEG) of the tile's frame once it is
    another than frame ``after``, None if none came within ``timeout`` seconds.
    """

    page: bytes
    state: Callable[[], dict[str, Any]]
    frame: Callable[[str], bytes | None]
    next_frame: Callable[[str, int, float], tuple[int, bytes] | None]
    stream_interval: float = 0.1  # seconds between the images of an MJPEG stream, at least


BOUNDARY = "graphrun-frame"  # between the images of an MJPEG stream


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: Site
    log: logging.Logger
    stopping: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        """To the agent's log rather than stderr; a browser closing a connection is no error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            self.log.debug("client %s went away", client_address)
        else:
            self.log.exception("request from %s failed", client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 (the default): one request per connection, so no idle keep-alive
    # connection outlives stop().
    timeout = 10  # seconds a slow client may take to send its request

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = unquote(urlsplit(self.path).path)
        site = self.server.site
        if path in ("/", "/index.html"):
            self._answer(HTTPStatus.OK, "text/html; charset=utf-8", site.page)
        elif path == "/api/state":
            body = json.dumps(site.state(), allow_nan=False, separators=(",", ":")).encode()
            self._answer(HTTPStatus.OK, "application/json", body)
        elif path.startswith("/frame/") and path.endswith(".jpg"):
            self._frame(path[len("/frame/") : -len(".jpg")])
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            self._stream(path[len("/stream/") : -len(".mjpg")])
        else:
            self._answer(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", f"no such page: {path}\n".encode())

    def _frame(self, camera: str) -> None:
        try:
            jpeg = self.server.site.frame(camera)
        except PreviewError as exc:
            self.server.log.warning("preview of %s: %s", camera, exc)
            self._answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "text/plain; charset=utf-8", f"{exc}\n".encode())
            return
        if jpeg is None:
            self._answer(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", f"no frame yet from camera {camera!r}\n".encode())
        else:
            self._answer(HTTPStatus.OK, "image/jpeg", jpeg)

    def _stream(self, camera: str) -> None:
        """Multipart MJPEG: one part per new frame of the tile, until the client or the server leaves."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        site, stopping, seq = self.server.site, self.server.stopping, -1
        try:
            while not stopping.is_set():
                try:
                    news = site.next_frame(camera, seq, 0.5)
                except PreviewError as exc:
                    self.server.log.warning("preview of %s: %s", camera, exc)
                    return
                if news is None:
                    continue
                seq, jpeg = news
                self.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                 % (BOUNDARY.encode(), len(jpeg), jpeg))
                self.wfile.flush()
                if stopping.wait(site.stream_interval):
                    return
        except (BrokenPipeError, ConnectionResetError):
            return  # the viewer went away

    def _answer(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        self.server.log.debug("%s " + format, self.address_string(), *args)


class HmiServer:
    """Serves a ``Site`` from a background thread; ``stop`` frees the port again."""

    def __init__(self, site: Site, *, host: str, port: int, log: logging.Logger):
        self._site, self._host, self._port, self._log = site, host, port, log
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server_class = _Server6 if ":" in self._host else _Server
        try:
            server = server_class((self._host, self._port), _Handler)
        except OSError as exc:
            where = f"host {self._host!r}, port {self._port}"
            if exc.errno == errno.EADDRINUSE:
                raise HmiServerError(
                    f"the HMI cannot listen on {where}: the port is already in use; "
                    "stop the program that holds it or set another port in the HMI's params"
                ) from exc
            # No restart fixes an address this machine does not have, or a port it may not open.
            raise AgentStartError(f"the HMI cannot listen on {where}: {exc.strerror or exc}") from exc
        server.site, server.log, server.stopping = self._site, self._log, threading.Event()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hmi-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when the params say 0)."""
        if self._server is None:
            raise HmiServerError("the HMI's web server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()  # ends the MJPEG streams
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
