"""Runs one agent of a graph against Redis: the loop an agent author never writes.

Delivery is at-least-once (the rule itself is in ``delivery``): a message is
acknowledged only after the outputs made from it are written (``outbox``); a consumer
that died leaves its entries pending, and they are reclaimed after the input's
``claim_idle_ms``; on start a consumer first handles its own pending entries; a
failed message is retried with its own backoff and dead-lettered after
``max_deliveries``. This module is the loop that ties reading (``reading``), delivery,
writing and health (``health``) together; ``outages`` rides out Redis outages.

Threads: everything here runs on the handling thread (the one that calls ``run``),
except reader threads, which exist only when inputs live on several Redis instances
and talk to this thread through a queue (``reading.ReaderThread``). ``request_stop``
may be called from any thread or a signal handler: it only sets an Event.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from . import codec, frame_path, index, replies, transport
from .agent import Agent
from .delivery import Delivery
from .errors import AgentStartError, ConfigError, ParamError
from .graph import AgentNode, Graph, InputBinding, OutputBinding, redis_url
from .health import HEALTH_PREFIX, Counters, Health
from .message import Message
from .metrics import AgentMetrics
from .outages import Outages
from .outbox import Outbox, Write
from .reading import Read, ReaderThread, StreamReader, own_pending
from .transport import Entry

__all__ = ["HEALTH_PREFIX", "AgentRunner"]

log = logging.getLogger("graphrun.runner")

BLOCK_MS = 500  # how long an idle read waits; bounds how fast a stop request is seen
HEALTH_INTERVAL = 2.0



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
        # Context for the agent.
        self.stopping = threading.Event()
        self.started = threading.Event()  # set once the agent's start() returned
        self.status: dict[str, Any] = {}
        self.counters = Counters()
        self._overrides = dict(redis_urls or {})  # every URL given, also of instances named only in params
        home = graph.home_redis(agent_name)
        self._urls = {i: redis_url(graph, i, self._overrides) for i in sorted(self.node.instances | {home})}
        self._clients = {i: transport.connect(u, name=consumer.replace(" ", "_")) for i, u in self._urls.items()}
        self._outbox = Outbox(self._clients, self.group, self.counters,
                              wait={i: graph.redis[i].wait_replicas for i in self._clients})
        # Outputs whose large arrays go through shared memory (graph key frame_store).
        self._frames = frame_path.outputs_for(graph, self.node, self._urls, self._clients, self.counters,
                                              idle=lambda: self._outbox.unsent == 0)
        self._health = Health(graph=graph.name, agent=agent_name, consumer=consumer, clients=self._clients,
                              home=home, inputs=self.node.inputs, interval=health_interval)
        self.metrics = AgentMetrics(graph=graph.name, agent=agent_name, consumer=consumer, counters=self.counters,
                                    inputs=self.node.inputs)
        self._by_instance: dict[str, list[InputBinding]] = {}
        for binding in self.node.inputs.values():
            self._by_instance.setdefault(binding.instance, []).append(binding)
        self._reader_threads: list[ReaderThread] = []
        self._inbox: queue.Queue[Read] | None = None  # from reader threads, when there are any
        self._ahead: list[Entry] = []  # new entries read in the round trip of the last flush
        self._outages = Outages(stopping=self.stopping, counters=self.counters, status=self.status,
                                outbox=self._outbox, recover=self._recover, relieve=self._trim_consumed,
                                report=self._publish_record, report_every=health_interval)
        self._with_redis = self._outages.run
        try:
            self.agent: Agent = self.node.agent_class(
                name=agent_name,
                params=self.node.settings,
                context=self,
                groups=self.node.groups,
                connected=list(self.node.inputs) + list(self.node.outputs),
                graph=graph.name,
                home_redis=home,
            )
        except Exception as exc:
            raise AgentStartError(f"agent {agent_name!r} ({self.node.type}) could not be created: {exc}") from exc
        overridden = type(self.agent).handle_batch is not Agent.handle_batch
        # Made once the agent is known: whether it batches decides how frames are read.
        self._readers = {i: StreamReader(self._clients[i], self.group, consumer, b, batches=overridden)
                         for i, b in self._by_instance.items()}
        self._delivery = Delivery(agent_name=agent_name, consumer=consumer, inputs=self.node.inputs,
                                  outbox=self._outbox, counters=self.counters, handle=self.agent.handle,
                                  handle_batch=self.agent.handle_batch if overridden else None,
                                  payload_types=self._input_types(), on_batch=self.metrics.batch,
                                  index_key=self._dead_letter_index)

    def _dead_letter_index(self, binding: InputBinding, payload: Mapping[str, Any]) -> str | None:
        """A dead letter's index list: by the field its stream's writer indexes (part_id when
        the writer is outside the graph)."""
        field: str | None = index.DEFAULT_FIELD
        if binding.source is not None:
            writer = self.graph.agents[binding.source[0]].outputs.get(binding.source[1])
            field = writer.index if writer is not None else field
        return index.key_of(self.graph.name, field, payload)

    def _input_types(self) -> dict[str, type | None]:
        """Each input's declared payload type: its port's, or its port set's."""
        ports = self.node.agent_class.ports()
        set_of = {port: group for group, names in self.node.groups.items() for port in names}
        return {port: getattr(ports.get(set_of.get(port, port)), "type", None) for port in self.node.inputs}

    # --- Context (called by agent code, on the handling thread) ----------------------------

    @property
    def current(self) -> Message | None:
        return self._delivery.current

    @current.setter
    def current(self, message: Message | None) -> None:
        self._delivery.current = message

    def emit(self, port: str, payload: Mapping[str, Any], parent: Message | None) -> None:
        binding: OutputBinding | None = self.node.outputs.get(port)
        parent = parent or self._delivery.current
        request = parent.request if parent is not None else None
        answers = request is not None and request.answer == f"{self.node.name}.{port}"
        if binding is None and not answers:
            return  # a dynamic output the graph does not connect
        message = Message(payload, producer=self.node.name) if parent is None else parent.derive(payload, producer=self.node.name)
        # An answer to a request also goes to its caller, who may be on another host: inline.
        frames = self._frames.get(port) if binding is not None and not answers else None
        fields = codec.encode(message, frames)
        if binding is not None:
            self._delivery.emit(Write(binding.instance, binding.key, binding.maxlen, fields, binding.max_bytes,
                                      index.key_of(self.graph.name, binding.index, payload), binding.index_ttl,
                                      written=frames.taken() if frames is not None else None))
        if answers:  # the answer to a request from outside also goes to its caller's reply stream
            self.redis(request.reply[0])  # a client for the reply's instance, for the outbox
            self._delivery.emit(replies.answer(request, fields))

    def hold(self, message: Message) -> None:
        self._delivery.hold(message)

    def release(self, messages: Sequence[Message]) -> None:
        self._delivery.release(messages)

    def redis(self, instance: str) -> redis.Redis:
        client = self._clients.get(instance)
        if client is None:
            if instance not in self.graph.redis:
                raise ConfigError(f"graph {self.graph.name!r} has no Redis instance {instance!r}")
            client = self._clients[instance] = transport.connect(redis_url(self.graph, instance, self._overrides))
        return client

    # --- control ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, duration: float | None = None) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        self._with_redis(self._ensure_groups)
        if self.stopping.is_set():
            return
        self._say_starting()
        self._agent_code(self.agent.start)
        self.started.set()
        log.info("agent %s started as consumer %s (%s)", self.node.name, self.consumer,
                 ", ".join(f"{i}={transport.describe(u)}" for i, u in self._urls.items()))
        try:
            if self.node.inputs:
                self._with_redis(self._drain_own_pending)
                self._start_readers()
            self._loop(deadline)
        finally:
            self._shutdown()

    def _loop(self, deadline: float | None) -> None:
        tick = self.agent.tick_interval
        next_tick = time.monotonic() + (tick or 0)
        next_claim = time.monotonic() + self._claim_interval()
        next_health = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if now >= next_health:
                self._with_redis(self._publish_health)
                next_health = now + self._health.interval
            if tick is not None and now >= next_tick:
                self._agent_code(self.agent.tick)
                self._with_redis(self._outbox.flush)
                next_tick = now + tick
            if self.stopping.is_set():
                return
            if not self.node.inputs:
                self._agent_code(self.agent.produce)
                self._with_redis(self._outbox.flush)
                continue
            if now >= next_claim:
                self._with_redis(self._reclaim)
                next_claim = now + self._claim_interval()
            retry = self._delivery.retries.next_due()
            if retry is not None and retry <= now:
                self._with_redis(self._retry_due)
                retry = self._delivery.retries.next_due()
            wake = [now + BLOCK_MS / 1000, retry, deadline, next_tick if tick is not None else None]
            block_ms = max(1, int((min(w for w in wake if w is not None) - now) * 1000))
            self._with_redis(lambda: self._read_and_handle(block_ms))

    def _param_problem(self, exc: ParamError) -> str:
        """``FILE:LINE:COL: message (field)`` of a parameter the agent found wrong."""
        path = ("agents", self.node.name, "params", *exc.path)
        source = self.graph.source
        if source is None:
            return f"{self.graph.file}: {exc} (agents.{self.node.name}.params)"
        return str(source.problem(path, f"agent {self.node.name!r}: {exc}"))

    def _agent_code(self, call: Callable[[], None]) -> None:
        """Run a hook outside message handling (start, tick, produce, stop) as an attempt:
        what it sent is written only if it returns; its exception ends the run. A wrong
        parameter (``ParamError``: learnt at start, or later when the far side first
        answers) ends it as a failed start, naming the graph file's line."""
        exc = self._delivery.attempt_call(call)
        if isinstance(exc, ParamError):
            raise AgentStartError(self._param_problem(exc)) from exc
        if exc is not None:
            raise exc

    def _shutdown(self) -> None:
        self.stopping.set()
        self._with_redis(self._publish_health, give_up_on_stop=True)  # "stopping"
        try:
            if self._ahead:  # read with the last flush: handled, not left pending
                [instance] = self._readers
                entries, self._ahead = self._ahead, []
                self._with_redis(lambda: self._handle_new(instance, entries))
            self._with_redis(self._outbox.flush)
        finally:
            for thread in self._reader_threads:
                thread.join(BLOCK_MS / 1000 + 1)
            try:
                self._agent_code(self.agent.stop)
                self._with_redis(self._outbox.flush, give_up_on_stop=True)
            finally:
                self._with_redis(lambda: self._publish_health(final=True), give_up_on_stop=True)
                for client in self._clients.values():
                    client.connection_pool.disconnect()
                c = self.counters
                log.info("agent %s stopped: %d received, %d handled, %d sent, %d failed, %d dead-lettered, "
                         "%d reclaimed", self.node.name, c.received, c.handled, c.sent, c.failed,
                         c.dead_lettered, c.reclaimed)

    def _claim_interval(self) -> float:
        idle = min((b.spec.claim_idle_ms for b in self.node.inputs.values()), default=30_000)
        return max(0.05, idle / 2000)

    # --- reading ------------------------------------------------------------------------------

    def _ensure_groups(self) -> None:
        for binding in self.node.inputs.values():
            created = transport.ensure_group(self._clients[binding.instance], binding.key, self.group,
                                             start=binding.spec.start)
            if created:
                log.info("created consumer group %s on %s", self.group, binding.stream)

    def _start_readers(self) -> None:
        """With inputs on several instances, one thread per instance blocks on its reads."""
        if len(self._readers) < 2:
            return
        self._inbox = queue.Queue(maxsize=len(self._readers))
        for instance, reader in self._readers.items():
            thread = ReaderThread(reader, self._inbox, self.stopping, BLOCK_MS, name=f"{self.consumer}-read-{instance}")
            thread.start()
            self._reader_threads.append(thread)

    def _read_and_handle(self, block_ms: int) -> None:
        if self._inbox is None:  # all inputs on one instance: read it here
            [reader] = self._readers.values()
            entries, self._ahead = self._ahead or reader.read(block_ms), []
            self._handle_new(reader.instance, entries)
            return
        try:
            read = self._inbox.get(timeout=block_ms / 1000)
        except queue.Empty:
            return
        if read.error is not None:
            raise read.error  # a connection error is recovered from below; anything else ends the run
        self._handle_new(read.instance, read.entries)

    def _handle_new(self, instance: str, entries: list[Entry]) -> None:
        if not entries:
            return
        self._delivery.process(instance, entries, counts=None)
        # A full batch shows a backlog: with one reader and no reader threads, the next read
        # then rides on the flush's round trip. (Not otherwise: read at once, it would take
        # what little came during the handling, and smaller batches cost more per message.)
        reader = self._readers[instance] if self._inbox is None and not self.stopping.is_set() else None
        command = reader.ahead_command() if reader is not None and len(entries) >= reader.batch else None
        ahead = self._outbox.flush(then=(instance, command) if command is not None else None)
        if reader is not None and ahead is not None:
            self._ahead = reader.take_ahead(ahead)

    def _drain_own_pending(self) -> None:
        """Handle again what this consumer received but never acknowledged: after a crash,
        a lost connection (a read may have been delivered but not received) or a Redis
        restart. Held entries wait for their release; entries waiting for a retry, or
        already read ahead into the inbox, are left to those paths."""
        skip = set(self._delivery.held) | {(s, i) for (_, s), ids in self._delivery.retries.scheduled().items() for i in ids}
        if self._inbox is not None:
            with self._inbox.mutex:  # the queue's own lock guards its deque
                skip |= {(e.stream, e.id) for read in self._inbox.queue for e in read.entries}
        for instance, bindings in self._by_instance.items():
            client = self._clients[instance]
            for binding in bindings:
                for entries in own_pending(client, self.group, self.consumer, binding):
                    if self.stopping.is_set():
                        return
                    entries = [e for e in entries if (binding.key, e.id) not in skip]
                    if entries:
                        counts = transport.delivery_counts(client, binding.key, self.group, [e.id for e in entries])
                        self._delivery.process(instance, entries, counts)
                        self._outbox.flush()

    def _retry_due(self) -> None:
        """Deliver again the failed messages whose backoff has passed (XCLAIM counts the delivery)."""
        for (instance, stream), ids in self._delivery.retries.due(time.monotonic()).items():
            binding = next(b for b in self._by_instance[instance] if b.key == stream)
            client = self._clients[instance]
            claimed = transport.claim_own(client, stream, self.group, self.consumer, ids)
            gone = set(ids) - {e.id for e in claimed}
            if gone:  # acknowledged or deleted meanwhile: nothing to retry
                self._delivery.retries.forget(instance, stream, gone)
            if claimed:
                counts = transport.delivery_counts(client, stream, self.group, [e.id for e in claimed])
                self._delivery.process(binding.instance, claimed, counts)
                self._outbox.flush()

    def _reclaim(self) -> None:
        """Keep held and retrying entries ours, then take over entries dead consumers left."""
        mine: dict[tuple[str, str], list[str]] = self._delivery.retries.scheduled()
        for (stream, entry_id), binding in self._delivery.held.items():
            mine.setdefault((binding.instance, stream), []).append(entry_id)
        for (instance, stream), ids in mine.items():
            transport.touch(self._clients[instance], stream, self.group, self.consumer, ids)
        for binding in self.node.inputs.values():
            client = self._clients[binding.instance]
            claimed = transport.claim_abandoned(client, binding.key, self.group, self.consumer,
                                                min_idle_ms=binding.spec.claim_idle_ms, count=binding.spec.batch)
            if claimed:
                self.counters.reclaimed += len(claimed)
                log.warning("reclaimed %d entries of %s left pending by another consumer", len(claimed), binding.stream)
                counts = transport.delivery_counts(client, binding.key, self.group, [e.id for e in claimed])
                self._delivery.process(binding.instance, claimed, counts)
                self._outbox.flush()

    # --- health --------------------------------------------------------------------------------

    def _say_starting(self) -> None:
        """The "starting" record and the start count, when Redis answers: a start is not
        held up by a Redis that just went away (the loop rides that out)."""
        try:
            self._health.starting()
        except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
            log.debug("no starting record: %s", exc)

    def _publish_health(self, final: bool = False) -> None:
        if not final and not self.stopping.is_set() and self._health.restarted():
            # A restarted Redis may have replayed an older state (the last second of its
            # append-only file lost): groups are made again and own pending handled again.
            self.counters.redis_restarts += 1
            log.warning("Redis restarted; handling this consumer's pending entries again")
            self._ensure_groups()
            self._drain_own_pending()
        self._outbox.flush()
        self.metrics.read_backlog(self._clients, self.group)  # lag and pending, while metrics are served
        self._publish_record(final)

    def _publish_record(self, final: bool = False) -> None:
        """The health record alone, nothing flushed: also what an outage publishes (``Outages``)."""
        self._health.publish(self.counters, self.status, held=len(self._delivery.held),
                             retrying=len(self._delivery.retries), final=final,
                             stopping=self.stopping.is_set(), last_error=self._delivery.last_error)

    # --- Redis outages -------------------------------------------------------------------------

    def _trim_consumed(self) -> int:
        """Trim this agent's streams, outputs and inputs, to what every consumer group has
        read and acknowledged: what a full Redis can give back without losing a message.
        (Readers trim too, so that a reader that cannot write is not waiting for a writer
        that has finished.)"""
        freed = 0
        for binding in [*self.node.outputs.values(), *self.node.inputs.values()]:
            freed += transport.trim_consumed(self._clients[binding.instance], binding.key)
        return freed

    def _recover(self) -> None:
        """After an outage: a PING proves Redis answers, then the outbox goes first."""
        for client in self._clients.values():
            client.ping()
        self._ensure_groups()
        self._outbox.flush()
        self._ahead = []  # pending to this consumer: handled by the drain below, or at the next start
        if self.node.inputs and not self.stopping.is_set():
            self._drain_own_pending()  # a read may have been delivered but never received
