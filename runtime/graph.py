"""Process-graph files: parsing, validation against the agent classes, and resolution.

``load_graph`` returns a ``Graph`` in which every port of every agent is bound to a
concrete stream on a named Redis instance, or raises ``GraphError`` listing every
problem as ``FILE:LINE:COL: what is wrong (field path)``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import registry, yaml_source
from .agent import Agent
from .errors import AgentTypeError, ConfigError, GraphError, Problem
from .index import DEFAULT_FIELD as DEFAULT_INDEX_FIELD
from .index import DEFAULT_TTL as DEFAULT_INDEX_TTL
from .logs import LEVELS, LogLevel
from .ports import declared_ports, incompatibility, type_name
from .yaml_source import Path_, Source

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
#: What graphrun's Redis client connects to (``redis+sentinel``: see ``SentinelSpec``).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
DEFAULT_MAXLEN = 10_000
# A stream's default size bound: two cameras' frame streams (and the rest) fit a 4 GB edge box.
DEFAULT_MAX_BYTES = 256 << 20
_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


def parse_size(text: str) -> int:
    """'256mb' -> bytes (units b, kb, mb, gb, as Redis writes them)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?b?)\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (write e.g. 268435456, '512kb', '256mb' or '1gb')")
    return int(match[1]) * _UNITS[match[2] if match[2] in _UNITS else match[2] + "b"]


# --- the file's schema --------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Persistence = Literal["aof", "rdb", "none"]


class TlsSpec(_Strict):
    """Files for TLS to a Redis instance (``rediss://``); a relative path is the graph file's folder's."""

    ca: str = Field(description="the CA certificate the server's certificate is checked against (PEM)")
    cert: str | None = Field(None, description="this client's certificate, for a server that asks for one (PEM)")
    key: str | None = Field(None, description="the private key of cert (PEM)")
    check_hostname: bool = Field(True, description="the server's certificate must name the host of the url")


def _host_port(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "," in host or "/" in host:
        raise ValueError(f"bad sentinel address {address!r}: write host:port, e.g. 10.0.0.7:26379")
    return address


class SentinelSpec(_Strict):
    """A Redis instance with a replica, watched by Redis Sentinel: agents ask the sentinels
    where the master is, and follow it through a failover. Replication is asynchronous:
    see ``RedisSpec.wait_replicas`` for what a failover may lose, and how to narrow it."""

    master: str = Field(min_length=1, description="the master's name in the sentinels' configuration")
    addresses: list[Annotated[str, AfterValidator(_host_port)]] = Field(min_length=1,
                                                                         description="the sentinels, as host:port")

    @property
    def url(self) -> str:
        """The URL graphrun's client takes: ``redis+sentinel://HOST:PORT,.../MASTER/0``."""
        return f"redis+sentinel://{','.join(self.addresses)}/{self.master}/0"


class FrameStoreSpec(_Strict):
    """Frames in shared memory on the producer's host (``frame_store``): arrays of at least
    ``threshold`` bytes go into slots of ``slot_size`` in a store of ``size`` bytes, and the
    stream entry carries a reference to the slot. Used for an output only when every agent
    of the graph reading its stream runs on the producer's node."""

    size: int = Field(ge=1, description="bytes of slots, e.g. '256mb'")
    threshold: int = Field(64 << 10, ge=1, description="arrays of at least this many bytes go to the store")
    slot_size: int = Field(4 << 20, ge=1, description="the largest array a slot holds (larger ones go inline)")

    @field_validator("size", "threshold", "slot_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _holds_a_slot(self) -> FrameStoreSpec:
        if self.slot_size > self.size:
            raise ValueError(f"size {self.size} holds no slot of slot_size {self.slot_size}")
        return self


class RedisSpec(_Strict):
    """A named Redis instance. Without a url, ``graphrun run`` starts a local redis-server.

    ``persistence`` is declared per instance because what a Redis crash may lose differs by
    stream: verdicts bound for a PLC must survive (``aof``), while frames a few seconds old
    are worth less than the disk wear of writing every one of them (``none``).
    """

    url: str | None = None
    maxmemory: str | None = Field(None, description="for a server graphrun starts, e.g. '2gb'")
    persistence: Persistence = Field(
        "aof", description="aof: append-only file fsynced each second; rdb: snapshots only; none: memory only")
    tls: TlsSpec | None = Field(None, description="CA and client certificate files for a rediss:// url")
    sentinel: SentinelSpec | None = Field(None, description="reach the instance through Redis Sentinel (its url)")
    wait_replicas: int = Field(0, ge=0, description="outputs and acknowledgements count as written once this many "
                                                    "replicas have them (WAIT): a failover then loses none of them")
    frame_store: FrameStoreSpec | None = Field(None, description="large arrays of outputs to this instance go "
                                                                 "through shared memory on the producer's host")

    @model_validator(mode="after")
    def _sentinel_is_the_url(self) -> RedisSpec:
        """An instance behind sentinels runs elsewhere, like one with a url: it is its url."""
        if self.sentinel is not None:
            if self.url is not None:
                raise ValueError("give either url or sentinel, not both")
            self.url = self.sentinel.url
        if self.wait_replicas and self.url is None:
            raise ValueError(f"wait_replicas: {self.wait_replicas} needs an instance with replicas (a url or sentinel): "
                             "the server graphrun, compose or k8s runs for it has none, and every write would wait")
        return self


class NodeSpec(_Strict):
    """A physical machine. Its ``redis`` is where its agents' outputs go by default."""

    redis: str | None = None
    platform: str | None = Field(None, description="container platform, e.g. linux/arm64")
    host: str | None = Field(None, description="the machine's address, for other nodes and tools")
    frame_store: FrameStoreSpec | None = Field(None, description="large arrays of this node's agents' outputs go "
                                                                 "through shared memory (wins over the instance's)")


class InputSpec(_Strict):
    """How an agent reads one input stream."""

    from_: str = Field(alias="from")
    claim_idle_ms: int = Field(30_000, ge=100, description="reclaim entries a dead consumer left pending this long")
    max_deliveries: int = Field(5, ge=1, description="dead-letter a message after this many failed deliveries")
    batch: int = Field(16, ge=1, le=10_000, description="most entries taken per read")
    batch_wait_ms: float = Field(0, ge=0, description="wait up to this long to fill a batch")
    start: Literal["earliest", "latest"] = Field("earliest", description="where a new consumer group starts")
    dead_letter: str | None = Field(None, description="dead-letter stream key (default: '<stream>:dead')")
    cycle: bool = Field(False, description="this input closes a loop of agents on purpose (feedback); "
                                           "without it, validation refuses cycles")


class OutputSpec(_Strict):
    redis: str | None = None
    stream: str | None = None
    maxlen: int | None = Field(None, ge=1, description="approximate bound on the stream's length")
    max_bytes: int | None = Field(None, ge=1, description="bound on the stream's size: the length bound "
                                  "becomes at most max_bytes / entry size (e.g. 268435456, or '256mb')")
    index: str | None = Field(None, description="the payload field whose value indexes each message, for "
                              "'graphrun trace' (default: the port's, usually part_id); null: none")
    index_ttl: int | None = Field(None, ge=1, description="seconds an index entry is kept after the last "
                                  f"message of its value (default {DEFAULT_INDEX_TTL})")

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


class RestartSpec(_Strict):
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(30.0, gt=0)


class AgentSpec(_Strict):
    type: str
    node: str | None = None
    replicas: int = Field(1, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    restart: RestartSpec = Field(default_factory=RestartSpec)
    env: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    log_level: LogLevel | None = Field(None, description="this agent's log level; wins over --log-level")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) and value.upper() in LEVELS else value  # 'info' too


class GraphSpec(_Strict):
    name: str
    description: str = ""
    redis: dict[str, RedisSpec] = Field(default_factory=lambda: {"main": RedisSpec()})
    nodes: dict[str, NodeSpec] = Field(default_factory=dict)
    agents: dict[str, Any]


# --- the resolved graph -----------------------------------------------------------------


@dataclass(frozen=True)
class StreamRef:
    instance: str
    key: str

    def __str__(self) -> str:
        return f"{self.instance}:{self.key}"


@dataclass(frozen=True, eq=False)  # identity: the runner keys its bookkeeping by binding
class _Binding:
    port: str
    stream: StreamRef

    @property
    def instance(self) -> str:
        return self.stream.instance

    @property
    def key(self) -> str:
        return self.stream.key


@dataclass(frozen=True, eq=False)
class InputBinding(_Binding):
    spec: InputSpec
    source: tuple[str, str] | None  # (agent, port) writing the stream, when in this graph

    @property
    def dead_letter(self) -> StreamRef:
        return StreamRef(self.stream.instance, self.spec.dead_letter or f"{self.stream.key}:dead")


@dataclass(frozen=True, eq=False)
class OutputBinding(_Binding):
    maxlen: int
    max_bytes: int = DEFAULT_MAX_BYTES
    index: str | None = DEFAULT_INDEX_FIELD  # payload field indexed for tracing; None: not indexed
    index_ttl: int = DEFAULT_INDEX_TTL


@dataclass
class AgentNode:
    """One agent of a graph, its class found, its params validated, its ports bound."""

    name: str
    type: str
    node: str
    replicas: int
    params: dict[str, Any]
    agent_class: type[Agent]
    settings: BaseModel
    inputs: dict[str, InputBinding]
    outputs: dict[str, OutputBinding]
    groups: dict[str, tuple[str, ...]]
    spec: AgentSpec

    @property
    def instances(self) -> set[str]:
        """The Redis instances this agent talks to."""
        return {b.instance for b in self.inputs.values()} | {b.instance for b in self.outputs.values()}


@dataclass
class Graph:
    name: str
    file: str
    redis: dict[str, RedisSpec]
    nodes: dict[str, NodeSpec]
    agents: dict[str, AgentNode]
    description: str = ""
    source: Source | None = field(default=None, repr=False)

    def agents_on(self, node: str | None) -> list[AgentNode]:
        return [a for a in self.agents.values() if node is None or a.node == node]

    def home_redis(self, agent: str) -> str:
        """Where an agent keeps state of its own (model versions, say): its node's instance
        when the agent uses it or uses none, else the first instance it uses."""
        node = self.agents[agent]
        used = node.instances
        own = self.nodes.get(node.node)
        if own is not None and own.redis and (own.redis in used or not used):
            return own.redis
        return min(used) if used else next(iter(self.redis))


# --- loading ----------------------------------------------------------------------------


def load_graph(path: str | os.PathLike[str], *, environ: dict[str, str] | None = None) -> Graph:
    """Parse and validate a graph file."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(yaml_source.MAX_BYTES + 1)
    except OSError as exc:
        raise GraphError([Problem(str(path), 1, 1, f"cannot read graph file: {exc.strerror or exc}")]) from None
    if len(data) > yaml_source.MAX_BYTES:
        raise GraphError([Problem(str(path), 1, 1, f"graph file larger than {yaml_source.MAX_BYTES // 2**20} MiB: "
                                                   "not a graph file?")])
    text = yaml_source.decode(data, str(path))
    # Custom agents beside a graph file are importable as "module:Class" while it is read.
    with registry.importable(str(path.resolve().parent)):
        return parse_graph(text, str(path), environ=environ)


def parse_graph(text: str, filename: str = "<graph>", *, environ: dict[str, str] | None = None) -> Graph:
    source = yaml_source.load(text, filename, environ=environ)
    return _Resolver(source).resolve()


class _Resolver:
    def __init__(self, source: Source):
        self.src = source
        self.problems: list[Problem] = []
        self._port_names: dict[str, dict[str, Path_]] = {}  # agent -> dynamic port -> where it is named
        self._output_groups: dict[tuple[str, str], str] = {}  # (agent, dynamic output) -> its set

    def fail(self, path: Path_, message: str, *, key: bool = False) -> None:
        if self.src.is_spoiled(path):
            return  # the value there could not be read (an unset ${ENV}): already reported
        self.problems.append(self.src.problem(path, message, key=key))

    def error(self) -> GraphError:
        """Every problem found, the file's reading and the graph's, in the file's order."""
        return GraphError(sorted(self.src.problems + self.problems, key=lambda p: (p.line, p.column)))

    def resolve(self) -> Graph:
        data = self.src.data
        if not isinstance(data, dict):
            self.fail((), "a graph file is a mapping with name, redis, nodes and agents")
            raise self.error()
        spec = self._validate(GraphSpec, data, ()) or self._stand_in(data)
        if spec is None:
            raise self.error()
        # Each agent is checked on its own, so one agent's mistake hides no other's.
        agent_specs: dict[str, AgentSpec] = {}
        for name, raw in spec.agents.items():
            agent = self._validate(AgentSpec, raw, ("agents", name), keep=("type",))
            if agent is not None:
                agent_specs[name] = agent
        self.spec = spec
        self.agent_specs = agent_specs
        for section in ("redis", "nodes", "agents"):
            for name in getattr(spec, section):
                if not _NAME.match(str(name)):
                    self.fail((section, name), f"bad name {name!r}: use letters, digits, '_' and '-'", key=True)
        if not spec.redis:
            self.fail(("redis",), "a graph needs at least one Redis instance")
            raise self.error()
        self._check_redis_urls()
        self._check_nodes()
        classes = self._classes()
        settings = self._params(classes)
        outputs, groups = self._outputs(classes)
        inputs = self._inputs(classes, outputs, groups)
        self._required_inputs(classes, inputs)
        self._wiring(classes, settings, inputs, outputs)
        self._cycles(inputs)
        if self.problems or self.src.problems:
            raise self.error()
        agents = {
            name: AgentNode(
                name=name, type=a.type, node=self._node_of(name), replicas=a.replicas, params=a.params,
                agent_class=classes[name], settings=settings[name], inputs=inputs[name],
                outputs=outputs[name], groups=groups[name], spec=a,
            )
            for name, a in self.agent_specs.items()
        }
        nodes = spec.nodes or {"local": NodeSpec(redis=next(iter(spec.redis)))}
        return Graph(spec.name, self.src.filename, dict(spec.redis), dict(nodes), agents, spec.description, self.src)

    # --- pieces ---

    def _validate(self, model: type[BaseModel], raw: Any, path: Path_, keep: tuple[str, ...] = ()) -> Any:
        """Validate ``raw``; on errors report them and go on without the bad keys, so that
        one mistake hides no other. None when even that fails (or a ``keep`` key is bad)."""
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self._pydantic(exc, path)
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            if not isinstance(raw, dict) or bad & set(keep):
                return None
            try:
                return model.model_validate({k: v for k, v in raw.items() if k not in bad})
            except ValidationError:
                return None

    def _stand_in(self, data: dict[Any, Any]) -> GraphSpec | None:
        """The graph's usable top-level keys, with stand-ins for a missing or bad ``name`` or
        ``agents`` (already reported), so that a file without a name still has its agents,
        Redis instances and nodes checked: every problem in one run."""
        usable: dict[str, Any] = {}
        for key in GraphSpec.model_fields:
            if key in data:
                try:
                    GraphSpec.model_validate({"name": "graph", "agents": {}, key: data[key]})
                except ValidationError:
                    continue
                usable[key] = data[key]
        try:
            return GraphSpec.model_validate({"name": "graph", "agents": {}, **usable})
        except ValidationError:
            return None

    def _pydantic(self, exc: ValidationError, prefix: Path_) -> None:
        for err in exc.errors():
            loc = prefix + tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                self.fail(loc, f"unknown key {loc[-1]!r}", key=True)
            elif err["type"] == "missing":
                self.fail(loc[:-1], f"missing required key {loc[-1]!r}")
            else:
                given = err.get("input")
                shown = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
                self.fail(loc, f"{err['msg']}{shown}")

    def _check_redis_urls(self) -> None:
        """A url graphrun's Redis client cannot use (``http://``, a bare ``host:port``) would
        otherwise only fail when an agent first connects, on the machine it runs on."""
        for name, r in self.spec.redis.items():
            if r.url and urlsplit(r.url).scheme.lower() not in REDIS_SCHEMES:
                self.fail(("redis", name, "url"), f"bad Redis url {r.url!r}: use a redis://, rediss:// or unix:// URL")
            elif r.tls is not None and r.url and urlsplit(r.url).scheme.lower() != "rediss":
                self.fail(("redis", name, "tls"), f"tls is for a rediss:// url, not {r.url!r}")

    def _check_nodes(self) -> None:
        for node, n in self.spec.nodes.items():
            if n.redis is not None and n.redis not in self.spec.redis:
                self.fail(("nodes", node, "redis"), f"unknown Redis instance {n.redis!r} (known: {_known(self.spec.redis)})")
        for name, a in self.agent_specs.items():
            if a.node is None:
                if len(self.spec.nodes) > 1:
                    self.fail(("agents", name), f"agent {name!r} must name its node: the graph has several ({_known(self.spec.nodes)})")
            elif a.node not in self.spec.nodes:
                self.fail(("agents", name, "node"), f"unknown node {a.node!r} (known: {_known(self.spec.nodes) or 'none declared'})")

    def _node_of(self, agent: str) -> str:
        a = self.agent_specs[agent]
        if a.node:
            return a.node
        return next(iter(self.spec.nodes), "local")

    def _home_instance(self, agent: str) -> str:
        node = self.spec.nodes.get(self.agent_specs[agent].node or "") or (
            next(iter(self.spec.nodes.values())) if len(self.spec.nodes) == 1 else None
        )
        if node is not None and node.redis in self.spec.redis:
            return node.redis  # type: ignore[return-value]
        return next(iter(self.spec.redis))

    def _classes(self) -> dict[str, type[Agent]]:
        classes: dict[str, type[Agent]] = {}
        for name, a in self.agent_specs.items():
            try:
                classes[name] = registry.resolve(a.type)
            except AgentTypeError as exc:
                self.fail(("agents", name, "type"), str(exc))
        return classes

    def _params(self, classes: dict[str, type[Agent]]) -> dict[str, BaseModel]:
        out: dict[str, BaseModel] = {}
        for name, cls in classes.items():
            try:
                out[name] = cls.Params.model_validate(self.agent_specs[name].params)
            except ValidationError as exc:
                self._pydantic(exc, ("agents", name, "params"))
            except Exception as exc:  # noqa: BLE001 - the agent's own validators may raise anything (pydantic passes a KeyError on)
                self.fail(("agents", name, "params"), f"the parameters of {cls.__name__} could not be checked: "
                                                      f"{registry.describe_error(exc, _module_file(cls))}")
        return out

    def _group_for(self, cls: type[Agent], direction: str) -> str | None:
        groups = [n for n, p in declared_ports(cls).items() if p.dynamic and p.direction == direction]
        return groups[0] if len(groups) == 1 else None

    def _flatten(self, name: str, cls: type[Agent], direction: str, section: str) -> dict[str, tuple[Any, Path_, str | None]]:
        """Port name -> (binding value, path in file, dynamic group or None)."""
        ports = declared_ports(cls)
        entries: dict[str, tuple[Any, Path_, str | None]] = {}
        raw = getattr(self.agent_specs[name], section)
        for port, value in raw.items():
            path: Path_ = ("agents", name, section, port)
            declared = ports.get(port)
            if declared is not None and declared.direction == direction and declared.dynamic:
                if not isinstance(value, dict) or "from" in value or "stream" in value:
                    self.fail(path, f"{port!r} is a set of ports: give a mapping of port names to bindings")
                    continue
                for sub, sub_value in value.items():
                    self._add_dynamic(entries, ports, str(sub), (sub_value, path + (sub,), port), name)
            elif declared is not None and declared.direction == direction:
                entries[str(port)] = (value, path, None)
            else:
                group = self._group_for(cls, direction)
                if group is None or (declared is not None):
                    names = sorted(n for n, p in ports.items() if p.direction == direction)
                    self.fail(path, f"{cls.__name__} has no {direction} port {port!r} (its {direction}s: {', '.join(names) or 'none'})", key=True)
                    continue
                self._add_dynamic(entries, ports, str(port), (value, path, group), name)
        return entries

    def _add_dynamic(self, entries: dict[str, tuple[Any, Path_, str | None]], ports: dict[str, Any], port: str,
                     entry: tuple[Any, Path_, str | None], agent: str) -> None:
        """Add a port of a dynamic set: its name must be new among the agent's ports."""
        path = entry[1]
        if not _NAME.match(port) or "." in port:
            self.fail(path, f"bad port name {port!r}: use letters, digits, '_' and '-'", key=True)
        elif port in entries or port in ports or port in self._port_names.get(agent, {}):
            first = self._port_names.get(agent, {}).get(port) or entries.get(port, (None, path))[1]
            self.fail(path, f"port name {port!r} of agent {agent!r} is already used ({yaml_source.format_path(first)}): "
                            "port names must be unique across an agent's inputs and outputs", key=True)
        else:
            entries[port] = entry
            self._port_names.setdefault(agent, {})[port] = path

    def _declared(self, cls: type[Agent], port: str, group: str | None) -> type | None:
        """The payload type of a port: its own, or its dynamic set's."""
        declared = declared_ports(cls).get(group or port)
        return declared.type if declared is not None else None

    def _outputs(self, classes: dict[str, type[Agent]]) -> tuple[dict[str, dict[str, OutputBinding]], dict[str, dict[str, tuple[str, ...]]]]:
        outputs: dict[str, dict[str, OutputBinding]] = {}
        groups: dict[str, dict[str, list[str]]] = {}
        writers: dict[StreamRef, tuple[str, str, Path_]] = {}
        for name, cls in classes.items():
            outputs[name], groups[name] = {}, {}
            home = self._home_instance(name)
            entries = self._flatten(name, cls, "output", "outputs")
            for port, p in declared_ports(cls).items():
                if p.direction == "output" and not p.dynamic and port not in entries:
                    entries[port] = (None, ("agents", name), None)
            for port, (value, path, group) in entries.items():
                if group is not None:
                    groups[name].setdefault(group, []).append(port)
                    self._output_groups[(name, port)] = group
                binding = self._output_binding(name, port, value, path, home, cls)
                if binding is None:
                    continue
                previous = writers.get(binding.stream)
                if previous is not None:
                    self.fail(path, f"stream {binding.stream} is already written by {previous[0]}.{previous[1]}: one writer per stream")
                    continue
                writers[binding.stream] = (name, port, path)
                outputs[name][port] = binding
        self.writers = writers
        return outputs, {a: {g: tuple(v) for g, v in gs.items()} for a, gs in groups.items()}

    def _output_binding(self, agent: str, port: str, value: Any, path: Path_, home: str, cls: type[Agent]) -> OutputBinding | None:
        declared = declared_ports(cls).get(port)
        default_maxlen = getattr(declared, "maxlen", None) or DEFAULT_MAXLEN
        default_index = getattr(declared, "index", DEFAULT_INDEX_FIELD)
        default_key = f"{self.spec.name}.{agent}.{port}"
        if value is None:
            return OutputBinding(port, StreamRef(home, default_key), default_maxlen, index=default_index)
        if isinstance(value, str):
            ref = self._stream_ref(value, path)
            return None if ref is None else OutputBinding(port, ref, default_maxlen, index=default_index)
        if isinstance(value, dict):
            try:
                out = OutputSpec.model_validate(value)
            except ValidationError as exc:
                self._pydantic(exc, path)
                return None
            instance = out.redis or home
            if instance not in self.spec.redis:
                self.fail(path + ("redis",), f"unknown Redis instance {instance!r} (known: {_known(self.spec.redis)})")
                return None
            return OutputBinding(port, StreamRef(instance, out.stream or default_key), out.maxlen or default_maxlen,
                                 out.max_bytes or DEFAULT_MAX_BYTES,
                                 out.index if "index" in out.model_fields_set else default_index,
                                 out.index_ttl or DEFAULT_INDEX_TTL)
        self.fail(path, "an output binding is 'instance:stream' or a mapping with redis, stream, maxlen")
        return None

    def _stream_ref(self, text: str, path: Path_) -> StreamRef | None:
        instance, sep, key = text.partition(":")
        if not sep or not instance or not key:
            self.fail(path, f"bad stream {text!r}: write 'instance:stream-key'")
            return None
        if instance not in self.spec.redis:
            self.fail(path, f"unknown Redis instance {instance!r} in {text!r} (known: {_known(self.spec.redis)})")
            return None
        return StreamRef(instance, key)

    def _inputs(self, classes: dict[str, type[Agent]], outputs: dict[str, dict[str, OutputBinding]],
                groups: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, dict[str, InputBinding]]:
        result: dict[str, dict[str, InputBinding]] = {}
        for name, cls in classes.items():
            result[name] = {}
            for port, (value, path, group) in self._flatten(name, cls, "input", "inputs").items():
                if group is not None:
                    groups[name] = {**groups[name], group: groups[name].get(group, ()) + (port,)}
                if isinstance(value, str):
                    value = {"from": value}
                if not isinstance(value, dict):
                    self.fail(path, "an input binding is 'agent.port', 'instance:stream', or a mapping with 'from'")
                    continue
                try:
                    spec = InputSpec.model_validate(value)
                except ValidationError as exc:
                    self._pydantic(exc, path)
                    continue
                from_path = path + ("from",) if path + ("from",) in self.src.values else path
                located = self._locate_source(spec.from_, from_path, classes, outputs)
                if located is None:
                    continue
                stream, source = located
                if source is not None and source[0] == name:
                    self.fail(from_path, f"agent {name!r} reads its own output {source[0]}.{source[1]}: "
                                         "each message it sends would come back to it, without end")
                    continue
                if source is not None:
                    out_decl = self._declared(classes[source[0]], source[1], self._output_groups.get(source))
                    in_decl = self._declared(cls, port, group)
                    reason = incompatibility(out_decl, in_decl)
                    if reason:
                        self.fail(from_path, f"{source[0]}.{source[1]} sends {type_name(out_decl)} "
                                             f"but {name}.{port} takes {type_name(in_decl)}: {reason}")
                result[name][port] = InputBinding(port, stream, spec, source)
        return result

    def _locate_source(self, text: str, path: Path_, classes: dict[str, type[Agent]],
                       outputs: dict[str, dict[str, OutputBinding]]) -> tuple[StreamRef, tuple[str, str] | None] | None:
        if ":" in text:
            ref = self._stream_ref(text, path)
            if ref is None:
                return None
            writer = self.writers.get(ref)
            return ref, (writer[0], writer[1]) if writer else None
        agent, sep, port = text.partition(".")
        if not sep:
            self.fail(path, f"bad input {text!r}: write 'agent.port' or 'instance:stream-key'")
            return None
        if agent not in self.spec.agents:
            self.fail(path, f"input from unknown agent {agent!r} (agents: {_known(self.spec.agents)})")
            return None
        if agent not in classes:
            return None  # its type is already reported
        binding = outputs.get(agent, {}).get(port)
        if binding is None and ("agents", agent, "outputs", port) in self.src.keys:
            return None  # the output's own binding is wrong, and already reported
        if binding is None:
            names = sorted(outputs.get(agent, {}))
            self.fail(path, f"agent {agent!r} has no output port {port!r} (its outputs: {', '.join(names) or 'none'})")
            return None
        return binding.stream, (agent, port)

    def _cycles(self, inputs: dict[str, dict[str, InputBinding]]) -> None:
        """Refuse loops of agents: a message that can come back to where it started keeps
        the agents busy forever. A loop the graph means (a feedback or rework path) is
        accepted when one of its inputs says ``cycle: true``; that input is left out here."""
        edges: dict[str, list[tuple[str, InputBinding]]] = {name: [] for name in inputs}
        for name, bindings in inputs.items():
            for binding in bindings.values():
                if binding.source is not None and binding.source[0] != name and not binding.spec.cycle:
                    edges.setdefault(binding.source[0], []).append((name, binding))
        for cycle in _find_cycles(edges):
            # Report at the input of the cycle written last: the one that closes it, read top-down.
            paths = [self._input_path(reader, b) for reader, b in cycle]
            at = max(paths, key=lambda p: self.src.where(p))
            names = " -> ".join([cycle[0][1].source[0]] + [reader for reader, _ in cycle])  # type: ignore[index]
            self.fail(at, f"agents {names} form a cycle: messages would circulate forever; if the loop is "
                          "intended, mark one of its inputs with 'cycle: true' ({from: agent.port, cycle: true})")

    def _input_path(self, agent: str, binding: InputBinding) -> Path_:
        """Where an input's ``from`` is written (a port of a set may be grouped under its name)."""
        path = self._port_names.get(agent, {}).get(binding.port, ("agents", agent, "inputs", binding.port))
        return path + ("from",) if path + ("from",) in self.src.values else path

    def _required_inputs(self, classes: dict[str, type[Agent]], inputs: dict[str, dict[str, InputBinding]]) -> None:
        for name, cls in classes.items():
            for port, p in declared_ports(cls).items():
                if p.direction == "input" and not p.dynamic and getattr(p, "required", True) and port not in inputs.get(name, {}):
                    if ("agents", name, "inputs", port) in self.src.keys:
                        continue  # bound, but the binding itself was reported
                    self.fail(("agents", name), f"required input {port!r} of agent {name!r} is not connected")

    def _wiring(self, classes: dict[str, type[Agent]], settings: dict[str, BaseModel],
                inputs: dict[str, dict[str, InputBinding]], outputs: dict[str, dict[str, OutputBinding]]) -> None:
        """The agents' own checks of their params against the ports wired (``Agent.check_wiring``),
        for each agent whose entry has no problem reported already (it would only echo it)."""
        reported = {p.path.split(".")[1] for p in self.problems + self.src.problems
                    if p.path.startswith("agents.") and "." in p.path}
        for name, cls in classes.items():
            if name in reported or name not in settings:
                continue
            try:
                found = cls.check_wiring(settings[name], frozenset(inputs.get(name, {})), frozenset(outputs.get(name, {})))
                for exc in found:
                    self.fail(("agents", name, "params", *exc.path), f"agent {name!r}: {exc}")
            except Exception as exc:  # noqa: BLE001 - the agent's own code may raise anything
                self.fail(("agents", name, "params"), f"the wiring of {cls.__name__} could not be checked: "
                                                      f"{registry.describe_error(exc, _module_file(cls))}")


def _known(mapping: dict[str, Any]) -> str:
    return ", ".join(sorted(mapping))


def _module_file(cls: type) -> str | None:
    """The file an agent class was defined in, to point at the agent's own failing line."""
    return getattr(sys.modules.get(cls.__module__), "__file__", None)


def _find_cycles(edges: dict[str, list[tuple[str, InputBinding]]]) -> list[list[tuple[str, InputBinding]]]:
    """One cycle (as the edges followed) per strongly connected group of agents.

    Iterative (Tarjan), so a graph of thousands of agents needs no deep recursion.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in list(edges):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i][0]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    cycles = []
    for group in groups:
        start = min(group, key=lambda n: index[n])
        cycles.append(_path_back(start, group, edges))
    return cycles


def _path_back(start: str, group: set[str], edges: dict[str, list[tuple[str, InputBinding]]]) -> list[tuple[str, InputBinding]]:
    """The shortest way from ``start`` round to itself inside its group (breadth first)."""
    came: dict[str, tuple[str, InputBinding] | None] = {start: None}
    queue = [start]
    for node in queue:
        for nxt, binding in edges.get(node, []):
            if nxt not in group:
                continue
            if nxt == start:
                path = [(nxt, binding)]
                while node != start:
                    prev = came[node]
                    assert prev is not None
                    path.append((node, prev[1]))
                    node = prev[0]
                return path[::-1]
            if nxt not in came:
                came[nxt] = (node, binding)
                queue.append(nxt)
    return []


# --- where each Redis instance is ---------------------------------------------------------


def env_name(instance: str) -> str:
    return "GRAPHRUN_REDIS_" + re.sub(r"[^A-Za-z0-9]", "_", instance).upper()


def state_dir(graph: Graph) -> Path:
    """Where the launcher keeps a graph's Redis data and the URLs it started (its run
    record): ``.graphrun/<name>`` beside the graph file, so that every command finds a
    running graph from the graph file alone, whatever the working directory
    (``GRAPHRUN_STATE_DIR`` moves it)."""
    base = os.environ.get("GRAPHRUN_STATE_DIR")
    if base:
        return Path(base) / graph.name
    return Path(graph.file).resolve().parent / ".graphrun" / graph.name


def redis_url(graph: Graph, instance: str, overrides: dict[str, str] | None = None) -> str:
    """The URL of a Redis instance: command line, graph file, environment, or a running launcher.

    A ``rediss://`` URL of an instance with ``tls`` gets the certificate files as redis-py's
    ``ssl_*`` parameters, so every client of the instance speaks TLS with them."""
    return with_tls(graph, instance, _located_url(graph, instance, overrides))


def with_tls(graph: Graph, instance: str, url: str) -> str:
    """``url`` with the instance's ``tls`` files as ``ssl_*`` query parameters (rediss:// only)."""
    spec = graph.redis.get(instance)
    if spec is None or spec.tls is None or urlsplit(url).scheme != "rediss" or "ssl_ca_certs=" in url:
        return url
    here = Path(graph.file).resolve().parent
    files = {"ssl_ca_certs": spec.tls.ca, "ssl_certfile": spec.tls.cert, "ssl_keyfile": spec.tls.key}
    params = {k: str(here / v) for k, v in files.items() if v}
    params.update(ssl_cert_reqs="required", ssl_check_hostname=str(spec.tls.check_hostname).lower())
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _located_url(graph: Graph, instance: str, overrides: dict[str, str] | None = None) -> str:
    if overrides and instance in overrides:
        return overrides[instance]
    spec = graph.redis.get(instance)
    if spec is None:
        raise ConfigError(f"graph {graph.name!r} has no Redis instance {instance!r}")
    if spec.url:
        return spec.url
    from_env = os.environ.get(env_name(instance))
    if from_env:
        return from_env
    recorded = state_dir(graph) / "redis.json"
    try:
        urls = json.loads(recorded.read_text())
        return urls[instance]
    except (OSError, ValueError, KeyError):
        pass
    raise ConfigError(
        f"Redis instance {instance!r} has no url: give one in the graph, set {env_name(instance)}, "
        f"pass --redis {instance}=URL, or start the graph with `graphrun run`"
    )
