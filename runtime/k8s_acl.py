"""The graph's Redis ACL users under ``graphrun k8s``: each hosted Redis loads them, each
agent's pod logs in as its own user. The same users as ``graphrun acl`` and compose.

- a Secret ``redis-user-<role>`` per user (each agent, and the observer): the user name
  (``<graph>-<agent>``) is written here; its ``password`` is added by the operator
  (``kubectl patch``), never by graphrun;
- an agent's container gets ``GRAPHRUN_REDIS_USER`` and ``GRAPHRUN_REDIS_PASSWORD`` from
  its own Secret only: a pod sees no other user's password;
- a Redis pod's init container runs ``graphrun acl --instance`` with the passwords of
  every user of that instance and writes the ACL file (SHA-256 hashes only) into a
  volume that lives as long as the pod; the server loads it read-only. A password
  changed in its Secret applies at the next start of the Redis pod and of the agent's.
- the Redis probes log in as the observer, who may only read.
"""

from __future__ import annotations

import shlex
from typing import Any

from . import acl
from .graph import AgentNode, Graph
from .secrets import REDIS_PASSWORD, REDIS_USER, variable

ACL_OUT = "/acl"  # in the init container: the ACL volume, written
ACL_DIR = "/etc/redis/acl"  # in the Redis container: the same volume, read-only


def dns(text: str) -> str:
    return text.lower().replace("_", "-")


def user_secret(role: str) -> str:
    """The Secret holding the user name and password of an agent's user (or the observer's)."""
    return f"redis-user-{dns(role)}"


def secret(graph: Graph, role: str, labels: dict[str, str]) -> dict[str, Any]:
    """A user's Secret, without its password: the operator adds the key ``password``."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": user_secret(role), "labels": labels},
            "type": "Opaque", "stringData": {"username": acl.user_name(graph, role)}}


def _password(role: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": user_secret(role), "key": "password"}}


def agent_login(graph: Graph, agent: AgentNode) -> list[dict[str, Any]]:
    """An agent container's environment for its own Redis user."""
    return [{"name": REDIS_USER, "value": acl.user_name(graph, agent.name)},
            {"name": variable(REDIS_PASSWORD), "valueFrom": _password(agent.name)}]


def acl_init_container(graph: Graph, instance: str, *, image: str, graph_file: str) -> dict[str, Any]:
    """The init container writing ``instance``'s ACL file from the passwords of its users."""
    users = [u for u in acl.users(graph) if instance in u.selectors]
    return {"name": "acl", "image": image,
            "args": ["acl", graph_file, "--instance", instance, "--format", "aclfile", "--out", ACL_OUT],
            "env": [{"name": variable(acl.password_secret(u.role)), "valueFrom": _password(u.role)} for u in users],
            "volumeMounts": [{"name": "graph", "mountPath": graph_file.rsplit("/", 1)[0], "readOnly": True},
                             {"name": "acl", "mountPath": ACL_OUT}]}


def secure_redis(graph: Graph, instance: str, container: dict[str, Any]) -> None:
    """Make a Redis container load its ACL file and probe its health as the observer."""
    container["command"] = [*container["command"], "--aclfile", f"{ACL_DIR}/{instance}.acl"]
    container["volumeMounts"] = [*container["volumeMounts"], {"name": "acl", "mountPath": ACL_DIR, "readOnly": True}]
    container["env"] = [{"name": "REDISCLI_AUTH", "valueFrom": _password(acl.OBSERVER)}]  # redis-cli reads it
    observer = shlex.quote(acl.user_name(graph, acl.OBSERVER))
    for probe in ("readinessProbe", "livenessProbe"):
        container[probe]["exec"]["command"] = ["sh", "-c", f"redis-cli --user {observer} ping | grep -q PONG"]
