"""Writing: the outputs and acknowledgements an agent made, on their way to Redis.

The order of a flush is the delivery guarantee's second half: every output of a
batch is written before any acknowledgement of the messages it came from. When one
Redis instance is involved and nothing is to be indexed, outputs and acknowledgements go
in one MULTI/EXEC; when several instances are, or outputs are indexed (``index``: the
index entries need the ids Redis gives), all outputs are sent first, then the index
entries and acknowledgements.

Lists are cleared only after Redis answered, so a flush repeated after a reconnect
sends them again: an output may be written twice, never lost.

Replication is asynchronous: a write Redis answered may not have reached its replica when
the master dies, and a failover to that replica loses it. For an instance with
``wait_replicas: N`` a flush counts as written only once N replicas confirmed it (WAIT,
on the connection that wrote it); fewer within ``WAIT_TIMEOUT_MS`` is treated as a lost
connection, and the flush is sent again.

Owner: the runner's handling thread. Nothing here is touched by another thread.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from . import index, transport
from .graph import InputBinding
from .health import Counters

WAIT_TIMEOUT_MS = 1000  # how long a flush waits for its replicas before it is sent again


class ReplicasBehind(redis.ConnectionError):
    """Fewer replicas than ``wait_replicas`` confirmed a flush in time: it is sent again."""


@dataclass
class Write:
    """One stream entry to append, with its stream's bounds."""

    instance: str
    key: str
    maxlen: int
    fields: Mapping[bytes, Any]
    max_bytes: int | None = None
    index_key: str | None = None  # the index list that names this entry (``index``), if any
    index_ttl: int = index.DEFAULT_TTL
    expire: int | None = None  # seconds the stream lives after this write (reply streams), if set
    reply: str | None = None  # the correlation id of the request this entry answers, if any
    written: Callable[[str], None] | None = None  # called with the entry id Redis gave (frame slots)

    def bound(self) -> int:
        """The length bound: ``maxlen``, or fewer when that many entries of this size
        would pass ``max_bytes`` (frames of megabytes)."""
        if self.max_bytes is None:
            return self.maxlen
        size = sum(len(v) for v in self.fields.values())
        return max(1, min(self.maxlen, self.max_bytes // max(size, 1)))


def _tell(writes: Any, ids: list[Any]) -> None:
    """Tell writes that asked (``Write.written``) the entry id Redis gave them."""
    for place, w in writes:
        w.written(transport.text(ids[place]))  # type: ignore[misc]


def _flat(fields: Mapping[bytes, Any]) -> list[Any]:
    return [part for pair in fields.items() for part in pair]


class Outbox:
    """Outputs and acknowledgements committed by successful attempts, not yet in Redis."""

    def __init__(self, clients: Mapping[str, redis.Redis], group: str, counters: Counters,
                 wait: Mapping[str, int] | None = None):
        self._clients = clients
        self._wait = {instance: n for instance, n in (wait or {}).items() if n > 0}  # instance -> replicas
        self._group = group
        self._counters = counters
        self.writes: list[Write] = []
        self.acks: dict[InputBinding, list[str]] = defaultdict(list)
        # (instance, stats key) -> acknowledged entries a full Redis would not count yet
        self._uncounted: dict[tuple[str, str], int] = {}

    # --- filling ----------------------------------------------------------------------

    def commit(self, writes: list[Write], acks: Mapping[InputBinding, list[str]]) -> None:
        """Take what one successful attempt made; written at the next flush, outputs first."""
        self.writes.extend(writes)
        for binding, ids in acks.items():
            if ids:
                self.acks[binding].extend(ids)

    @property
    def unsent(self) -> int:
        return len(self.writes) + sum(len(ids) for ids in self.acks.values())

    # --- flushing ---------------------------------------------------------------------

    def flush(self, then: tuple[str, tuple[Any, ...]] | None = None) -> Any:
        """Write pending outputs, then acknowledge.

        Each XACK goes with an HINCRBY of the group's count of acknowledged entries, in
        the same transaction, so that an entry is always exactly one of: unread, pending,
        acknowledged (and counted) or trimmed before it was read
        (``transport.trimmed_before_read``), whatever crashes when.

        ``then``: (instance, command), the next read of new entries, sent after the
        transaction in the same round trip when the flush is one transaction on that
        instance with no replicas to wait for: an agent that keeps up pays one round trip
        per batch less. Its raw reply is returned; None when it was not sent or Redis
        refused it (the usual read then says why). Entries it read are pending to this
        consumer like those of any read, whatever happens to the reply."""
        if not self.writes and not any(self.acks.values()):
            return None
        outputs: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        indexed: dict[str, list[tuple[int, str, Write]]] = defaultdict(list)  # instance -> (XADD's place, index, write)
        told: dict[str, list[tuple[int, Write]]] = defaultdict(list)  # instance -> (XADD's place, write to tell)
        expires: dict[tuple[str, str], int] = {}
        for w in self.writes:
            if w.index_key is not None:
                indexed[w.instance].append((len(outputs[w.instance]), w.index_key, w))
            if w.written is not None:
                told[w.instance].append((len(outputs[w.instance]), w))
            outputs[w.instance].append(("XADD", w.key, "MAXLEN", "~", w.bound(), "*", *_flat(w.fields)))
            if w.expire is not None:  # one EXPIRE per stream and flush, after its entries
                expires[(w.instance, w.key)] = max(w.expire, expires.get((w.instance, w.key), 0))
        for (instance, key), seconds in expires.items():
            outputs[instance].append(("EXPIRE", key, seconds))
        after: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for binding, ids in self.acks.items():
            if ids:
                after[binding.instance] += [("XACK", binding.key, self._group, *ids),
                                            ("HINCRBY", transport.STATS_PREFIX + binding.key, f"{self._group}:acked",
                                             len(ids))]
        for (instance, key), n in self._uncounted.items():  # counts a full Redis refused earlier
            if instance in after:
                after[instance].append(("HINCRBY", key, f"{self._group}:acked", n))
        if indexed or len(set(outputs) | set(after)) > 1:
            # Several instances, or entries to index: every output is written before any
            # acknowledgement. Index entries name the ids Redis gave and go with the
            # acknowledgements: every message acknowledged has its outputs indexed.
            for instance, commands in outputs.items():
                ids = self._send(instance, commands)
                _tell(told.get(instance, ()), ids)
                after[instance][:0] = [command for place, key, w in indexed.get(instance, ())
                                       for command in index.commands(key, w.key, ids[place], w.index_ttl)]
            outputs = defaultdict(list)
        ahead = None
        instances = set(outputs) | set(after)
        for instance in instances:
            commands = outputs[instance] + after[instance]
            try:
                if then is not None and instances == {then[0]} and instance not in self._wait:
                    replies, ahead = self._send_then_read(self._clients[instance], commands, then[1])
                else:
                    replies = self._send(instance, commands)
            except redis.exceptions.OutOfMemoryError:
                if outputs[instance]:
                    raise  # outputs wait for room; their acknowledgements with them
                replies = self._acknowledge_when_full(instance, commands)
            else:
                for key in [k for (i, k) in self._uncounted if i == instance]:
                    del self._uncounted[(instance, key)]
            _tell(told.get(instance, ()) if outputs[instance] else (), replies)
        self._counters.sent += len(self.writes)
        self.writes = []
        self.acks = defaultdict(list)
        return ahead

    def _acknowledge_when_full(self, instance: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Acknowledgements without their counts: a full Redis refuses HINCRBY (it may grow
        memory) but not XACK, and only acknowledgements let the writers trim and Redis get
        room again. The counts go with a later flush; until then those entries look trimmed
        (``transport.trimmed_before_read``), as long as Redis stays full."""
        counts = [c for c in commands if c[0] == "HINCRBY"]
        replies = self._send(instance, [c for c in commands if c[0] != "HINCRBY"])
        totals: dict[str, int] = defaultdict(int)
        for _, key, _field, n in counts:  # this flush's counts and those refused before
            totals[key] += n
        for key, n in totals.items():
            self._uncounted[(instance, key)] = n
        return replies

    def _send(self, instance: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands in order, in one round trip; a lone command skips the pipeline's overhead.

        Several commands go in a MULTI/EXEC: a Redis that refuses one of them (full, at its
        maxmemory) then runs none, so an acknowledgement never goes through without the
        outputs before it.
        """
        client = self._clients[instance]
        if instance in self._wait:
            return self._send_replicated(instance, client, commands)
        if len(commands) == 1:
            return [client.execute_command(*commands[0])]
        pipe = client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()

    def _send_then_read(self, client: redis.Redis, commands: list[tuple[Any, ...]],
                        read: tuple[Any, ...]) -> tuple[list[Any], Any]:
        """The commands, then ``read``, in one round trip: (the commands' replies, the
        read's raw reply or None if refused)."""
        results, ahead = self._block_then(client, commands, read)
        return results, None if isinstance(ahead, redis.ResponseError) else ahead

    def _send_replicated(self, instance: str, client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands, then WAIT, on one connection: WAIT counts the replicas that have
        this connection's writes."""
        needed = self._wait[instance]
        results, confirmed = self._block_then(client, commands, ("WAIT", needed, WAIT_TIMEOUT_MS))
        if isinstance(confirmed, Exception):
            raise confirmed
        if int(confirmed) < needed:
            raise ReplicasBehind(f"Redis {instance!r}: {confirmed} of {needed} replica(s) confirmed the writes "
                                 f"within {WAIT_TIMEOUT_MS} ms: they are sent again")
        return results

    @staticmethod
    def _block_then(client: redis.Redis, commands: list[tuple[Any, ...]], last: tuple[Any, ...]) -> tuple[list[Any], Any]:
        """The commands (in a MULTI/EXEC when several), then ``last``, in one round trip on
        one connection: (the commands' replies, raising the first error among them;
        ``last``'s reply, or the ResponseError Redis answered it with)."""
        block = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else list(commands)
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands([*block, last]))
            replies = [connection.read_response() for _ in block]
            try:
                final = connection.read_response()
            except redis.ResponseError as exc:
                final = exc
        except BaseException:
            connection.disconnect()  # replies may be left unread: the connection is not reused
            raise
        finally:
            pool.release(connection)
        results = replies[-1] if len(commands) > 1 else replies[:1]
        for result in results:
            if isinstance(result, Exception):
                raise result
        return list(results), final
