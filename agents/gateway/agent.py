"""The HTTP gateway: requests into the graph for clients that cannot speak Redis.

An MES written in another language posts an image or a JSON object to
``POST /v1/<agent>/<port>`` and gets the graph's answer back (see ``app``). The gateway
is an agent like any other, so it is placed on a node, scaled with replicas and
secured with the operator token, as the HMI is. It has no ports: the requests it makes
go through ``AsyncGraphClient``, as any outside client's would, with the same timeouts
and flow control. Served by uvicorn (starlette) in a thread of its own.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import replace

from graphrun import (
    Agent,
    AgentStartError,
    AsyncGraphClient,
    Deployment,
    GraphrunError,
    ParamError,
    RedisAccess,
    operator_token,
)
from graphrun_agents.hmi.access import OPERATOR_TOKEN, is_local

from .app import Gateway
from .params import GatewayParams

START_TIMEOUT = 30.0
STOP_GRACE = 2


class GatewayAgent(Agent):
    """Answers HTTP requests with the answers of the graph it runs in."""

    Params = GatewayParams
    params: GatewayParams

    @classmethod
    def redis_access(cls, params: GatewayParams, *, graph: str, agent: str, home: str) -> RedisAccess:
        """Requests to the ports it opens (every input when ``ports`` is not given), and its
        reply streams: what its ACL user needs under ``graphrun run --secure``."""
        return RedisAccess(requests=True if params.ports is None else tuple(params.ports))

    @classmethod
    def deployment(cls, params: GatewayParams) -> Deployment:
        """The container gets the operator token (required beyond this machine)."""
        return replace(super().deployment(params), secrets=(OPERATOR_TOKEN,))

    def start(self) -> None:
        p = self.params
        token = operator_token()
        if token is None and not is_local(p.host):
            raise AgentStartError(
                f"the gateway would listen on {p.host!r}, beyond this machine, with no operator token: set "
                "GRAPHRUN_OPERATOR_TOKEN (or GRAPHRUN_OPERATOR_TOKEN_FILE), or listen on 127.0.0.1")
        client = AsyncGraphClient.for_agent(self, timeout=p.timeout, max_backlog=p.max_backlog, name=self.name)
        try:
            for i, port in enumerate(p.ports or ()):
                try:
                    client.check(port)
                except GraphrunError as exc:
                    raise ParamError(("ports", i), str(exc)) from None
            self._serve_in_thread(Gateway(client, p, token, self.log))
        except BaseException:
            asyncio.run(client.aclose())
            raise
        host = socket.gethostname() if p.host in ("0.0.0.0", "::", "") else p.host
        self.status["url"] = f"http://{host}:{self.port_number}/v1/"
        self.log.info("gateway at %s (%s)", self.status["url"],
                      "operator token required" if token else "no operator token: this machine only")

    def _serve_in_thread(self, gateway: Gateway) -> None:
        import uvicorn  # the 'gateway' extra

        p = self.params
        family = socket.AF_INET6 if ":" in p.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # replicas on one machine share the port; the kernel spreads connections
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((p.host, p.port))
        except OSError as exc:
            sock.close()
            raise AgentStartError(f"the gateway cannot listen on host {p.host!r}, port {p.port}: "
                                  f"{exc.strerror or exc}") from exc
        sock.listen(1024)
        self.port_number = sock.getsockname()[1]
        # Requests still waiting for answers hold a stop up at most STOP_GRACE seconds.
        self._server = uvicorn.Server(uvicorn.Config(gateway.app(), log_level="warning", lifespan="on",
                                                     access_log=False, timeout_graceful_shutdown=STOP_GRACE))
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="gateway-http", daemon=True)
        self._thread.start()
        end = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise AgentStartError(f"the gateway's HTTP server did not start: {self._failure or 'timed out'}")
            time.sleep(0.01)

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:
            self._failure = exc
            self.log.exception("the gateway's HTTP server failed")
        finally:
            sock.close()

    def produce(self) -> None:
        """Nothing to produce: the server answers from its thread; this watches it."""
        if not self._thread.is_alive() and not self.stopping:
            raise RuntimeError(f"the gateway's HTTP server stopped: {self._failure or 'no reason given'}")
        self.wait(0.5)

    def stop(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.should_exit = True
            self._thread.join(10)
