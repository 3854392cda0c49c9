"""Runs one agent of a graph against Redis: the loop an agent author never writes.

Delivery is at-least-once. A message is acknowledged only after the outputs made
from it are written; a consumer that died leaves its entries pending, and they are
reclaimed after the input's ``claim_idle_ms``; on start a consumer first drains its
own pending entries; a message that keeps failing goes to the dead-letter stream.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import codec, transport
from .agent import Agent
from .errors import AgentStartError, ConfigError, DeadLetter, MessageFormatError, Retry
from .graph import AgentNode, Graph, InputBinding, OutputBinding, redis_url
from .message import Message
from .transport import CONNECTION_ERRORS, Entry

log = logging.getLogger("graphrun.runner")

BLOCK_MS = 500  # how long an idle read waits; bounds how fast a stop request is seen
HEALTH_INTERVAL = 2.0
HEALTH_PREFIX = "graphrun:health:"
READ_BUDGET = 2 << 20  # bytes one read should return at most (see _read_count)
STOP_FLUSH_GRACE = 8.0  # seconds a stopping agent keeps trying to write what it made


@dataclass
class _Write:
    instance: str
    key: str
    maxlen: int
    fields: dict[bytes, Any]


def _flat(fields: Mapping[bytes, Any]) -> list[Any]:
    return [part for pair in fields.items() for part in pair]


@dataclass
class _Counters:
    received: int = 0
    handled: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    redis_errors: int = 0
    redis_restarts: int = 0


class AgentRunner:
    """One replica of one agent, in this process.

    ``run`` returns when ``duration`` has passed or ``request_stop`` was called (also
    from another thread or a signal handler); the message in hand is finished first.
    """

    def __init__(
        self,
        graph: Graph,
        agent_name: str,
        *,
        replica: int | None = None,
        consumer: str | None = None,
        redis_urls: Mapping[str, str] | None = None,
        health_interval: float = HEALTH_INTERVAL,
    ):
        try:
            self.node: AgentNode = graph.agents[agent_name]
        except KeyError:
            raise ConfigError(f"graph {graph.name!r} has no agent {agent_name!r} (agents: {', '.join(graph.agents)})") from None
        self.graph = graph
        self.group = agent_name
        if consumer is None:
            consumer = f"{agent_name}-{replica}" if replica is not None else f"{agent_name}-{socket.gethostname()}"
        self.consumer = consumer
        self.health_interval = health_interval
        # Context for the agent.
        self.stopping = threading.Event()
        self.status: dict[str, Any] = {}
        self.current: Message | None = None
        self.counters = _Counters()
        self._urls = {i: redis_url(graph, i, dict(redis_urls or {})) for i in sorted(self._instances())}
        self._clients = {i: transport.connect(u, name=consumer.replace(" ", "_")) for i, u in self._urls.items()}
        self._writes: list[_Write] = []
        self._held: dict[tuple[str, str], InputBinding] = {}
        self._by_stream: dict[tuple[str, str], InputBinding] = {(b.instance, b.key): b for b in self.node.inputs.values()}
        self._retry_at: dict[str, float] = {}  # instance -> when to re-read own pending entries
        self._delivered: dict[tuple[str, str], int] = defaultdict(int)
        self._pending_acks: dict[InputBinding, list[str]] = defaultdict(list)
        self._batch: dict[str, Entry] = {}  # the raw entries of the batch being handled
        self._last_errors: dict[str, str] = {}
        self._health_count = 0
        self._trimmed: dict[str, int] = {}
        self._stop_seen = 0.0
        self._entry_bytes: dict[str, float] = {}  # instance -> running mean size of an entry
        self._inbox: queue.Queue[tuple[str, list[Entry]]] | None = None  # from reader threads
        self._readers: list[threading.Thread] = []
        self._inflight: set[tuple[str, str]] = set()  # (stream, id) read ahead by a reader thread
        self._count_due = 0.0  # when delivery counts are next written
        self._run_ids: dict[str, str | None] = {}  # instance -> the server's run_id, to notice restarts
        try:
            self.agent: Agent = self.node.agent_class(
                name=agent_name,
                params=self.node.settings,
                context=self,
                groups=self.node.groups,
                connected=list(self.node.inputs) + list(self.node.outputs),
                graph=graph.name,
                home_redis=self._home(),
            )
        except Exception as exc:
            raise AgentStartError(f"agent {agent_name!r} ({self.node.type}) could not be created: {exc}") from exc

    def _instances(self) -> set[str]:
        """The instances this agent talks to; one without ports still needs one for its health."""
        return self.node.instances | {self.graph.home_redis(self.node.name)}

    # --- Context (called by agent code) ----------------------------------------------

    def emit(self, port: str, payload: Mapping[str, Any], parent: Message | None) -> None:
        binding: OutputBinding | None = self.node.outputs.get(port)
        if binding is None:
            return  # a dynamic output the graph does not connect
        parent = parent or self.current
        if parent is None:
            message = Message(payload, producer=self.node.name)
        else:
            message = parent.derive(payload, producer=self.node.name)
        self._writes.append(_Write(binding.instance, binding.key, binding.maxlen, codec.encode(message)))

    def hold(self, message: Message) -> None:
        binding = self._binding_of(message)
        self._held[(binding.key, message.entry_id or "")] = binding

    def release(self, messages: Sequence[Message]) -> None:
        for message in messages:
            binding = self._held.pop((message.stream or "", message.entry_id or ""), None)
            if binding is not None:
                self._pending_acks[binding].append(message.entry_id or "")
        self._with_redis(self._flush)

    def redis(self, instance: str) -> redis.Redis:
        client = self._clients.get(instance)
        if client is None:
            if instance not in self.graph.redis:
                raise ConfigError(f"graph {self.graph.name!r} has no Redis instance {instance!r}")
            client = self._clients[instance] = transport.connect(redis_url(self.graph, instance, self._urls))
        return client

    def _binding_of(self, message: Message) -> InputBinding:
        for binding in self.node.inputs.values():
            if binding.key == message.stream and binding.port == message.port:
                return binding
        raise ValueError(f"{message!r} was not received by this agent")

    # --- control --------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, duration: float | None = None) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        self._with_redis(self._ensure_groups)
        if self.stopping.is_set():
            return
        self.agent.start()
        log.info("agent %s started as consumer %s (%s)", self.node.name, self.consumer,
                 ", ".join(f"{i}={transport.describe(u)}" for i, u in self._urls.items()))
        try:
            if self.node.inputs:
                self._with_redis(self._drain_own_pending)
                self._start_readers()
            next_tick = time.monotonic() + (self.agent.tick_interval or 0)
            next_claim = time.monotonic() + self._claim_interval()
            next_health = 0.0
            while not self.stopping.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_health:
                    self._with_redis(self._publish_health)
                    next_health = now + self.health_interval
                if self.agent.tick_interval is not None and now >= next_tick:
                    self.agent.tick()
                    self._with_redis(self._flush)
                    next_tick = now + self.agent.tick_interval
                if not self.node.inputs:
                    self.agent.produce()
                    self._with_redis(self._flush)
                    continue
                if now >= next_claim:
                    self._with_redis(self._reclaim)
                    next_claim = now + self._claim_interval()
                block = BLOCK_MS
                if self._retry_at:
                    block = max(1, min(block, int((min(self._retry_at.values()) - now) * 1000)))
                if self.agent.tick_interval is not None:
                    block = max(1, min(block, int((next_tick - now) * 1000)))
                if deadline is not None:
                    block = max(1, min(block, int((deadline - now) * 1000)))
                self._with_redis(lambda: self._read_and_handle(block))
        finally:
            try:
                self._count_due = 0.0
                self._with_redis(self._flush)
            finally:
                for thread in self._readers:
                    thread.join(BLOCK_MS / 1000 + 5)
                self.agent.stop()
                self._with_redis(self._publish_health, give_up_on_stop=True, final=True)
                for client in self._clients.values():
                    client.connection_pool.disconnect()
                log.info("agent %s stopped: %s", self.node.name, self._summary())

    def _claim_interval(self) -> float:
        idle = min((b.spec.claim_idle_ms for b in self.node.inputs.values()), default=30_000)
        return max(0.05, idle / 2000)

    def _summary(self) -> str:
        c = self.counters
        return (f"{c.received} received, {c.handled} handled, {c.sent} sent, {c.failed} failed, "
                f"{c.dead_lettered} dead-lettered, {c.reclaimed} reclaimed")

    # --- reading ----------------------------------------------------------------------

    def _ensure_groups(self) -> None:
        for binding in self.node.inputs.values():
            created = transport.ensure_group(self._clients[binding.instance], binding.key, self.group, start=binding.spec.start)
            if created:
                log.info("created consumer group %s on %s", self.group, binding.stream)

    def _inputs_by_instance(self) -> dict[str, list[InputBinding]]:
        out: dict[str, list[InputBinding]] = defaultdict(list)
        for binding in self.node.inputs.values():
            out[binding.instance].append(binding)
        return out

    def _read_and_handle(self, block_ms: int) -> None:
        now = time.monotonic()
        for instance in self._inputs_by_instance():
            if self._retry_at.get(instance, float("inf")) <= now:
                self._retry_at.pop(instance, None)
                self._drain_own_pending(only=instance)
        if self._inbox is None:  # all inputs on one instance: read it here
            [(instance, bindings)] = self._inputs_by_instance().items()
            entries = self._read_new(instance, bindings, block_ms)
            if entries:
                self._handle_new(instance, entries)
            return
        try:
            instance, entries = self._inbox.get(timeout=block_ms / 1000)
        except queue.Empty:
            return
        self._handle_new(instance, entries)

    def _read_new(self, instance: str, bindings: list[InputBinding], block_ms: int) -> list[Entry]:
        """One read of new entries from one instance, filled for up to ``batch_wait_ms``."""
        client = self._clients[instance]
        streams = {b.key: ">" for b in bindings}
        batch = self._read_count(instance, max(b.spec.batch for b in bindings))
        entries = transport.read_group(client, self.group, self.consumer, streams, count=batch, block_ms=block_ms)
        wait_ms = max(b.spec.batch_wait_ms for b in bindings)
        if entries and wait_ms > 0 and len(entries) < batch:
            end = time.monotonic() + wait_ms / 1000
            while len(entries) < batch and (left := end - time.monotonic()) > 0:
                more = transport.read_group(client, self.group, self.consumer, streams,
                                            count=batch - len(entries), block_ms=max(1, int(left * 1000)))
                if not more:
                    break
                entries += more
        if entries:
            size = sum(len(v) for e in entries if e.fields for v in e.fields.values()) / len(entries)
            self._entry_bytes[instance] = 0.8 * self._entry_bytes.get(instance, size) + 0.2 * size
        return entries

    def _handle_new(self, instance: str, entries: list[Entry]) -> None:
        for entry in entries:
            self._delivered[(instance, entry.stream)] += 1
        try:
            self._process(instance, entries, counts=None)
        finally:
            self._inflight.difference_update((e.stream, e.id) for e in entries)

    def _start_readers(self) -> None:
        """With inputs on several instances, one thread per instance blocks on its reads,
        so a message on any of them is handled at once; handling stays on this thread."""
        by_instance = self._inputs_by_instance()
        if len(by_instance) < 2:
            return
        # One batch read ahead per instance at most: the rest waits in Redis, not here.
        self._inbox = queue.Queue(maxsize=len(by_instance))
        for instance, bindings in by_instance.items():
            thread = threading.Thread(target=self._reader, args=(instance, bindings), daemon=True,
                                      name=f"{self.consumer}-read-{instance}")
            thread.start()
            self._readers.append(thread)

    def _reader(self, instance: str, bindings: list[InputBinding]) -> None:
        delay = 0.05
        while not self.stopping.is_set():
            try:
                entries = self._read_new(instance, bindings, BLOCK_MS)
                delay = 0.05
            except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                # The handling thread reconnects and recreates groups; this one waits.
                log.warning("reading %s failed (%s); again in %.2f s", instance, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
                if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                    self._retry_at[instance] = 0.0
                continue
            self._inflight.update((e.stream, e.id) for e in entries)
            while entries and not self.stopping.is_set():
                try:
                    self._inbox.put((instance, entries), timeout=0.5)  # type: ignore[union-attr]
                    break
                except queue.Full:
                    continue

    def _read_count(self, instance: str, batch: int) -> int:
        """Entries to ask for: up to ``batch``, but about READ_BUDGET bytes at most.

        Batching saves round trips for small messages; for frames of megabytes one huge
        reply costs more to parse than the round trips it saves.
        """
        size = self._entry_bytes.get(instance)
        if not size:
            return 1  # the first read learns the entry size
        return max(1, min(batch, int(READ_BUDGET // size)))

    def _drain_own_pending(self, only: str | None = None) -> None:
        """Handle again what this consumer received but never acknowledged (after a crash or failure)."""
        for instance, bindings in self._inputs_by_instance().items():
            if only is not None and instance != only:
                continue
            client = self._clients[instance]
            for binding in bindings:
                after = "0"
                while not self.stopping.is_set():
                    entries = transport.read_group(client, self.group, self.consumer, {binding.key: after},
                                                   count=binding.spec.batch, block_ms=None)
                    if not entries:
                        break
                    after = entries[-1].id
                    # Held entries wait for their release; read-ahead ones are in the inbox.
                    entries = [e for e in entries if (binding.key, e.id) not in self._held
                               and (binding.key, e.id) not in self._inflight]
                    if not entries:
                        continue
                    counts = transport.delivery_counts(client, binding.key, self.group, [e.id for e in entries])
                    self._process(instance, entries, counts=counts)

    def _reclaim(self) -> None:
        """Keep held entries ours, then take over entries that dead consumers left pending."""
        held_by_stream: dict[tuple[str, str], list[str]] = defaultdict(list)
        for (stream, entry_id), binding in self._held.items():
            held_by_stream[(binding.instance, stream)].append(entry_id)
        for (instance, stream), ids in held_by_stream.items():
            transport.touch(self._clients[instance], stream, self.group, self.consumer, ids)
        for binding in self.node.inputs.values():
            client = self._clients[binding.instance]
            claimed = transport.claim_abandoned(client, binding.key, self.group, self.consumer,
                                                min_idle_ms=binding.spec.claim_idle_ms, count=binding.spec.batch)
            if claimed:
                self.counters.reclaimed += len(claimed)
                log.warning("reclaimed %d entries of %s left pending by another consumer", len(claimed), binding.stream)
                counts = transport.delivery_counts(client, binding.key, self.group, [e.id for e in claimed])
                self._process(binding.instance, claimed, counts=counts)

    # --- handling ---------------------------------------------------------------------

    def _process(self, instance: str, entries: list[Entry], counts: dict[str, int] | None) -> None:
        """Handle a batch read from one instance; write outputs, then acknowledge."""
        acks: dict[InputBinding, list[str]] = defaultdict(list)
        dead: list[tuple[InputBinding, Entry, str]] = []
        good: list[Message] = []
        self.counters.received += len(entries)
        received = time.time()
        for entry in entries:
            binding = self._by_stream[(instance, entry.stream)]
            if entry.fields is None:
                acks[binding].append(entry.id)  # deleted while pending: nothing left to handle
                continue
            deliveries = 1 if counts is None else counts.get(entry.id, 1)
            if deliveries > binding.spec.max_deliveries:
                dead.append((binding, entry, f"failed {deliveries - 1} deliveries (max_deliveries={binding.spec.max_deliveries})"))
                continue
            try:
                message = codec.decode(entry.fields)
            except MessageFormatError as exc:
                dead.append((binding, entry, f"malformed entry: {exc}"))
                continue
            message.port, message.entry_id, message.stream, message.received = binding.port, entry.id, entry.stream, received
            good.append(message)
        if good:
            self._batch = {e.id: e for e in entries}
            try:
                self._handle(good, acks, dead)
            finally:
                self._batch = {}
        for binding, entry, reason in dead:
            self._dead_letter(binding, entry, reason)
        for binding, ids in acks.items():
            self._pending_acks[binding].extend(ids)
        self._flush()

    def _handle(self, messages: list[Message], acks: dict[InputBinding, list[str]],
                dead: list[tuple[InputBinding, Entry, str]]) -> None:
        if type(self.agent).handle_batch is Agent.handle_batch:
            for message in messages:  # one outcome per message
                self.current = message
                exc = self._attempt([message], lambda m=message: self.agent.handle(m), acks)
                if exc is not None:
                    self._failed(message, [message], exc, dead)
            return
        exc = self._attempt(messages, lambda: self.agent.handle_batch(messages), acks)
        if exc is None:
            return
        if len(messages) == 1 or isinstance(exc, Retry):
            self._failed(messages[0] if len(messages) == 1 else None, messages, exc, dead)
            return
        # Find the culprit one message at a time, so good messages are not held back.
        for message in messages:
            exc = self._attempt([message], lambda m=message: self.agent.handle_batch([m]), acks)
            if exc is not None:
                self._failed(message, [message], exc, dead)

    def _attempt(self, messages: list[Message], call: Any, acks: dict[InputBinding, list[str]]) -> Exception | None:
        """Run agent code on ``messages``: on success queue their acks (unless held), on
        failure drop the outputs the attempt made and return the exception."""
        writes_before = len(self._writes)
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - every failure is accounted for by the caller
            del self._writes[writes_before:]
            return exc
        finally:
            self.current = None
        self.counters.handled += len(messages)
        for message in messages:
            binding = self._binding_of(message)
            if (binding.key, message.entry_id) not in self._held:
                acks[binding].append(message.entry_id or "")
        return None

    def _failed(self, single: Message | None, messages: list[Message], exc: BaseException,
                dead: list[tuple[InputBinding, Entry, str]]) -> None:
        if isinstance(exc, DeadLetter) and single is not None:
            binding = self._binding_of(single)
            dead.append((binding, self._batch[single.entry_id or ""], f"DeadLetter: {exc}"))
            return
        delay = exc.delay if isinstance(exc, Retry) else min(30.0, 0.1 * 2 ** min(self.counters.failed, 8))
        if isinstance(exc, Retry):
            self.counters.retried += len(messages)
            log.info("retry of %d message(s) in %.1f s: %s", len(messages), delay, exc)
        else:
            self.counters.failed += len(messages)
            log.error("handling %s failed: %s", ", ".join(f"{m.port}/{m.entry_id}" for m in messages),
                      "".join(traceback.format_exception_only(type(exc), exc)).strip())
            log.debug("traceback", exc_info=exc)
        self._last_errors = {m.entry_id or "": f"{type(exc).__name__}: {exc}" for m in messages}
        for message in messages:
            instance = self._binding_of(message).instance
            when = time.monotonic() + delay
            self._retry_at[instance] = min(self._retry_at.get(instance, when), when)

    def _dead_letter(self, binding: InputBinding, entry: Entry, reason: str) -> None:
        fields = entry.fields or {}
        last = self._last_errors.pop(entry.id, None)
        if last and "deliveries" in reason:
            reason = f"{reason}; last error: {last}"
        record = {
            **fields,
            b"dl:error": reason.encode(),
            b"dl:agent": self.node.name.encode(),
            b"dl:consumer": self.consumer.encode(),
            b"dl:stream": binding.key.encode(),
            b"dl:id": entry.id.encode(),
            b"dl:time": repr(time.time()).encode(),
        }
        target = binding.dead_letter
        self._writes.append(_Write(target.instance, target.key, 100_000, record))
        self.counters.dead_lettered += 1
        log.error("dead-lettered %s/%s to %s: %s", binding.key, entry.id, target, reason)
        self._pending_acks[binding].append(entry.id)

    # --- writing ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Write pending outputs, then acknowledge: one round trip when one instance is involved.

        Both lists are cleared only after Redis answered, so a retry after a reconnect
        sends them again: an output may be written twice, never lost.
        """
        writes, all_acks = self._writes, self._pending_acks
        if not writes and not any(all_acks.values()):
            return
        outputs: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for w in writes:
            outputs[w.instance].append(("XADD", w.key, "MAXLEN", "~", w.maxlen, "*", *_flat(w.fields)))
        acks: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for binding, ids in all_acks.items():
            if ids:
                acks[binding.instance].append(("XACK", binding.key, self.group, *ids))
        # Delivery counts (for trim accounting) ride along at most once a second.
        delivered = dict(self._delivered) if time.monotonic() >= self._count_due else {}
        for instance, command in self._count_commands(delivered):
            acks[instance].append(command)
        if len(set(outputs) | set(acks)) > 1:
            # Several instances: every output is written before any acknowledgement.
            for instance, commands in outputs.items():
                self._send(instance, commands)
            outputs = defaultdict(list)
        for instance in set(outputs) | set(acks):
            self._send(instance, outputs[instance] + acks[instance])
        self._counted(delivered)
        self.counters.sent += len(writes)
        self._writes = []
        self._pending_acks = defaultdict(list)

    def _count_commands(self, delivered: dict[tuple[str, str], int]) -> list[tuple[str, tuple[Any, ...]]]:
        return [(instance, ("HINCRBY", transport.STATS_PREFIX + key, f"{self.group}:delivered", n))
                for (instance, key), n in delivered.items()]

    def _counted(self, delivered: dict[tuple[str, str], int]) -> None:
        if delivered:
            self._count_due = time.monotonic() + 1.0
            for stream in delivered:
                self._delivered.pop(stream, None)

    def _send(self, instance: str, commands: list[tuple[Any, ...]]) -> None:
        """Commands in order, in one round trip; a lone command skips the pipeline's overhead."""
        client = self._clients[instance]
        if len(commands) == 1:
            client.execute_command(*commands[0])
            return
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()

    # --- health -------------------------------------------------------------------------

    def _notice_restarts(self) -> None:
        """A Redis that restarted may have replayed an older state of its streams (a few
        acknowledgements lost with the last second of its append-only file): our own
        pending entries are handled again, and groups recreated if they are gone."""
        for instance, client in self._clients.items():
            run_id = client.info("server").get("run_id")
            known = self._run_ids.setdefault(instance, run_id)
            if run_id != known:
                self._run_ids[instance] = run_id
                self.counters.redis_restarts += 1
                log.warning("Redis %s restarted; handling this consumer's pending entries again", instance)
                self._ensure_groups()
                self._retry_at[instance] = 0.0

    def _publish_health(self, final: bool = False) -> None:
        if not final:
            self._notice_restarts()
        c = self.counters
        record = {
            "agent": self.node.name, "consumer": self.consumer, "pid": os.getpid(), "time": time.time(),
            "state": "stopped" if final else "running",
            "received": c.received, "handled": c.handled, "sent": c.sent, "failed": c.failed,
            "retried": c.retried, "dead_lettered": c.dead_lettered, "reclaimed": c.reclaimed,
            "redis_errors": c.redis_errors, "redis_restarts": c.redis_restarts, "held": len(self._held),
        }
        # Counts an idle reader has not written with its acknowledgements yet.
        delivered = dict(self._delivered)
        for instance, command in self._count_commands(delivered):
            self._clients[instance].execute_command(*command)
        self._counted(delivered)
        # Counting trims reads the stream's ends; every fifth report is often enough.
        if self._health_count % 5 == 0 or final:
            self._trimmed = {
                b.port: transport.trimmed_before_read(self._clients[b.instance], b.key, self.group) or 0
                for b in self.node.inputs.values()
            }
        self._health_count += 1
        record["trimmed_before_read"] = self._trimmed
        record.update(self.status)
        client = self._clients[self._home()]
        key = f"{HEALTH_PREFIX}{self.graph.name}:{self.node.name}"
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, self.consumer, json.dumps(record, default=str))
        pipe.pexpire(key, int(self.health_interval * 5000))
        pipe.execute()

    def _home(self) -> str:
        return self.graph.home_redis(self.node.name)

    # --- Redis outages ------------------------------------------------------------------

    def _with_redis(self, action: Any, *, give_up_on_stop: bool = False, **kwargs: Any) -> Any:
        """Run ``action``; on a lost connection back off, reconnect and run it again.

        Pending writes and acknowledgements are kept and sent first after a reconnect,
        so nothing produced is dropped; the consumer groups are recreated (a restarted
        Redis may have lost them) and own pending entries drained.
        """
        delay = 0.05
        while True:
            try:
                return action(**kwargs)
            except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                if isinstance(exc, redis.ResponseError) and "NOGROUP" not in str(exc):
                    raise
                # NOGROUP: a Redis that restarted empty; the group is made again below.
                self.counters.redis_errors += 1
                self.status["redis"] = f"unreachable: {exc}"
                unsent = len(self._writes) + sum(len(v) for v in self._pending_acks.values())
                if self.stopping.is_set():
                    # Unwritten outputs get a grace period to reach Redis before the stop.
                    self._stop_seen = self._stop_seen or time.monotonic()
                    if not unsent or give_up_on_stop or time.monotonic() - self._stop_seen > STOP_FLUSH_GRACE:
                        if self._writes:
                            log.error("stopped while Redis is unreachable: %d output(s) not written", len(self._writes))
                        return None
                log.warning("Redis unreachable (%s); retrying in %.2f s", exc, delay)
                if unsent:
                    time.sleep(delay)
                else:
                    self.stopping.wait(delay)
                delay = min(delay * 2, 2.0 if self.stopping.is_set() else 5.0)
                try:
                    self._recover()
                except CONNECTION_ERRORS:
                    continue

    def _recover(self) -> None:
        self._flush()
        self._ensure_groups()
        for instance in self._inputs_by_instance():
            self._retry_at[instance] = 0.0
        self.status.pop("redis", None)
        log.info("Redis reachable again")
