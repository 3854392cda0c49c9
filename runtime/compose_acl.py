"""The graph's Redis ACL users under ``graphrun compose``: each node's Redis loads them, each
agent container logs in as its own user.

- every agent service gets ``GRAPHRUN_REDIS_USER`` (``<graph>-<agent>``) and its password
  as the Compose secret ``redis_password_<agent>``, read from
  ``/run/secrets/redis_password_<agent>`` (``GRAPHRUN_REDIS_PASSWORD_FILE``): never in
  the compose file, the image or a command line;
- each hosted Redis instance gets an ACL file, made before it starts by a one-shot
  ``acl-<instance>`` service (``graphrun acl --instance``, with the secrets of every user
  of that instance) into a volume the Redis container mounts read-only; the file holds the
  passwords' SHA-256 only. Its health check logs in as the observer.

The secrets are files in ``./secrets/`` beside the compose file, one strong password
each, made by whoever deploys (``openssl rand -hex 24 > secrets/redis_password_cam_front``);
a node needs those of its own agents and of every user of the Redis instances it hosts.
"""

from __future__ import annotations

from typing import Any

from . import acl
from .graph import AgentNode, Graph
from .secrets import REDIS_PASSWORD, REDIS_USER, variable

SECRETS_DIR = "./secrets"
ACL_DIR = "/etc/redis/acl"  # in a Redis container: the ACL volume, read-only
# In the one-shot ACL service, the same volume, written: mounted on the image's /tmp, whose
# mode (1777) a new volume takes, so the image's unprivileged user may write there.
ACL_OUT = "/tmp"


def secret_path(secret: str) -> str:
    return f"/run/secrets/{secret}"


def agent_login(graph: Graph, agent: AgentNode) -> tuple[dict[str, str], list[str]]:
    """An agent container's environment for its Redis user, and the secret it mounts."""
    secret = acl.password_secret(agent.name)
    return ({REDIS_USER: acl.user_name(graph, agent.name),
             variable(REDIS_PASSWORD) + "_FILE": secret_path(secret)}, [secret])


def acl_service(graph: Graph, instance: str, *, image: str, graph_file: str, graph_mount: str,
                platform: str | None) -> tuple[dict[str, Any], list[str]]:
    """The one-shot service writing ``instance``'s ACL file, and the secrets it mounts."""
    users = [u for u in acl.users(graph) if instance in u.selectors]
    secrets = [acl.password_secret(u.role) for u in users]
    service: dict[str, Any] = {"image": image}
    if platform:
        service["platform"] = platform
    service["command"] = ["acl", graph_file, "--instance", instance, "--format", "aclfile", "--out", ACL_OUT]
    service["environment"] = {variable(secret) + "_FILE": secret_path(secret) for secret in secrets}
    service["volumes"] = [graph_mount, f"acl-{instance}:{ACL_OUT}"]
    service.update(secrets=secrets, restart="no")
    return service, secrets


def secure_redis(graph: Graph, instance: str, service: dict[str, Any]) -> list[str]:
    """Make a Redis service load its ACL file and check its health as the observer; the
    secrets it mounts."""
    observer = acl.password_secret(acl.OBSERVER)
    service["command"] = [*service["command"], "--aclfile", f"{ACL_DIR}/{instance}.acl"]
    service["volumes"] = [*service["volumes"], f"acl-{instance}:{ACL_DIR}:ro"]
    service["depends_on"] = {f"acl-{instance}": {"condition": "service_completed_successfully"}}
    login = f'REDISCLI_AUTH="$$(cat {secret_path(observer)})" redis-cli --user {acl.user_name(graph, acl.OBSERVER)}'
    service["healthcheck"] = {**service["healthcheck"], "test": ["CMD-SHELL", f"{login} ping | grep -q PONG"]}
    service["secrets"] = [observer]
    return [observer]


def secret_files(names: list[str]) -> dict[str, dict[str, str]]:
    """The compose file's ``secrets``: one file each in ./secrets/."""
    return {name: {"file": f"{SECRETS_DIR}/{name}"} for name in dict.fromkeys(names)}
