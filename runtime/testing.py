"""Testing agents: alone without Redis (``AgentHarness``), or a graph's agents together
against a real Redis in this process (``running``).

    with AgentHarness(Doubler, params={"factor": 3}) as h:
        h.send("numbers", {"value": 2})
        assert h.take("doubled") == [{"value": 6}]

Every message in and out goes through the real stream encoding, so a payload that
could not travel on a stream fails here too. With ``frame_store`` (the graph key's
settings, e.g. ``{"size": "64mb", "threshold": "64kb"}``) large arrays take the
shared-memory path instead: the agent gets read-only views on slots, as under the runner.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import codec, frame_store
from .agent import Agent
from .errors import AgentStartError, ConfigError, PortError
from .message import Message
from .ports import declared_ports

log = logging.getLogger("graphrun.testing")

if TYPE_CHECKING:
    from .graph import Graph
    from .runner import AgentRunner


class AgentHarness:
    """Runs one agent in-process and records what it sends, holds and releases."""

    def __init__(
        self,
        agent_class: type[Agent],
        *,
        params: Mapping[str, Any] | None = None,
        name: str = "agent",
        groups: Mapping[str, Sequence[str]] | None = None,
        redis: Mapping[str, Any] | None = None,
        frame_store: Mapping[str, Any] | None = None,
    ):
        self.stopping = threading.Event()
        self.frames = None if frame_store is None else _HarnessFrames(frame_store)
        self.status: dict[str, Any] = {}
        self.current: Message | None = None
        self.outputs: dict[str, list[Message]] = defaultdict(list)
        self.held: list[Message] = []
        self.released: list[Message] = []
        self._redis = dict(redis or {})
        ports = declared_ports(agent_class)
        connected = [n for n, p in ports.items() if not p.dynamic]
        for names in (groups or {}).values():
            connected += list(names)
        self.agent = agent_class(
            name=name, params=dict(params or {}), context=self, groups=groups, connected=connected
        )
        self._inputs = {n for n, p in ports.items() if p.direction == "input" and not p.dynamic}
        for group, names in (groups or {}).items():
            if ports[group].direction == "input":
                self._inputs.update(names)

    # --- Context --------------------------------------------------------------------

    def emit(self, port: str, payload: Mapping[str, Any], parent: Message | None) -> None:
        parent = parent or self.current
        if parent is None:
            message = Message(payload, producer=self.agent.name)
        else:
            message = parent.derive(payload, producer=self.agent.name)
        self.outputs[port].append(_round_trip(message, self.frames))

    def hold(self, message: Message) -> None:
        self.held.append(message)

    def release(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.held.remove(message)
            self.released.append(message)

    def redis(self, instance: str) -> Any:
        try:
            return self._redis[instance]
        except KeyError:
            raise ConfigError(f"the harness was given no Redis client for instance {instance!r}") from None

    # --- driving the agent ------------------------------------------------------------

    def __enter__(self) -> AgentHarness:
        self.agent.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        try:
            self.agent.stop()
        finally:
            if self.frames is not None:
                self.frames.close()

    def message(self, port: str, payload: Mapping[str, Any], **envelope: Any) -> Message:
        """A message as the agent would receive it on ``port``."""
        if port not in self._inputs:
            raise PortError(f"{type(self.agent).__name__} has no input {port!r} (inputs: {sorted(self._inputs)})")
        message = _round_trip(Message(payload, **envelope), self.frames)
        message.port = port
        message.received = message.created if "received" not in envelope else envelope["received"]
        return message

    def send(self, port: str, payload: Mapping[str, Any], **envelope: Any) -> Message:
        """Deliver one message to ``port``; exceptions from ``handle`` propagate."""
        message = self.message(port, payload, **envelope)
        self.deliver([message])
        return message

    def deliver(self, messages: Sequence[Message]) -> None:
        """Hand ``messages`` to ``handle_batch``. As under the runner, a call that raises
        leaves no trace: its outputs, holds and releases are undone before the exception
        propagates."""
        self._attempt(lambda: self.agent.handle_batch(messages))

    def _attempt(self, call: Callable[[], None]) -> None:
        outputs = {port: len(sent) for port, sent in self.outputs.items()}
        held, released = list(self.held), list(self.released)
        try:
            call()
        except Exception:
            for port in list(self.outputs):
                del self.outputs[port][outputs.get(port, 0):]
            self.held, self.released = held, released
            raise
        finally:
            self.current = None

    def produce(self, times: int = 1) -> None:
        for _ in range(times):
            self._attempt(self.agent.produce)

    def tick(self) -> None:
        self._attempt(self.agent.tick)

    def take(self, port: str) -> list[Mapping[str, Any]]:
        """The payloads sent on ``port`` since the last take, oldest first."""
        messages = self.outputs.pop(port, [])
        return [m.payload for m in messages]


def _round_trip(message: Message, frames: codec.FrameSink | None = None) -> Message:
    fields = codec.encode(message, frames)
    return codec.decode({k: bytes(v) for k, v in fields.items()})


class _HarnessFrames:
    """A frame store of the harness's own, never reused (no Redis says when a reader is
    done): when it is full, arrays go inline, as the runner's do. ``shared`` and ``inline``
    count which path each array took."""

    _numbers = itertools.count()

    def __init__(self, settings: Mapping[str, Any]):
        from .graph import FrameStoreSpec  # the graph key's own validation

        spec = FrameStoreSpec.model_validate(dict(settings))
        self.threshold = spec.threshold
        name = f"graphrun-harness-{os.getpid()}-{next(self._numbers)}"
        self.store = frame_store.FrameStore.create(name, size=spec.size, slot_size=spec.slot_size)
        self.shared = self.inline = 0

    def put(self, data: memoryview) -> frame_store.Ref | None:
        ref = self.store.put(data)
        if ref is None:
            self.inline += 1
        else:
            self.shared += 1
        return ref

    def close(self) -> None:
        """Remove the store's files; arrays still viewed keep their pages until dropped."""
        frame_store.remove(self.store.path)


@contextmanager
def running(graph: Graph, agents: Sequence[str] | None = None, *, redis_urls: Mapping[str, str],
            start_timeout: float = 60.0) -> Iterator[dict[str, AgentRunner]]:
    """Run agents of ``graph`` (all by default) in threads of this process, each as the
    launcher would run it; on exit each finishes the message in hand and stops.

    The ``with`` block is entered once every agent's ``start()`` returned. An agent that
    fails to start fails the ``with`` statement at once with its exception; one that dies
    later is logged at once and raised when the block ends.
    """
    from .runner import AgentRunner

    runners = {name: AgentRunner(graph, name, replica=0, redis_urls=redis_urls) for name in (agents or graph.agents)}
    # Each thread writes its own key once, before it ends; the caller reads after
    # seeing the thread end (is_alive/join), so no lock is needed.
    failures: dict[str, BaseException] = {}

    def run(name: str, runner: AgentRunner) -> None:
        try:
            runner.run()
        except BaseException as exc:
            log.exception("agent %s died", name)
            failures[name] = exc

    threads = {name: threading.Thread(target=run, args=(name, r), name=name, daemon=True) for name, r in runners.items()}
    for thread in threads.values():
        thread.start()
    try:
        end = time.monotonic() + start_timeout
        while not all(r.started.is_set() for r in runners.values()):
            dead = [n for n, t in threads.items() if not t.is_alive() and not runners[n].started.is_set()]
            if dead:
                raise failures.get(dead[0]) or AgentStartError(f"agent {dead[0]!r} ended before it started")
            if time.monotonic() > end:
                late = [n for n, r in runners.items() if not r.started.is_set()]
                raise AgentStartError(f"agents {late} did not start within {start_timeout:.0f} s")
            time.sleep(0.01)
        yield runners
    finally:
        for runner in runners.values():
            runner.request_stop()
        for thread in threads.values():
            thread.join(30)
    if failures:
        raise next(iter(failures.values()))
