"""Model versions of one classification agent, kept in Redis for zero-downtime updates.

Keys, all under ``graphrun:model:<agent>``:

- ``:versions``  hash  version -> JSON (name, sha256, bytes, deployed time)
- ``:blob:<v>``  string, the ONNX file of version v
- ``:history``   list of activated versions, the active one last (rollback pops it)
- ``:active``    the active version; running agents poll this one small key
- ``:running``   hash  agent instance -> JSON (version, backend, since)

Activation is a MULTI/EXEC transaction, so an agent never sees a version whose blob
is not stored yet. RedisAI keeps its own copy of each version under ``ai_key``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

import redis

from graphrun_agents.errors import ModelError

PREFIX = "graphrun:model"
#: What a running agent does with its versions: read them, add the first, report itself.
AGENT_COMMANDS = ("get", "set", "hget", "hset", "hdel", "hgetall", "rpush", "lrange", "watch", "unwatch")


def keys_of(agent: str) -> str:
    """The key pattern of every key of one agent's versions (RedisAI's copies included)."""
    return f"{PREFIX}:{agent}:*"


@dataclass(frozen=True)
class VersionInfo:
    version: str
    name: str
    sha256: str
    size: int
    deployed: float
    active: bool = False


def instance_id(agent: str) -> str:
    """Tells replicas of one agent apart in the ``running`` hash."""
    return f"{agent}@{socket.gethostname()}:{os.getpid()}"


class ModelVersions:
    """The version store of one agent on one Redis instance."""

    def __init__(self, client: redis.Redis, agent: str):
        self.client = client
        self.agent = agent
        self.prefix = f"{PREFIX}:{agent}"

    def key(self, part: str) -> str:
        return f"{self.prefix}:{part}"

    def ai_key(self, version: str) -> str:
        """Where RedisAI holds ``version``."""
        return self.key(f"ai:{version}")

    # --- writing -----------------------------------------------------------------------

    def add(self, blob: bytes, *, version: str, name: str, sha256: str, activate: bool = True,
            only_if_empty: bool = False) -> bool:
        """Stores ``blob`` as ``version`` (and activates it); False if ``only_if_empty`` and a version exists.

        ``only_if_empty`` is how an agent registers the model file it started with,
        without overriding a version deployed meanwhile by another replica.
        """
        meta = json.dumps({"name": name, "sha256": sha256, "size": len(blob), "deployed": time.time()})
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.key("active"), self.key("versions"))
                    if only_if_empty and pipe.get(self.key("active")) is not None:
                        pipe.reset()
                        return False
                    existing = pipe.hget(self.key("versions"), version)
                    if existing is not None and json.loads(existing)["sha256"] != sha256:
                        pipe.reset()
                        raise ModelError(
                            f"agent {self.agent!r} already has a different model as version {version!r}; "
                            "choose another --version"
                        )
                    pipe.multi()
                    pipe.set(self.key(f"blob:{version}"), blob)
                    pipe.hset(self.key("versions"), version, meta)
                    if activate:
                        pipe.rpush(self.key("history"), version)
                        pipe.set(self.key("active"), version)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def rollback(self) -> str:
        """Re-activates the version active before the current one; returns it."""
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.key("history"))
                    history = [v.decode() for v in pipe.lrange(self.key("history"), 0, -1)]
                    if len(history) < 2:
                        pipe.reset()
                        current = history[-1] if history else "none"
                        raise ModelError(
                            f"agent {self.agent!r} has no earlier version to roll back to (active: {current})"
                        )
                    pipe.multi()
                    pipe.rpop(self.key("history"))
                    pipe.set(self.key("active"), history[-2])
                    pipe.execute()
                    return history[-2]
                except redis.WatchError:
                    continue

    def report_running(self, instance: str, version: str, backend: str) -> None:
        self.client.hset(
            self.key("running"), instance, json.dumps({"version": version, "backend": backend, "since": time.time()})
        )

    def forget_running(self, instance: str) -> None:
        self.client.hdel(self.key("running"), instance)

    # --- reading -----------------------------------------------------------------------

    def active(self) -> str | None:
        value = self.client.get(self.key("active"))
        return None if value is None else value.decode()

    def blob(self, version: str) -> bytes:
        blob = self.client.get(self.key(f"blob:{version}"))
        if blob is None:
            raise ModelError(f"agent {self.agent!r} has no stored model version {version!r}")
        return blob

    def versions(self) -> list[VersionInfo]:
        """Every stored version, oldest deployment first."""
        active = self.active()
        out = []
        for version, raw in self.client.hgetall(self.key("versions")).items():
            meta = json.loads(raw)
            v = version.decode()
            out.append(VersionInfo(v, meta["name"], meta["sha256"], meta["size"], meta["deployed"], v == active))
        return sorted(out, key=lambda i: i.deployed)

    def running(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self.client.hgetall(self.key("running")).items()}

    @classmethod
    def agents(cls, client: redis.Redis) -> list[str]:
        """Agents with versions on this instance."""
        names = {k.decode()[len(PREFIX) + 1 : -len(":versions")] for k in client.scan_iter(f"{PREFIX}:*:versions")}
        return sorted(names)
