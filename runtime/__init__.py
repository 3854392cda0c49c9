"""graphrun: a runtime for industrial edge-AI process graphs.

Agents declare typed ports; a YAML process graph wires ports to Redis streams; the
runtime runs each agent as its own process with at-least-once delivery.

Everything here is the public API, for agents and for the packages that ship them
(their command-line plugins included); the submodules are the engine's own, except
``graphrun.testing``.
"""

__version__ = "0.1.0"  # first: the command line, imported below, reads it

from .access import KeyGrant, RedisAccess
from .agent import Agent, NoParams
from .backoff import Backoff
from .cli import add_redis_option
from .client import GraphClient, Ticket
from .client_async import AsyncGraphClient
from .deployment import Deployment, RedisModule
from .errors import (
    AgentStartError,
    BacklogFull,
    ConfigError,
    DeadLetter,
    GraphError,
    GraphrunError,
    MessageFormatError,
    ParamError,
    PortError,
    Problem,
    RedisUnavailable,
    RequestTimeout,
    Retry,
)
from .graph import AgentNode, Graph, load_graph, redis_url
from .message import Hop, Message
from .observe import GraphHealth
from .pacing import Pacer
from .ports import Input, Inputs, Output, Outputs
from .request_payloads import field_value, image_payload, json_payload, object_payload
from .secrets import operator_token, read_secret, token_matches
from .transport import connect as connect_redis

__all__ = [
    "Agent",
    "AgentNode",
    "AgentStartError",
    "AsyncGraphClient",
    "Backoff",
    "BacklogFull",
    "ConfigError",
    "DeadLetter",
    "Deployment",
    "Graph",
    "GraphClient",
    "GraphError",
    "GraphHealth",
    "GraphrunError",
    "Hop",
    "Input",
    "Inputs",
    "KeyGrant",
    "Message",
    "MessageFormatError",
    "NoParams",
    "Output",
    "Outputs",
    "Pacer",
    "ParamError",
    "PortError",
    "Problem",
    "RedisAccess",
    "RedisModule",
    "RedisUnavailable",
    "RequestTimeout",
    "Retry",
    "Ticket",
    "add_redis_option",
    "connect_redis",
    "field_value",
    "image_payload",
    "json_payload",
    "load_graph",
    "object_payload",
    "operator_token",
    "read_secret",
    "redis_url",
    "token_matches",
]
