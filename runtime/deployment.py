"""What an agent needs from the machine it runs on, for ``graphrun compose``.

The engine knows no cameras, GPUs or PLCs, so each agent class says what its container
needs through the ``Agent.deployment(params)`` classmethod, which returns a
``Deployment``. Compose adds it to the common container settings of every replica:

    class ScannerParams(BaseModel):
        serial: str = "/dev/ttyUSB0"

    class Scanner(Agent):
        Params = ScannerParams

        @classmethod
        def deployment(cls, params: ScannerParams) -> Deployment:
            return Deployment(devices=(params.serial,), notes=(f"barcode scanner on {params.serial}",))

The default, used by every agent that does not override it, follows one convention:
an agent whose params have ``host`` and ``port`` (a server it runs, or one it reaches)
sees the network as it would without containers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Hosts that mean "this machine": inside a container they would mean the container.
LOOPBACK = ("127.", "localhost", "::1")
#: Hosts that mean "every address of this machine": a server there is reached from outside.
WILDCARD = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class RedisModule:
    """A Redis module an agent needs on one of the graph's Redis instances.

    The instance then runs ``image`` (the module's own Redis build) and loads ``path``.
    Such images are often built for one architecture, so the node's platform is not
    imposed on them.
    """

    name: str  # as people call it, shown in the compose file's notes, e.g. "RedisAI"
    image: str  # a Redis image that ships the module
    path: str  # the module's file inside that image, for --loadmodule
    gpu: bool = False  # the module computes on the GPU: the Redis container reserves it


@dataclass(frozen=True)
class Deployment:
    """Container settings one agent needs beyond those every agent gets.

    Every replica of the agent gets them. ``notes`` end up in the compose file's
    header, each after the agent's name, to tell the person deploying what was done.
    """

    #: Share the host's network (broadcast discovery, servers on loopback).
    host_network: bool = False
    #: Variables for the container; None passes the machine's value through.
    environment: Mapping[str, str | None] = field(default_factory=dict)
    #: Bind mounts in Compose's short syntax, ``HOST:CONTAINER[:ro]``.
    volumes: tuple[str, ...] = ()
    #: Device files of the host, mapped to the same path in the container.
    devices: tuple[str, ...] = ()
    #: Ports the agent serves on, published on the same port of the host (one replica only).
    ports: tuple[int, ...] = ()
    #: Reserve the host's GPUs (needs the NVIDIA container toolkit).
    gpu: bool = False
    notes: tuple[str, ...] = ()
    #: Redis instance name -> the module the agent needs there.
    redis_modules: Mapping[str, RedisModule] = field(default_factory=dict)
    #: Secrets the agent reads with ``graphrun.read_secret(name)``, e.g. ``"operator_token"``:
    #: compose mounts each from a file in ./secrets/, Kubernetes takes each from a Secret;
    #: never written into the generated files (see deploy_secrets).
    secrets: tuple[str, ...] = ()


def network_address(params: Any) -> Deployment:
    """The default deployment: an agent with ``host`` and ``port`` params sees the network
    as under ``graphrun run``. A loopback host means this machine, so the agent shares the
    host's network; a server on every address has its port published."""
    host, port = getattr(params, "host", None), getattr(params, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return Deployment()
    if host.startswith(LOOPBACK):
        return Deployment(host_network=True, notes=(f"on the host's network ({host}:{port} is this machine)",))
    if host in WILDCARD and port > 0:
        return Deployment(ports=(port,))
    return Deployment()
