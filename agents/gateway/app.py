"""The gateway's ASGI app: ``POST /v1/<agent>/<port>`` puts a request into the graph and
answers with the graph's reply.

The body is a JSON object (``Content-Type: application/json``) or an image (PNG, JPEG or
TIFF, any other content type), sent as a frame-like payload whose other fields come from
the query string (``?part_id=7&camera=front``; values read as JSON, else as text). The
query also takes ``timeout`` (seconds, at most the gateway's ``max_timeout``), ``answer``
(AGENT.PORT), ``priority`` and ``stream=1`` (the parts of a streamed answer as one JSON
object per line). ``GET /v1/<agent>/<port>/backlog`` tells how many requests wait.

Every request needs the operator token (``Authorization: Bearer TOKEN``), unless the
gateway has none and listens on this machine only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from graphrun import (
    AsyncGraphClient,
    BacklogFull,
    ConfigError,
    GraphrunError,
    RequestTimeout,
    field_value,
    image_payload,
    json_payload,
    object_payload,
    token_matches,
)
from graphrun_agents.hmi.access import presented_token
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .params import GatewayParams

OPTIONS = ("timeout", "answer", "priority", "stream")  # query keys that are no payload fields


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Gateway:
    """The routes, around one ``AsyncGraphClient`` (closed when the server stops)."""

    def __init__(self, client: AsyncGraphClient, params: GatewayParams, token: str | None, log: logging.Logger):
        self.client = client
        self._params = params
        self._token = token
        self._log = log

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await self.client.aclose()

        return Starlette(routes=[Route("/v1/{agent}/{port}", self.post, methods=["POST"]),
                                 Route("/v1/{agent}/{port}/backlog", self.backlog, methods=["GET"])],
                         lifespan=lifespan)

    def _refused(self, request: Request, port: str) -> JSONResponse | None:
        if self._token is not None and not token_matches(presented_token(request.headers.get("authorization")),
                                                         self._token):
            return _error(401, "the operator token is required: Authorization: Bearer TOKEN",
                          **{"WWW-Authenticate": "Bearer"})
        if self._params.ports is not None and port not in self._params.ports:
            return _error(404, f"{port} takes no requests here (open: {', '.join(self._params.ports) or 'none'})")
        return None

    async def backlog(self, request: Request) -> Response:
        port = f"{request.path_params['agent']}.{request.path_params['port']}"
        refused = self._refused(request, port)
        if refused is not None:
            return refused
        try:
            return JSONResponse({"port": port, "backlog": self.client.backlog(port)})
        except GraphrunError as exc:
            return _error(404, str(exc))

    async def post(self, request: Request) -> Response:
        port = f"{request.path_params['agent']}.{request.path_params['port']}"
        refused = self._refused(request, port)
        if refused is not None:
            return refused
        query = request.query_params
        try:
            timeout = min(float(query.get("timeout", self._params.timeout)), self._params.max_timeout)
            priority = int(query.get("priority", 0))
            payload = await self._payload(request)
        except (ValueError, ConfigError) as exc:
            return _error(400, str(exc))
        options = {"timeout": timeout, "priority": priority, "answer": query.get("answer")}
        try:
            if query.get("stream") in ("1", "true"):
                return await self._stream(port, payload, options)
            answer = await self.client.request(port, payload, **options)
        except RequestTimeout as exc:
            return _error(504, str(exc))
        except BacklogFull as exc:
            return _error(503, str(exc), **{"Retry-After": "1"})
        except ConfigError as exc:
            return _error(400, str(exc))
        except GraphrunError as exc:  # an unknown port, first of all
            return _error(404, str(exc))
        return JSONResponse(json_payload(answer.payload), headers={"X-Graphrun-Request": answer.request.id
                                                                    if answer.request else ""})

    async def _payload(self, request: Request) -> dict[str, Any]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > self._params.max_body_bytes:
            raise ConfigError(f"the body has {declared} bytes, more than max_body_bytes={self._params.max_body_bytes}")
        body = await request.body()
        if len(body) > self._params.max_body_bytes:
            raise ConfigError(f"the body has {len(body)} bytes, more than max_body_bytes={self._params.max_body_bytes}")
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            return object_payload(body, "the body")
        fields = {k: field_value(v) for k, v in request.query_params.items() if k not in OPTIONS}
        return image_payload(body, "the request body", **fields)

    async def _stream(self, port: str, payload: dict[str, Any], options: dict[str, Any]) -> Response:
        """The parts as one JSON line each; the first is awaited here, so that a timeout or
        a full backlog is still answered with its status."""
        parts = self.client.stream(port, payload, **options)
        first = await parts.__anext__()

        async def lines() -> AsyncIterator[bytes]:
            yield json.dumps(json_payload(first.payload)).encode() + b"\n"
            try:
                async for part in parts:
                    yield json.dumps(json_payload(part.payload)).encode() + b"\n"
            except RequestTimeout as exc:
                yield json.dumps({"error": str(exc)}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
