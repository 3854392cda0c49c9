"""graphrun: a runtime for industrial edge-AI process graphs.

Agents declare typed ports; a YAML process graph wires ports to Redis streams; the
runtime runs each agent as its own process with at-least-once delivery.
"""

from .agent import Agent, NoParams
from .backoff import Backoff
from .errors import (
    AgentStartError,
    ConfigError,
    DeadLetter,
    GraphError,
    GraphrunError,
    MessageFormatError,
    PortError,
    Problem,
    RedisUnavailable,
    Retry,
)
from .message import Hop, Message
from .pacing import Pacer
from .ports import Input, Inputs, Output, Outputs

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentStartError",
    "Backoff",
    "ConfigError",
    "DeadLetter",
    "GraphError",
    "GraphrunError",
    "Hop",
    "Input",
    "Inputs",
    "Message",
    "MessageFormatError",
    "NoParams",
    "Output",
    "Outputs",
    "Pacer",
    "PortError",
    "Problem",
    "RedisUnavailable",
    "Retry",
]
