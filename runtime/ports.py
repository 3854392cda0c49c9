"""Port declarations: the typed inputs and outputs an agent class names.

Attribute names are the port names used in graph files, so ``frames = Output(Frame)``
is wired in YAML as ``outputs: {frames: ...}``. A port's type is a ``TypedDict``
describing the payload (or ``None`` for any mapping). Two ports may be connected
when the output's payload has every key the input requires.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .errors import PortError
from .index import DEFAULT_FIELD as DEFAULT_INDEX_FIELD

if TYPE_CHECKING:
    from .agent import Agent
    from .message import Message

T = TypeVar("T")


def type_name(payload_type: type | None) -> str:
    return "any" if payload_type is None else payload_type.__name__


def _keys(payload_type: type) -> tuple[frozenset[str], frozenset[str]]:
    """(all keys, required keys) of a TypedDict; a plain class counts as having no keys."""
    hints = typing.get_type_hints(payload_type) if hasattr(payload_type, "__annotations__") else {}
    required = getattr(payload_type, "__required_keys__", frozenset(hints))
    return frozenset(hints), frozenset(required)


def incompatibility(output_type: type | None, input_type: type | None) -> str | None:
    """Why a payload of ``output_type`` can't feed an input of ``input_type``, or None if it can."""
    if input_type is None or output_type is input_type:
        return None
    if output_type is None:
        return f"the output sends any payload, but the input needs {type_name(input_type)}"
    out_keys, _ = _keys(output_type)
    _, needed = _keys(input_type)
    missing = sorted(needed - out_keys)
    if missing:
        return (
            f"{type_name(output_type)} does not carry {', '.join(missing)} "
            f"that {type_name(input_type)} requires"
        )
    return None


class _Port(Generic[T]):
    direction = ""
    dynamic = False

    def __init__(self, payload_type: type[T] | None = None, *, doc: str = ""):
        self.type = payload_type
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type_name(self.type)}, name={self.name!r})"


class Input(_Port[T]):
    """One input port. ``required=False`` lets a graph leave it unconnected."""

    direction = "input"

    def __init__(self, payload_type: type[T] | None = None, *, required: bool = True, doc: str = ""):
        super().__init__(payload_type, doc=doc)
        self.required = required


class Inputs(_Port[T]):
    """A set of input ports whose names the graph chooses (one per camera, say).

    In the graph, give them flat (``inputs: {front: a.verdicts}``) or grouped under
    the attribute name (``inputs: {verdicts: {front: a.verdicts}}``). On the agent the
    attribute is the tuple of names the graph connected.
    """

    direction = "input"
    dynamic = True
    required = False

    def __get__(self, agent: Agent | None, owner: type) -> Any:
        if agent is None:
            return self
        return agent._groups.get(self.name, ())


class Output(_Port[T]):
    """One output port; on an agent instance it is a sender with ``send(payload)``.

    ``maxlen`` is the default bound of its stream (a graph may set another): choose it
    by payload size, since a bounded stream is what keeps a slow reader from filling
    Redis's memory. Frames of megabytes want a few hundred at most.

    ``index`` names the payload field by whose value ``graphrun trace`` finds a message
    (every message carrying it is entered in the graph's index); None indexes nothing.
    """

    direction = "output"

    def __init__(self, payload_type: type[T] | None = None, *, maxlen: int | None = None,
                 index: str | None = DEFAULT_INDEX_FIELD, doc: str = ""):
        super().__init__(payload_type, doc=doc)
        self.maxlen = maxlen
        self.index = index

    @overload
    def __get__(self, agent: None, owner: type) -> Output[T]: ...
    @overload
    def __get__(self, agent: Agent, owner: type) -> Sender[T]: ...

    def __get__(self, agent: Agent | None, owner: type) -> Any:
        if agent is None:
            return self
        return agent._senders[self.name]


class Outputs(_Port[T]):
    """A set of output ports whose names the graph chooses; on an instance, a mapping of senders."""

    direction = "output"
    dynamic = True

    def __init__(self, payload_type: type[T] | None = None, *, maxlen: int | None = None,
                 index: str | None = DEFAULT_INDEX_FIELD, doc: str = ""):
        super().__init__(payload_type, doc=doc)
        self.maxlen = maxlen
        self.index = index

    def __get__(self, agent: Agent | None, owner: type) -> Any:
        if agent is None:
            return self
        names = agent._groups.get(self.name, ())
        return {name: agent._senders[name] for name in names}


class Sender(Generic[T]):
    """Sends payloads on one output port of one running agent.

    Sends made while a message is handled carry that message's trace and are written
    before it is acknowledged; ``parent`` names another message to trace from (a join).
    """

    __slots__ = ("port", "_agent", "connected")

    def __init__(self, agent: Agent, port: str, connected: bool):
        self._agent = agent
        self.port = port
        self.connected = connected

    def send(self, payload: T, *, parent: Message | None = None) -> None:
        if not isinstance(payload, Mapping):
            raise PortError(f"port {self.port!r} sends mappings, not {type(payload).__name__}")
        self._agent._context.emit(self.port, payload, parent)

    def __repr__(self) -> str:
        return f"Sender({self.port!r})"


def declared_ports(agent_class: type) -> dict[str, _Port]:
    """Every port an agent class declares, inherited ones included, by name."""
    ports: dict[str, _Port] = {}
    for klass in reversed(agent_class.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, _Port):
                ports[name] = value
    return ports
