"""Part ids that never repeat: the next id of an agent, kept in its home Redis.

A part id names one physical part from the camera to the PLC; the Modbus agent treats
a part id it has written as done. An agent that counted from its start value again
after a restart would give new parts the ids of parts already judged, and their
verdicts would be dropped as "already written" or joined with a previous run's. So the
agents that number parts (a camera counting its own frames, the trigger source) keep
the next id in Redis and save it *before* the message carrying the id is sent: a crash
between the two skips an id, never repeats one.

The key lives on the agent's home instance (``graphrun:part_id:GRAPH:AGENT``), which
must keep its data across restarts (``persistence: aof``) for the ids to survive a
restart of Redis itself.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from graphrun import Agent, ConfigError, KeyGrant

KEY_PREFIX = "graphrun:part_id"


def part_id_key(graph: str, agent: str) -> str:
    """Where the next part id of ``agent`` in ``graph`` is kept."""
    return f"{KEY_PREFIX}:{graph}:{agent}"


def part_ids_access(graph: str, agent: str, home: str) -> KeyGrant:
    """What an agent numbering parts needs in Redis: its own next-id key, read and written
    (for ``Agent.redis_access``)."""
    return KeyGrant(home, ("get", "set"), (part_id_key(graph, agent),))


class PartIds:
    """Hands out increasing part ids from ``start``, continuing after the last saved one.

    Without a Redis client (an agent under a test harness with none) the count is
    kept in memory only, and ``status["part_ids"]`` says so.
    """

    def __init__(self, client: redis.Redis | None, key: str, start: int, *,
                 status: dict[str, Any], log: logging.Logger):
        self._client = client
        self.key = key
        self._status = status
        self._log = log
        saved = None if client is None else client.get(key)  # at start: an error here is retried by the launcher
        self.next = max(start, int(saved)) if saved is not None else start
        self._saved = saved is not None and int(saved) == self.next
        status["part_ids"] = "saved" if client is not None else "in memory only (no Redis)"

    @classmethod
    def of(cls, agent: Agent, start: int) -> PartIds:
        """The part ids of ``agent``, kept on its home Redis instance."""
        try:
            client: redis.Redis | None = agent.redis(agent.home_redis)
        except ConfigError:
            client = None
        return cls(client, part_id_key(agent.graph, agent.name), start, status=agent.status, log=agent.log)

    def take(self) -> int:
        """The next part id; it is saved as used before it is returned."""
        part_id = self.next
        self.advance(part_id + 1)
        return part_id

    def advance(self, next_id: int) -> None:
        """Ids below ``next_id`` are used (a device that dropped frames skips theirs)."""
        if next_id > self.next:
            self.next = next_id
            self._saved = False
        if self._saved or self._client is None:
            return
        try:
            self._client.set(self.key, self.next)
        except redis.RedisError as exc:
            # The message with this id waits in the outbox for the same Redis; the next
            # save, once it answers, covers it.
            if self._status.get("part_ids") == "saved":
                self._log.warning("next part id %d not saved (%s); saving again with the next part", self.next, exc)
            self._status["part_ids"] = f"not saved: {exc}"
            return
        self._saved = True
        self._status["part_ids"] = "saved"
