"""Reply streams: where the answers to requests from outside the graph are written.

Each caller (a ``graphrun.client.GraphClient``) owns one reply stream, named by
``reply_key``, and waits there for the correlation ids of its requests. The runtime
writes the answer port's output to it (``answer``) and renews its time to live with
every write, so a caller that went away leaves nothing behind: the stream expires
``REPLY_GRACE`` seconds after its latest request's deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from .delivery import REPLY_END
from .message import Request
from .outbox import Write

REPLY_PREFIX = "graphrun:reply:"
REPLY_MAXLEN = 100_000  # entries a reply stream keeps, when its reader falls that far behind
REPLY_GRACE = 30.0  # seconds a reply stream outlives the deadline of the request answered
NO_DEADLINE_TTL = 3600  # seconds a reply stream lives after answering a request without a deadline

__all__ = ["REPLY_END", "REPLY_MAXLEN", "REPLY_PREFIX", "answer", "caller_key", "callers_of", "reply_key", "ttl"]


def reply_key(graph: str, caller: str) -> str:
    return f"{REPLY_PREFIX}{graph}:{caller}"


def caller_key(graph: str, name: str, unique: str) -> str:
    """The reply stream of one client named ``name``: its name first, so that an ACL
    pattern (``callers_of``) can give an agent that makes requests its own streams alone."""
    return reply_key(graph, f"{name}.{unique}")


def callers_of(graph: str, name: str) -> str:
    """The key prefix of every reply stream of clients named ``name`` (``caller_key``)."""
    return reply_key(graph, f"{name}.")


def ttl(request: Request, now: float | None = None) -> int:
    """Seconds the reply stream should live after a write answering ``request``."""
    if request.deadline is None:
        return NO_DEADLINE_TTL
    now = time.time() if now is None else now
    return max(1, math.ceil(request.deadline - now + REPLY_GRACE))


def answer(request: Request, fields: Mapping[bytes, Any]) -> Write:
    """The write that hands an output (its encoded ``fields``) to the caller of ``request``."""
    instance, key = request.reply
    return Write(instance, key, REPLY_MAXLEN, fields, expire=ttl(request), reply=request.id)
