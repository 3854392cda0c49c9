"""Every exception graphrun raises, in one place.

Two families: errors that describe a problem (bad graph, bad message, unreachable
service), and control-flow exceptions an agent raises from ``handle`` to tell the
runtime what to do with the message in hand (``Retry``, ``DeadLetter``).
"""

from __future__ import annotations

from dataclasses import dataclass


class GraphrunError(Exception):
    """Base class of graphrun's errors."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a graph file, located precisely enough for an editor to jump to."""

    file: str
    line: int
    column: int
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {self.message}{where}"


class GraphError(GraphrunError):
    """A graph file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class AgentTypeError(GraphrunError):
    """An agent type name cannot be resolved to an Agent class."""


class ConfigError(GraphrunError):
    """A setting outside the graph file (environment, command line) is missing or wrong."""


class MessageFormatError(GraphrunError):
    """A stream entry is not a well-formed graphrun message (wrong fields, truncated buffer)."""


class FrameStoreError(GraphrunError):
    """A shared-memory frame store cannot be made or opened (``frame_store``): no room in
    /dev/shm, or a file of another layout under the store's name."""


class FrameUnavailable(FrameStoreError, MessageFormatError):
    """A stream entry refers to a frame in shared memory that this reader cannot have
    as written: its slot was reused (generation mismatch), its bytes do not match the
    checksum, or the store is on another host. The entry is dead-lettered, never handed
    on with wrong pixels."""


class PortError(GraphrunError):
    """A port was used in a way its declaration does not allow."""


class RedisUnavailable(GraphrunError):
    """A Redis instance could not be reached within the allowed time."""


class GraphNotRunning(GraphrunError):
    """A command that looks at a running graph found none: no Redis answers, or no agent
    has reported in recently. The message says which and what was tried."""


class UnknownPort(GraphrunError):
    """A command named a port (``AGENT.PORT``) the graph does not have; the message lists
    the agents or the ports that exist."""


class RequestTimeout(GraphrunError, TimeoutError):
    """A request from outside the graph (``GraphClient``) got no answer by its deadline.
    Nothing of it is left behind: the request is taken back from its stream if no agent
    took it, an agent that takes it later skips it, and the reply stream expires."""


class BacklogFull(GraphrunError):
    """A ``GraphClient`` refused a request: the port's consumer group has more entries
    waiting (not yet read, or read and not yet acknowledged) than the client's limit."""


class RenderError(GraphrunError):
    """A picture of a graph could not be drawn: Graphviz's ``dot`` is missing or failed."""


class DeadLetterError(GraphrunError):
    """A dead letter a command named cannot be found, or cannot be put back as it is."""


class RecordingError(GraphrunError):
    """A recording (an MCAP file of stream entries) cannot be read or replayed: not MCAP,
    cut short, not made by graphrun, or its streams have no place in the target graph."""


class NotIndexed(GraphrunError):
    """``graphrun trace`` found no message with the value asked for: none was written, or
    its index entry expired. The message says which graph, field and value were looked up."""


class AgentStartError(GraphrunError):
    """An agent could not be started: its class, parameters or bindings are unusable.

    The launcher does not restart an agent that fails this way: no retry could fix it.
    """


class ParamError(GraphrunError):
    """A parameter that passed validation proves wrong when the agent starts (a node id
    the server does not have), or when the far side first answers: raised from ``start``,
    ``tick`` or ``produce`` with ``path``, the field within the agent's ``params``, the
    runner ends the run with an ``AgentStartError`` naming the graph file's line (and the
    launcher does not restart the agent: no retry could fix it)."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        self.path = tuple(path)
        super().__init__(message)


# --- control flow, raised by agent code ---------------------------------------------


class Retry(Exception):
    """Raise from ``handle`` to try the message again later.

    The message stays pending; it is handed to ``handle`` again after ``delay``
    seconds. Each try counts as a delivery, so a message that keeps asking for a retry
    still ends in the dead-letter stream after ``max_deliveries``.
    """

    def __init__(self, reason: str = "", *, delay: float = 1.0):
        super().__init__(reason)
        self.delay = delay


class DeadLetter(Exception):
    """Raise from ``handle`` to move the message to the dead-letter stream at once.

    Use it for messages no retry can fix (a frame the model can't take, say). The
    reason is stored with the message, so nothing is dropped silently.
    """
