"""The HMI's web server: a page, its state as JSON and pushed as Server-Sent Events,
the preview images, and the operator's actions.

The standard library's threaded HTTP server is enough for the few browsers of an
operator's station, and adds no dependency: one thread per open page or stream,
which ends when its client goes. Every answer says ``no-store``: a cached state or
image would show the operator a part that is long gone.
"""

from __future__ import annotations

import errno
import json
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from graphrun import AgentStartError

from ..errors import HmiServerError, PreviewError
from .access import Access
from .state import ActionRefused


@dataclass(frozen=True)
class Site:
    """What the server serves.

    ``frame(camera)`` is the JPEG of the camera's tile, None before its first frame;
    ``next_frame(camera, after, timeout)`` is (seq, JPEG) of the tile's frame once it is
    another than frame ``after``, None if none came within ``timeout`` seconds;
    ``cameras()`` the names with a tile; ``wait_changed(after, timeout)`` the state's
    version once it moved past ``after`` (or after ``timeout``); ``act(action, body,
    client)`` does an operator's action and returns its event (ActionRefused says why not).
    """

    page: bytes
    state: Callable[[], dict[str, Any]]
    frame: Callable[[str], bytes | None]
    next_frame: Callable[[str, int, float], tuple[int, bytes] | None]
    cameras: Callable[[], Collection[str]]
    wait_changed: Callable[[int, float], int]
    act: Callable[[str, dict[str, Any], str], dict[str, Any]]
    access: Access
    stream_interval: float = 0.1  # seconds between the images of an MJPEG stream, at least
    push_interval: float = 0.25  # seconds between two states pushed to a page, at least


BOUNDARY = "graphrun-frame"  # between the images of an MJPEG stream
ACTIONS = {"/api/ack": "ack", "/api/reset": "reset", "/api/session": "session"}
MAX_BODY = 4096  # bytes of an action's JSON body
KEEPALIVE = 1.0  # seconds: a pushed page gets the state at least this often (ages, health)


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
    """Serves the page, its state, its pushed updates and its images, and nothing else.

    A stream (MJPEG or pushed state) ends when its client goes, when the server stops,
    or for an unknown camera before it starts (404): no thread waits for a viewer that left.
    """

    server: _Server
    # HTTP/1.0 (the default): one request per connection, so no idle keep-alive
    # connection outlives stop().
    timeout = 10  # seconds a slow client may take to send its request, or to take a write

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = unquote(urlsplit(self.path).path)
        site = self.server.site
        if not site.access.may_view(self.headers.get("Authorization")):
            self._refuse_view()
        elif path in ("/", "/index.html"):
            self._answer(HTTPStatus.OK, "text/html; charset=utf-8", site.page)
        elif path == "/api/state":
            self._answer(HTTPStatus.OK, "application/json", _json(site.state()))
        elif path == "/api/events":
            self._events()
        elif path.startswith("/frame/") and path.endswith(".jpg"):
            self._frame(path[len("/frame/") : -len(".jpg")])
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            self._stream(path[len("/stream/") : -len(".mjpg")])
        else:
            self._not_found(path)

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        path = unquote(urlsplit(self.path).path)
        action = ACTIONS.get(path)
        if action is None:
            self._not_found(path)
            return
        access = self.server.site.access
        if not access.has_token:
            self._error(HTTPStatus.FORBIDDEN, "no operator token is set for this HMI (GRAPHRUN_OPERATOR_TOKEN or "
                                              "GRAPHRUN_OPERATOR_TOKEN_FILE): acknowledging and resetting are off")
            return
        if not access.operator(self.headers.get("Authorization")):
            self._error(HTTPStatus.UNAUTHORIZED, "the operator token is missing or wrong")
            return
        body = self._json_body()
        if body is None:
            return
        if action == "session":
            self._answer(HTTPStatus.OK, "application/json", _json({"operator": True}))
            return
        try:
            event = self.server.site.act(action, body, self.client_address[0])
        except ActionRefused as exc:
            self._error(HTTPStatus(exc.status), str(exc))
            return
        self._answer(HTTPStatus.OK, "application/json", _json(event))

    def _json_body(self) -> dict[str, Any] | None:
        """The request's JSON object; None once an error is answered.

        Only a page of this origin can send it: JSON needs a CORS pre-flight from any
        other, and an Origin header naming another host is refused outright.
        """
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self._error(HTTPStatus.FORBIDDEN, f"a request from the page of {origin} is refused")
            return None
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the request as application/json")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body must be 0 to {MAX_BODY} bytes")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return None
        return body

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
        site, stopping, seq = self.server.site, self.server.stopping, -1
        if camera not in site.cameras():
            known = ", ".join(sorted(site.cameras())) or "none yet"
            self._not_found(f"/stream/{camera}.mjpg", f"no camera {camera!r} (cameras: {known})")
            return
        self._stream_headers(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        try:
            while not stopping.is_set() and not self._client_gone():
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
        except OSError:
            return  # the viewer went away, or stopped reading

    def _events(self) -> None:
        """Server-Sent Events: the state whenever it changed (at most every push interval), at
        least every second; the browser's EventSource reconnects by itself after a restart."""
        site, stopping = self.server.site, self.server.stopping
        self._stream_headers("text/event-stream")
        version, sent_at = -1, 0.0
        try:
            self.wfile.write(b"retry: 1000\n\n")  # ms before the browser reconnects
            while not stopping.is_set() and not self._client_gone():
                now_version = site.wait_changed(version, KEEPALIVE)
                if now_version == version and time.monotonic() - sent_at < KEEPALIVE:
                    continue
                self.wfile.write(b"data: %s\n\n" % _json(site.state()))
                self.wfile.flush()
                version, sent_at = now_version, time.monotonic()
                if stopping.wait(site.push_interval):
                    return
        except OSError:
            return

    def _client_gone(self) -> bool:
        """Whether the client hung up: its side of the socket reads as closed (it sends nothing else)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream_headers(self, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _refuse_view(self) -> None:
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Basic realm="graphrun HMI: the operator token is the password", charset="UTF-8"')
        body = b"this HMI is seen with the operator token only: give it as the password\n"
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self, path: str, why: str | None = None) -> None:
        self._answer(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", f"{why or f'no such page: {path}'}\n".encode())

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._answer(status, "application/json", _json({"error": message}))

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


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


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
