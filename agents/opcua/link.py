"""The client connection to an OPC UA server, guarded: every failure is one of two errors.

``OpcuaUnreachable``: the server is away (no connection, session or channel closed,
no answer within ``timeout``); the agent reconnects with backoff. ``OpcuaRefused``: the
server answered with a bad status (a node it lacks, a wrong type, access denied).
The user name and password come from secrets, never from the graph.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import Client, Node, ua
from graphrun import read_secret

from ..errors import OpcuaRefused, OpcuaUnreachable
from .loop import LoopThread
from .params import NodeSpec, OpcuaParams, Security
from .security import credentials, policy_class

log = logging.getLogger("graphrun.agent.opcua.link")

#: A server's state (ServerStatus.State): read to learn, between writes, that it is still there.
SERVER_STATE = ua.NodeId(2259, 0)
#: The session's lifetime without requests; what servers commonly grant (asyncua asks an hour).
SESSION_TIMEOUT_MS = 600_000
@dataclass(frozen=True)
class Change:
    """One data change of a subscribed node, as the server reported it."""

    name: str
    node: str
    value: Any
    source_time: float | None
    server_time: float | None
    received: float


class _Handler:
    """asyncua's subscription callback: changes go to a queue the agent's thread empties."""

    def __init__(self, names: Mapping[str, str], changes: queue.Queue[Change]):
        self._names = names  # node id string -> subscription name
        self._changes = changes

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        value = data.monitored_item.Value
        stamp = (lambda t: t.timestamp() if t is not None else None)
        self._changes.put(Change(self._names.get(node.nodeid.to_string(), node.nodeid.to_string()),
                                 node.nodeid.to_string(), val, stamp(value.SourceTimestamp),
                                 stamp(value.ServerTimestamp), time.time()))

    def status_change_notification(self, status: Any) -> None:
        log.warning("subscription status changed: %s", status)


class Link:
    """One client session, opened by ``connect`` and given up by ``close`` (or a failure)."""

    def __init__(self, params: OpcuaParams, loop: LoopThread):
        self.params = params
        self.url = params.url
        self._loop = loop
        self._client: Client | None = None
        self.changes: queue.Queue[Change] = queue.Queue()
        self._last_answer = 0.0

    @property
    def connected(self) -> bool:
        return self._client is not None

    # --- the session ------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        client = Client(self.url, timeout=self.params.timeout)
        client.session_timeout = SESSION_TIMEOUT_MS
        try:
            self._run(self._open(client), what="connect")
        except BaseException:
            self._loop.run(self._quietly_disconnect(client), timeout=self.params.timeout + 1)
            raise
        self._client = client
        self._last_answer = time.monotonic()

    async def _open(self, client: Client) -> None:
        user, password = credentials(self.params.secret)
        if user:
            client.set_user(user)
        if password:
            client.set_password(password)
        security = self.params.security
        if security is not None and security.policy != "None":
            await self._secure(client, security)
        await client.connect()

    @staticmethod
    async def _secure(client: Client, security: Security) -> None:
        assert security.certificate is not None and security.private_key is not None
        key_password = read_secret("opcua_key_password")
        mode = getattr(ua.MessageSecurityMode, security.mode)
        cert = await _read_certificate(security.certificate)
        client.application_uri = _application_uri(cert) or client.application_uri
        await client.set_security(policy_class(security.policy), certificate=str(security.certificate),
                                  private_key=str(security.private_key), private_key_password=key_password,
                                  server_certificate=str(security.server_certificate)
                                  if security.server_certificate else None, mode=mode)

    @staticmethod
    async def _quietly_disconnect(client: Client) -> None:
        try:
            await client.disconnect()
        except Exception as exc:  # noqa: BLE001 - a session that is gone may fail to close in many ways
            log.debug("closing a session that is gone: %r", exc)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                self._loop.run(self._quietly_disconnect(client), timeout=self.params.timeout + 1)
            except TimeoutError:
                log.warning("the session with %s did not close within %.1f s", self.url, self.params.timeout + 1)

    # --- requests ---------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        assert self._client is not None
        return self._client.get_node(node_id)

    def data_types(self, specs: Mapping[str, NodeSpec]) -> dict[str, str | BaseException]:
        """The data type (a VariantType name) of each node, or the error reading it gave."""
        async def read() -> dict[str, str | BaseException]:
            out: dict[str, str | BaseException] = {}
            for name, spec in specs.items():
                try:
                    out[name] = (await self.node(spec.node).read_data_type_as_variant_type()).name
                except ua.UaStatusCodeError as exc:
                    if ua.StatusCode(exc.code).name in _SESSION_GONE:
                        raise
                    out[name] = exc
            return out
        return self._run(read(), what="read the data types of the mapped nodes")

    def read(self, node_ids: Sequence[str]) -> list[Any]:
        async def read() -> list[Any]:
            assert self._client is not None
            values = await self._client.read_attributes([self.node(n) for n in node_ids], ua.AttributeIds.Value)
            for node_id, value in zip(node_ids, values):
                if not value.StatusCode.is_good():
                    raise ua.UaStatusCodeError(value.StatusCode.value)
            return [v.Value.Value if v.Value is not None else None for v in values]
        return self._run(read(), what=f"read {', '.join(node_ids)}")

    def write(self, values: Sequence[tuple[str, ua.Variant]]) -> None:
        """Write the values in one request; refused as a whole if the server refuses one."""
        async def write() -> None:
            assert self._client is not None
            results = await self._client.uaclient.write_attributes(
                [ua.NodeId.from_string(n) for n, _ in values], [ua.DataValue(v) for _, v in values],
                ua.AttributeIds.Value)
            bad = [(n, r) for (n, _), r in zip(values, results) if not r.is_good()]
            if bad:
                raise OpcuaRefused("the server refused to write " + ", ".join(
                    f"{n} ({ua.StatusCode(r.value).name})" for n, r in bad), ua.StatusCode(bad[0][1].value).name)
        self._run(write(), what="write " + ", ".join(n for n, _ in values))

    def probe(self) -> None:
        """Read the server's state: OpcuaUnreachable if the session is gone."""
        self.read([SERVER_STATE.to_string()])

    def idle_for(self) -> float:
        return time.monotonic() - self._last_answer

    def subscribe(self, nodes: Mapping[str, NodeSpec]) -> None:
        """Subscribe to ``nodes`` (name -> node); each change (the current value first) is queued."""
        async def subscribe() -> None:
            assert self._client is not None
            names = {ua.NodeId.from_string(spec.node).to_string(): name for name, spec in nodes.items()}
            handler = _Handler(names, self.changes)
            subscription = await self._client.create_subscription(self.params.publishing_interval * 1000, handler)
            results = await subscription.subscribe_data_change([self.node(s.node) for s in nodes.values()],
                                                               queuesize=1000)
            for name, result in zip(nodes, results if isinstance(results, list) else [results]):
                if isinstance(result, ua.StatusCode):
                    raise OpcuaRefused(f"subscribe {name}: {result.name}", result.name)
        self._run(subscribe(), what="subscribe to " + ", ".join(nodes))

    def _run(self, coro: Any, *, what: str) -> Any:
        """Run one request; its failure becomes OpcuaUnreachable or OpcuaRefused."""
        if not self.connected and what != "connect":
            coro.close()
            raise OpcuaUnreachable(f"OPC UA server {self.url}: not connected")
        try:
            result = self._loop.run(coro, timeout=self.params.timeout * 2 + 1)
        except OpcuaRefused:
            raise
        except ua.UaStatusCodeError as exc:
            status = ua.StatusCode(exc.code).name if hasattr(exc, "code") else type(exc).__name__
            if status in _SESSION_GONE:
                raise OpcuaUnreachable(f"OPC UA server {self.url}: {what}: {status}") from exc
            raise OpcuaRefused(f"OPC UA server {self.url}: {what}: {status}", status) from exc
        except (OSError, TimeoutError, asyncio.TimeoutError, asyncio.CancelledError, ua.UaError, ConnectionError) as exc:
            raise OpcuaUnreachable(f"OPC UA server {self.url}: {what}: {exc or type(exc).__name__}") from exc
        self._last_answer = time.monotonic()
        return result


#: Statuses that say the session or channel is gone rather than the request is wrong.
_SESSION_GONE = {
    "BadSessionIdInvalid", "BadSessionClosed", "BadSessionNotActivated", "BadSecureChannelClosed",
    "BadSecureChannelIdInvalid", "BadConnectionClosed", "BadServerNotConnected", "BadCommunicationError",
    "BadTimeout", "BadShutdown", "BadServerHalted", "BadTooManySessions", "BadTcpInternalError",
}


async def _read_certificate(path: Any) -> Any:
    from asyncua.crypto import uacrypto

    return await uacrypto.load_certificate(str(path))


def _application_uri(cert: Any) -> str | None:
    """The URI in the certificate's subject alternative name: the client must announce it."""
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
