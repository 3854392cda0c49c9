"""Redis Streams as graphrun uses them: tuned clients and consumer-group operations.

The client is tuned for megabyte payloads: a command with a large argument (our
memoryviews of arrays) is packed by redis-py's pure-Python packer, which hands the
argument to the socket as it is instead of copying it into one big bytes object as
the hiredis packer would; every other command is packed by hiredis, which is faster
for many small arguments. Reads use a 1 MiB buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis
from redis.backoff import NoBackoff
from redis.connection import (
    HIREDIS_AVAILABLE,
    Connection,
    HiredisRespSerializer,
    PythonRespSerializer,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.retry import Retry as RedisRetry
from redis.sentinel import Sentinel, SentinelManagedConnection

from .secrets import redis_login

READ_BUFFER = 1 << 20
SENTINEL_SCHEME = "redis+sentinel"
# Wider than any BLOCK we use, so a silent server is noticed without cutting a wait short.
SOCKET_TIMEOUT = 30.0
STATS_PREFIX = "graphrun:stats:"

# Errors after which a client should back off and reconnect.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ConnectionError,
    TimeoutError,
)


class HybridPacker:
    """hiredis packs small commands fast; the Python packer sends big arguments uncopied.

    Each command goes to the packer that suits it: one with a long argument (a frame,
    usually as a memoryview) to the Python packer, every other one to hiredis.
    """

    def __init__(self, buffer_cutoff: int, encode: Any):
        self._python = PythonRespSerializer(buffer_cutoff, encode)
        self._hiredis = HiredisRespSerializer() if HIREDIS_AVAILABLE else None
        self._cutoff = buffer_cutoff

    def pack(self, *args: Any) -> list[Any]:
        if self._hiredis is None:
            return self._python.pack(*args)
        for arg in args:  # a plain loop: this runs for every command sent
            if (type(arg) is memoryview or type(arg) is bytes) and len(arg) > self._cutoff:
                return self._python.pack(*args)
        return self._hiredis.pack(*args)


class _ZeroCopyPacker:
    def _construct_command_packer(self, packer: Any) -> Any:
        return packer or HybridPacker(self._buffer_cutoff, self.encoder.encode)  # type: ignore[attr-defined]


class TunedConnection(_ZeroCopyPacker, Connection):
    """TCP connection whose packer sends memoryviews as they are."""


class TunedUnixConnection(_ZeroCopyPacker, UnixDomainSocketConnection):
    """Unix-socket connection whose packer sends memoryviews as they are."""


def connect(url: str, *, socket_timeout: float | None = SOCKET_TIMEOUT, name: str | None = None) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix:// or redis+sentinel://) tuned for large stream entries.

    Retries inside redis-py are off: the runner decides how to recover, so that a
    command is never silently sent twice behind its back.
    """
    if url.startswith(SENTINEL_SCHEME + "://"):
        return _via_sentinel(url, socket_timeout=socket_timeout, name=name)
    options = parse_url(url)
    login = redis_login() if "password" not in options else None
    if login is not None:  # this process's own ACL user (graphrun run --secure, compose)
        options["username"], options["password"] = login
    unix = urlparse(url).scheme == "unix"
    if not unix and options.pop("connection_class", None) is not None:
        # rediss:// keeps redis-py's SSL connection class (CA and client certificate from the
        # URL's ssl_* parameters, see graph.redis_url); only plain TCP is tuned.
        options.update(socket_timeout=socket_timeout, socket_connect_timeout=5.0, client_name=name,
                       retry=RedisRetry(NoBackoff(), 0))
        return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=SSLConnection, **options))
    options.update(
        connection_class=TunedUnixConnection if unix else TunedConnection,
        socket_read_size=READ_BUFFER,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        retry=RedisRetry(NoBackoff(), 0),
        client_name=name,
    )
    if not unix:
        options["socket_keepalive"] = True
    pool = redis.ConnectionPool(**options)
    return redis.Redis(connection_pool=pool)


class TunedSentinelConnection(_ZeroCopyPacker, SentinelManagedConnection):
    """Connection to the master the sentinels name, whose packer sends memoryviews as they are."""


def _via_sentinel(url: str, *, socket_timeout: float | None, name: str | None) -> redis.Redis:
    """A client of the master of ``redis+sentinel://[USER:PASSWORD@]HOST:PORT,.../MASTER[/DB]``.

    Each new connection asks the sentinels where the master is; after a failover the
    connections to the old master fail, and the runner's reconnect reaches the new one. A
    former master still reachable as a replica answers writes with READONLY, which
    redis-py turns into a lost connection the same way.
    """
    parsed = urlparse(url)
    hosts = parsed.netloc.rpartition("@")[2]
    sentinels = [(host, int(port)) for host, _, port in (a.rpartition(":") for a in hosts.split(","))]
    master, _, db = parsed.path.strip("/").partition("/")
    options: dict[str, Any] = {
        "connection_class": TunedSentinelConnection, "db": int(db or 0), "socket_read_size": READ_BUFFER,
        "socket_timeout": socket_timeout, "socket_connect_timeout": 5.0, "socket_keepalive": True,
        "retry": RedisRetry(NoBackoff(), 0), "client_name": name}
    login = (unquote(parsed.username or "") or None, unquote(parsed.password)) if parsed.password else redis_login()
    if login is not None:
        options["username"], options["password"] = login
    # Sentinels answer at once or not at all: a short timeout moves on to the next one.
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0})
    return sentinel.master_for(master, **options)


def describe(url: str) -> str:
    """``url`` without its password, for logs."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


@dataclass(frozen=True)
class Entry:
    """A stream entry as read: ``fields`` is None when it was deleted while pending."""

    stream: str
    id: str
    fields: dict[bytes, bytes] | None


def ensure_group(client: redis.Redis, stream: str, group: str, *, start: str = "earliest") -> bool:
    """Create ``group`` on ``stream`` (and the stream) unless it exists; True if created.

    The group's baseline is recorded, so that entries trimmed before the group read
    them can be counted later (see ``trimmed_before_read``).
    """
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError:
        info = {"entries-added": 0, "length": 0}
    begin = "0" if start == "earliest" else "$"
    if "entries-added" not in info:  # Redis 6: no counters, so no trim accounting either
        args: tuple[Any, ...] = ()
        base = None
    else:
        added, length = int(info["entries-added"]), int(info["length"])
        base = added - length if start == "earliest" else added
        args = ("ENTRIESREAD", base)
    try:
        client.execute_command("XGROUP", "CREATE", stream, group, begin, "MKSTREAM", *args)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    if base is not None:
        client.hsetnx(STATS_PREFIX + stream, f"{group}:base", base)
    return True


def parse_read(reply: Any) -> list[Entry]:
    """Entries of an XREADGROUP reply, in stream order per stream."""
    out: list[Entry] = []
    if not reply:
        return out
    items = reply.items() if isinstance(reply, dict) else reply
    for stream, entries in items:
        name = text(stream)
        if isinstance(entries, list) and entries and isinstance(entries[0], list) and not isinstance(entries[0][0], bytes):
            entries = entries[0]  # RESP3 nests one more level
        for entry_id, fields in entries:
            out.append(Entry(name, text(entry_id), fields or None))
    return out


def read_group(client: redis.Redis, group: str, consumer: str, streams: dict[str, str], *,
               count: int, block_ms: int | None) -> list[Entry]:
    """XREADGROUP: ``streams`` maps stream -> '>' (new entries) or an id (own pending after it)."""
    reply = client.xreadgroup(group, consumer, streams, count=count, block=block_ms)
    return parse_read(reply)


def delivery_counts(client: redis.Redis, stream: str, group: str, ids: Sequence[str]) -> dict[str, int]:
    """How often each pending entry has been delivered (one XPENDING call for the range)."""
    if not ids:
        return {}
    rows = client.xpending_range(stream, group, min=ids[0], max=ids[-1], count=max(len(ids), 1) * 4)
    wanted = set(ids)
    counts = {}
    for row in rows:
        entry_id = text(row["message_id"])
        if entry_id in wanted:
            counts[entry_id] = int(row["times_delivered"])
    return counts


def claim_abandoned(client: redis.Redis, stream: str, group: str, consumer: str, *, min_idle_ms: int,
                    count: int) -> list[Entry]:
    """Take over entries that other consumers left pending for ``min_idle_ms`` (they died).

    Unlike a bare XAUTOCLAIM this leaves alone the entries this consumer itself holds
    or is about to retry.
    """
    rows = client.xpending_range(stream, group, min="-", max="+", count=count, idle=min_idle_ms)
    mine = consumer.encode()
    ids = [row["message_id"] for row in rows if row["consumer"] != mine]
    if not ids:
        return []
    # Redis 7 drops entries deleted meanwhile from the pending list and does not return them.
    claimed = client.xclaim(stream, group, consumer, min_idle_ms, ids)
    return [Entry(stream, text(entry_id), fields or None) for entry_id, fields in claimed]


def claim_own(client: redis.Redis, stream: str, group: str, consumer: str, ids: Sequence[str]) -> list[Entry]:
    """Deliver own pending entries again (a retry): XCLAIM counts the delivery and returns
    the fields. Entries acknowledged or deleted meanwhile are not returned."""
    if not ids:
        return []
    claimed = client.xclaim(stream, group, consumer, 0, list(ids))
    return [Entry(stream, text(entry_id), fields or None) for entry_id, fields in claimed if entry_id]


def trim_consumed(client: redis.Redis, stream: str) -> int:
    """Delete the entries of ``stream`` that every consumer group has read and acknowledged;
    the number deleted. A stream without groups is left alone: nobody is known to have read it."""
    keep_from = consumed_before(client, stream)
    if keep_from is None:
        return 0
    return int(client.execute_command("XTRIM", stream, "MINID", f"{keep_from[0]}-{keep_from[1]}"))


def consumed_before(client: redis.Redis, stream: str) -> tuple[int, int] | None:
    """The first entry id some consumer group of ``stream`` has not read, or read and not
    acknowledged: every entry before it is done with. None when the stream has no groups."""
    groups = client.xinfo_groups(stream)
    if not groups:
        return None
    keep_from: tuple[int, int] | None = None
    for g in groups:
        ms, seq = id_tuple(g["last-delivered-id"])
        boundary = (ms, seq + 1)  # the first entry this group has not read
        oldest = client.xpending(stream, g["name"])["min"] if g["pending"] else None
        if oldest is not None:  # (None: acknowledged since XINFO answered)
            boundary = min(boundary, id_tuple(oldest))
        keep_from = boundary if keep_from is None else min(keep_from, boundary)
    return keep_from


def id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence): ids compare in stream order."""
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def text(value: bytes | str) -> str:
    """A Redis reply's bytes as str (replies may come decoded or not)."""
    return value.decode() if isinstance(value, bytes) else value


def touch(client: redis.Redis, stream: str, group: str, consumer: str, ids: Iterable[str]) -> None:
    """Reset the idle time of entries this consumer still holds, so no one reclaims them."""
    ids = list(ids)
    if ids:
        client.xclaim(stream, group, consumer, 0, ids, justid=True)


def trimmed_before_read(client: redis.Redis, stream: str, group: str) -> int | None:
    """Entries the stream's length bound removed before ``group`` read them.

    Entries added since the group's baseline are unread, pending, acknowledged (the
    runner counts them in the transaction of their XACK) or gone: trimmed. One
    transaction reads the counts and the stream, so the sum holds at one instant.
    """
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(STATS_PREFIX + stream)
    pipe.xinfo_stream(stream)
    pipe.xinfo_groups(stream)
    stats, info, all_groups = pipe.execute()
    base = stats.get(f"{group}:base".encode())
    if base is None or "entries-added" not in info:
        return None
    acked = int(stats.get(f"{group}:acked".encode(), 0))
    groups = {text(g["name"]): g for g in all_groups}
    g = groups.get(group)
    if g is None:
        return None
    last = id_tuple(g["last-delivered-id"])
    first = info.get("first-entry")
    if last >= id_tuple(info["last-generated-id"]):
        unread = 0
    elif first is None or last < id_tuple(first[0]):
        unread = int(info["length"])  # the group is behind the whole stream
    elif g.get("lag") is not None:
        unread = int(g["lag"])  # inside the stream: Redis's own count
    else:
        return None
    return max(0, int(info["entries-added"]) - int(base) - acked - int(g["pending"]) - unread)
