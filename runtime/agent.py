"""The Agent base class: what an agent author writes, and all they write.

An agent declares ports and typed parameters on its class and implements hooks. The
runtime owns the loop, the streams, acknowledgement, retries and dead-lettering.

    class Doubler(Agent):
        numbers = Input(Number)
        doubled = Output(Number)

        class Params(BaseModel):
            factor: int = 2

        def handle(self, msg: Message[Number]) -> None:
            self.doubled.send({"value": msg["value"] * self.params.factor})
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from .access import RedisAccess
from .deployment import Deployment, network_address
from .errors import ParamError
from .message import Message
from .ports import Sender, _Port, declared_ports

if TYPE_CHECKING:
    import redis


class NoParams(BaseModel):
    """The parameters of an agent that takes none."""

    model_config = ConfigDict(extra="forbid")


class Context(Protocol):
    """What an agent needs from whatever runs it: the Redis runner, or the test harness."""

    stopping: threading.Event
    status: dict[str, Any]
    current: Message | None  # the message being handled: sends inherit its trace

    def emit(self, port: str, payload: Mapping[str, Any], parent: Message | None) -> None: ...
    def hold(self, message: Message) -> None: ...
    def release(self, messages: Sequence[Message]) -> None: ...
    def redis(self, instance: str) -> redis.Redis: ...


class Agent:
    """Base class of every agent.

    Override ``handle`` (agents with inputs) or ``produce`` (sources), and optionally
    ``start``, ``stop`` and ``tick``. ``Params`` is a pydantic model validated from the
    graph's ``params``; a bad value is reported with its line in the graph file.
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    #: Seconds between calls of ``tick`` (for timeouts such as a join's); None: never.
    tick_interval: ClassVar[float | None] = None

    def __init__(
        self,
        *,
        name: str,
        params: BaseModel | Mapping[str, Any] | None = None,
        context: Context,
        groups: Mapping[str, Sequence[str]] | None = None,
        connected: Sequence[str] = (),
        graph: str = "",
        home_redis: str = "main",
    ):
        self.name = name
        self.graph = graph
        #: The Redis instance of the agent's node: where agents keep state of their own.
        self.home_redis = home_redis
        self.params = params if isinstance(params, BaseModel) else self.Params.model_validate(params or {})
        self.log = logging.getLogger(f"graphrun.agent.{name}")
        self._context = context
        self._groups: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (groups or {}).items()}
        self._connected = frozenset(connected)
        outputs = [n for n, p in declared_ports(type(self)).items() if p.direction == "output" and not p.dynamic]
        outputs += [n for g, names in self._groups.items() for n in names if self.port(g).direction == "output"]
        self._senders = {n: Sender(self, n, n in self._connected) for n in outputs}

    # --- hooks -----------------------------------------------------------------------

    def start(self) -> None:
        """Open devices, load models. Raising here makes the runner retry with backoff."""

    def handle(self, msg: Message) -> None:
        """Handle one message; ``msg.port`` names the input it came on.

        Return normally and the message is acknowledged once the outputs sent while
        handling it are written. Raise ``Retry`` to try again later, ``DeadLetter``
        to give up on it; any other exception counts as a failed delivery.
        """
        raise NotImplementedError(f"{type(self).__name__} has inputs but does not implement handle()")

    def handle_batch(self, msgs: Sequence[Message]) -> None:
        """Handle the messages one read returned. Override to batch work (inference)."""
        for msg in msgs:
            self._context.current = msg  # type: ignore[attr-defined]
            self.handle(msg)

    def produce(self) -> None:
        """Sources only: make and send the next message(s). Called until the agent stops."""
        raise NotImplementedError(f"{type(self).__name__} has no inputs and does not implement produce()")

    def tick(self) -> None:
        """Called every ``tick_interval`` seconds, between messages."""

    def stop(self) -> None:
        """Release what ``start`` opened. Called once, after the last message."""

    # --- services for agent code ------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once the agent has been asked to stop; long loops in hooks should check it."""
        return self._context.stopping.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True early if the agent is asked to stop."""
        return self._context.stopping.wait(seconds)

    @property
    def status(self) -> dict[str, Any]:
        """Values published in the agent's health record (counters, device state).

        Two keys mean something to the runtime: ``degraded`` (why the agent cannot do its
        job now: its record's state becomes "degraded" with that reason) and ``counts``
        (name -> number: what ``graphrun run``'s closing line counts for the agent).
        """
        return self._context.status

    def hold(self, msg: Message) -> None:
        """Keep ``msg`` unacknowledged after ``handle`` returns, until ``release``.

        For agents that wait for more than one message before acting (a join): a crash
        before the release makes Redis deliver the held messages again.
        """
        self._context.hold(msg)

    def release(self, *msgs: Message) -> None:
        """Acknowledge held messages, after every output sent so far is written."""
        self._context.release(msgs)

    def redis(self, instance: str) -> redis.Redis:
        """A client for one of the graph's Redis instances, for agents that store models or state."""
        return self._context.redis(instance)

    def is_connected(self, port: str) -> bool:
        """Whether the graph connects ``port`` (optional inputs, outputs nobody reads)."""
        return port in self._connected

    @classmethod
    def port(cls, name: str) -> _Port:
        return declared_ports(cls)[name]

    @classmethod
    def ports(cls) -> dict[str, _Port]:
        return declared_ports(cls)

    @classmethod
    def is_source(cls) -> bool:
        return not any(p.direction == "input" for p in declared_ports(cls).values())

    @classmethod
    def deployment(cls, params: Any) -> Deployment:
        """What a container running this agent needs beyond the common settings (host
        network, devices, mounts, GPU, a Redis module), for ``graphrun compose``.

        ``params`` is the agent's validated ``Params``. Override it for hardware the agent
        opens. The default gives an agent whose params have ``host`` and ``port`` the
        network it would have without containers (the host's, for a loopback host; its port
        published, for a server on every address); to keep it and add to it, use
        ``dataclasses.replace(super().deployment(params), ...)``.
        """
        return network_address(params)

    @classmethod
    def check_wiring(cls, params: Any, inputs: frozenset[str], outputs: frozenset[str]) -> list[ParamError]:
        """Mistakes of the params together with the ports the graph wires, for ``graphrun validate``.

        A param that names ports (a topic per input, an output per subscription) can only be
        checked against the graph: override this so the mistake is reported when the graph is
        loaded, with the graph file's line, rather than when the agent starts on its machine.
        ``params`` is the validated ``Params``; ``inputs`` the input ports the graph connects,
        ``outputs`` the agent's output ports (for a set of ports, the names the graph gives).
        Return one ``ParamError`` per mistake, its path the field within ``params`` (the
        nearest line present in the file is shown). The agent may call it again in ``start``
        and raise the first, for runs that load no graph file (``AgentHarness``). Default: none.
        """
        return []

    @classmethod
    def redis_access(cls, params: Any, *, graph: str, agent: str, home: str) -> RedisAccess:
        """What this agent opens in Redis beyond its ports, for its ACL user (``graphrun acl``).

        ``params`` is the agent's validated ``Params``; ``graph`` and ``agent`` the names
        its keys are made of; ``home`` its node's Redis instance. The runtime grants the
        ports, health and dead letters itself; override this for keys an agent keeps
        through ``self.redis(...)`` (see ``graphrun.KeyGrant``). The default: nothing more.
        """
        return RedisAccess()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
