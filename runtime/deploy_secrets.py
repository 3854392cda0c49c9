"""The secrets an agent's class says it reads (``Deployment.secrets``), in containers.

An agent reads a secret with ``graphrun.read_secret(name)``: ``GRAPHRUN_<NAME>`` or the
file named by ``GRAPHRUN_<NAME>_FILE``. The generated files never hold one:

- ``graphrun compose`` mounts the Compose secret ``<name>`` (the file ``./secrets/<name>``
  beside the compose file, as the Redis passwords) and points ``GRAPHRUN_<NAME>_FILE`` at
  ``/run/secrets/<name>``;
- ``graphrun k8s`` writes one Secret ``graphrun-<name>`` per secret of the graph, without
  its value, which the operator adds under the key ``value``; ``GRAPHRUN_<NAME>`` comes
  from it (``secretKeyRef``). A pod waits until the value is there.

One secret of a name serves every agent that reads it (the HMI and the gateway share the
operator token), so a name is a graph's, not an agent's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .deployment import Deployment
from .secrets import variable

SECRETS_DIR = "./secrets"  # beside the compose file
K8S_KEY = "value"  # the key of a graphrun-<name> Secret that holds the value


def secret_name(name: str) -> str:
    """The Compose secret of ``read_secret(name)``: ``operator_token`` for "operator_token" or "OPERATOR_TOKEN"."""
    return variable(name).removeprefix("GRAPHRUN_").lower()


def k8s_secret_name(name: str) -> str:
    """The Kubernetes Secret of ``read_secret(name)``: ``graphrun-operator-token``."""
    return "graphrun-" + secret_name(name).replace("_", "-")


def compose_environment(deployment: Deployment) -> tuple[dict[str, str], list[str]]:
    """A service's variables naming its secrets' files, and the Compose secrets it mounts."""
    names = [secret_name(n) for n in dict.fromkeys(deployment.secrets)]
    return {variable(n) + "_FILE": f"/run/secrets/{n}" for n in names}, names


def compose_notes(agent: str, deployment: Deployment) -> list[str]:
    return [f"{agent}: reads the secret {secret_name(n)} from {SECRETS_DIR}/{secret_name(n)}"
            for n in dict.fromkeys(deployment.secrets)]


def k8s_environment(deployment: Deployment) -> list[dict[str, Any]]:
    """A container's variables for its secrets, each from its Secret."""
    return [{"name": variable(n), "valueFrom": {"secretKeyRef": {"name": k8s_secret_name(n), "key": K8S_KEY}}}
            for n in dict.fromkeys(deployment.secrets)]


def k8s_notes(agent: str, deployment: Deployment) -> list[str]:
    return [f"{agent}: reads {variable(n)} from Secret {k8s_secret_name(n)} (key {K8S_KEY}) in graph.yaml: "
            f"kubectl patch secret {k8s_secret_name(n)} -p '{{\"stringData\": {{\"{K8S_KEY}\": \"...\"}}}}'"
            for n in dict.fromkeys(deployment.secrets)]


def k8s_secrets(deployments: Mapping[str, Deployment], labels: dict[str, str]) -> list[dict[str, Any]]:
    """One Secret per name any agent reads, without its value: the operator adds it."""
    names: Iterable[str] = dict.fromkeys(k8s_secret_name(n) for d in deployments.values() for n in d.secrets)
    return [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels}, "type": "Opaque"}
            for name in names]
