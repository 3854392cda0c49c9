"""The producer's side of frames in shared memory: which outputs use a frame store, and
when a slot may be reused.

An output uses a store when the graph gives one (``frame_store`` of the agent's node, or
else of the output's Redis instance) and every agent of the graph that reads its stream
runs on the producer's node: a reader elsewhere could not map the slot, so for such a
stream frames stay inline. The store is per graph and Redis instance (its file name
carries a hash of the instance's URL, so two graphs of one name never share slots).

A slot is reused only when its entry is done with in Redis: every consumer group of its
stream has read it and none has it pending (``transport.consumed_before``), or it was
trimmed. That is asked when fewer than a quarter of the slots are free, right after an
entry was written (off the path of the frame, which is already on its way), and when the
store runs out of free slots; at most once per ``RECLAIM_INTERVAL``, not once per frame:
one look frees every slot done with. A slot
whose producer died before its entry was written (or whose attempt was discarded) is
freed after ``stale_after`` seconds, the readers' claim timeout.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from . import transport
from .frame_store import FrameStore, Ref
from .graph import AgentNode, FrameStoreSpec, Graph, OutputBinding
from .health import Counters

log = logging.getLogger("graphrun.frames")

RECLAIM_INTERVAL = 0.005  # seconds between looks at Redis while the store is full
DEFAULT_STALE_AFTER = 30.0


def store_name(graph: str, instance: str, url: str) -> str:
    """The store file of a graph's Redis instance: one per host, graph and server."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:12]
    return f"graphrun-{graph}-{instance}-{digest}"


def spec_for(graph: Graph, agent: AgentNode, binding: OutputBinding) -> FrameStoreSpec | None:
    """The frame store settings for one output, or None when it sends frames inline."""
    node = graph.nodes.get(agent.node)
    redis_spec = graph.redis.get(binding.instance)
    spec = (node.frame_store if node is not None else None) or (redis_spec.frame_store if redis_spec else None)
    if spec is None:
        return None
    readers = [a for a in graph.agents.values()
               if any(b.instance == binding.instance and b.key == binding.key for b in a.inputs.values())]
    if any(a.node != agent.node for a in readers):
        return None  # a reader on another host: it could not map the slot
    return spec


def uses_frame_store(graph: Graph, agent: AgentNode) -> bool:
    """Whether ``agent`` may write or read frames in a store: its containers then share the
    host's /dev/shm (``graphrun compose``)."""
    node = graph.nodes.get(agent.node)
    if node is not None and node.frame_store is not None:
        return True
    return any(graph.redis[i].frame_store is not None for i in agent.instances if i in graph.redis)


def stale_after(graph: Graph, binding: OutputBinding) -> float:
    """How long the readers of ``binding``'s stream wait before taking over a dead consumer's
    entries: also how long a slot of a dead producer is kept."""
    idle = [b.spec.claim_idle_ms for a in graph.agents.values() for b in a.inputs.values()
            if b.instance == binding.instance and b.key == binding.key]
    return max(idle) / 1000 if idle else DEFAULT_STALE_AFTER


@dataclass
class Recycler:
    """Frees the slots of one store whose entries every reader is done with."""

    store: FrameStore
    client: redis.Redis
    stale_after: float
    idle: Callable[[], bool]  # True when no write of this process waits to be sent
    own: dict[int, tuple[Ref, float]] = field(default_factory=dict)  # slot -> (ref, taken at), entry id unknown
    _next: float = 0.0

    def reclaim(self) -> int:
        """Free what can be freed now; the number of slots freed (0 if asked too soon)."""
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + RECLAIM_INTERVAL
        freed = 0
        for key in self.store.written():
            boundary = self._boundary(key)
            if boundary is not None:
                freed += self.store.free_before(key, boundary)
        freed += self.store.free_abandoned(self.stale_after)
        if self.idle():  # this process's own slots whose write never came (attempt discarded)
            wall = time.time()
            for slot, (ref, taken) in list(self.own.items()):
                if wall - taken >= self.stale_after:
                    del self.own[slot]
                    freed += self.store.release(ref)
        return freed

    def _boundary(self, key: str) -> tuple[int, int] | None:
        """Entries of ``key`` before this id are done with: read and acknowledged by every
        group, or trimmed away (before the stream's first entry)."""
        first = self.client.xrange(key, count=1)
        if not first:
            return (2**64 - 1, 0)  # empty or deleted: no entry refers to a slot any more
        oldest = transport.id_tuple(first[0][0])
        consumed = transport.consumed_before(self.client, key)
        return oldest if consumed is None else max(oldest, consumed)


class FrameOutput:
    """The frame sink of one output (``codec.FrameSink``): arrays into the store, and
    the refs of the message being encoded kept for ``written``."""

    def __init__(self, binding: OutputBinding, spec: FrameStoreSpec, recycler: Recycler, counters: Counters):
        self.threshold = spec.threshold
        self.key = binding.key
        self._recycler = recycler
        self._counters = counters
        self._refs: list[Ref] = []

    def put(self, data: memoryview) -> Ref | None:
        store = self._recycler.store
        ref = store.put(data)
        if ref is None and len(data) <= store.slot_size and self._reclaim():
            ref = store.put(data)
        if ref is None:
            self._counters.frames_inline += 1
            return None
        self._counters.frames_shared += 1
        self._refs.append(ref)
        self._recycler.own[ref.slot] = (ref, time.time())
        return ref

    def _reclaim(self) -> int:
        """Free slots; a Redis that does not answer frees none (the frame goes inline, and
        the outbox rides the outage out as for any output)."""
        try:
            return self._recycler.reclaim()
        except (*transport.CONNECTION_ERRORS, redis.ResponseError) as exc:
            log.debug("no slot freed: Redis did not answer: %s", exc)
            return 0

    def taken(self) -> Callable[[str], None] | None:
        """What to call with the entry id once the message just encoded is written (None if
        none of its arrays went to the store)."""
        refs, self._refs = self._refs, []
        if not refs:
            return None
        store, own, key = self._recycler.store, self._recycler.own, self.key

        def written(entry_id: str) -> None:
            for ref in refs:
                store.record(ref, key, entry_id)
                if own.get(ref.slot, (None,))[0] == ref:
                    del own[ref.slot]
            if store.free() < store.slots // 4:
                self._reclaim()  # now, rather than when the next frame finds the store full
        return written


def outputs_for(graph: Graph, agent: AgentNode, urls: Mapping[str, str], clients: Mapping[str, redis.Redis],
                counters: Counters, idle: Callable[[], bool]) -> dict[str, FrameOutput]:
    """Port -> frame sink, for the outputs of ``agent`` that use a frame store."""
    out: dict[str, FrameOutput] = {}
    recyclers: dict[str, Recycler] = {}
    for port, binding in agent.outputs.items():
        spec = spec_for(graph, agent, binding)
        if spec is None:
            continue
        recycler = recyclers.get(binding.instance)
        if recycler is None:
            name = store_name(graph.name, binding.instance, urls[binding.instance])
            store = FrameStore.create(name, size=spec.size, slot_size=spec.slot_size)
            recycler = recyclers[binding.instance] = Recycler(store, clients[binding.instance], 0.0, idle)
            log.info("frames of %s's outputs to %s of at least %d bytes go through %s (%d slots of %d bytes)",
                     agent.name, binding.instance, spec.threshold, store.path, store.slots, store.slot_size)
        recycler.stale_after = max(recycler.stale_after, stale_after(graph, binding))
        out[port] = FrameOutput(binding, spec, recycler, counters)
    return out
