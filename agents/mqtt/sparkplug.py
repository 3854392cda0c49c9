"""Sparkplug B: payloads encoded with protobuf from the published schema, births, deaths, sequence numbers.

One ``EdgeNode`` per agent. Each connection to the broker is a session: its NDEATH
(set as the MQTT will, so the broker sends it when the link dies) and its NBIRTH carry
the same ``bdSeq``; the NBIRTH has ``seq`` 0 and every later message of the node
(DBIRTH, NDATA, DDATA) the next ``seq``, modulo 256, as the specification says.

A port's message becomes metrics named ``<port>/<field>`` (nested mappings as
``<port>/<field>/<key>``), typed by value: bool Boolean, int Int64 (UInt64 above
2**63-1), float Double, str String, None a null; lists and arrays travel as JSON text
(String). Every data message also carries ``graphrun/seq`` (the agent's own counter,
UInt64, which does not wrap) and ``graphrun/id`` (the graphrun message id): a message
published twice carries the same id. A birth declares every metric with its last
value; a message with a metric the last birth did not declare (a new field, a changed
type) is preceded by a new birth, so a host application always knows each metric.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from .config import Sparkplug
from .payloads import to_json
from .sparkplug_b_pb2 import Payload

NAMESPACE = "spBv1.0"

# Data type codes of the Sparkplug B specification (the comment in sparkplug_b.proto).
INT64 = 4
UINT64 = 8
DOUBLE = 10
BOOLEAN = 11
STRING = 12

REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"

Message = tuple[str, bytes]  # (topic, payload)


def now_ms() -> int:
    return int(time.time() * 1000)


def set_value(metric: Payload.Metric, value: Any, datatype: int | None = None) -> None:
    """Type ``metric`` by ``value`` (or keep ``datatype`` for a null) and store the value."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        metric.datatype = datatype or STRING
        metric.is_null = True
    elif isinstance(value, bool):
        metric.datatype = BOOLEAN
        metric.boolean_value = value
    elif isinstance(value, int) and -(1 << 63) <= value < (1 << 64):
        metric.datatype = INT64 if value < (1 << 63) else UINT64
        metric.long_value = value & 0xFFFF_FFFF_FFFF_FFFF  # two's complement, as the specification encodes Int64
    elif isinstance(value, float):
        metric.datatype = DOUBLE
        metric.double_value = value
    elif isinstance(value, str):
        metric.datatype = STRING
        metric.string_value = value
    else:
        metric.datatype = STRING
        metric.string_value = to_json(value).decode()


def value_of(metric: Payload.Metric) -> Any:
    """The Python value a metric holds (the inverse of ``set_value``, for readers and tests)."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    value = getattr(metric, kind) if kind else None
    if metric.datatype == INT64 and value is not None and value >= (1 << 63):
        value -= 1 << 64
    return value


def flatten(prefix: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.update(flatten(name, value))
        else:
            out[name] = value
    return out


class EdgeNode:
    """The Sparkplug B state of one edge node (and its device, if it publishes as one)."""

    def __init__(self, spec: Sparkplug):
        self.spec = spec
        base = f"{NAMESPACE}/{spec.group_id}"
        node = spec.edge_node_id
        self.topic_nbirth = f"{base}/NBIRTH/{node}"
        self.topic_ndeath = f"{base}/NDEATH/{node}"
        self.topic_ncmd = f"{base}/NCMD/{node}"
        device = spec.device_id
        self.topic_dbirth = f"{base}/DBIRTH/{node}/{device}" if device else None
        self.topic_data = f"{base}/DDATA/{node}/{device}" if device else f"{base}/NDATA/{node}"
        self.bd_seq = -1  # the first session is 0
        self._established = False
        self._seq = 0
        self._metrics: dict[str, Payload.Metric] = {}  # every metric seen, with its last value
        self._declared: dict[str, int] = {}  # name -> datatype, as the last birth declared them

    # --- sessions ---------------------------------------------------------------------

    def new_session(self) -> Message:
        """The NDEATH of the next connection's session, its MQTT will. ``bdSeq`` moves on
        only once a session was established: attempts the broker never accepted are no session."""
        if self._established or self.bd_seq < 0:
            self.bd_seq = (self.bd_seq + 1) % 256
            self._established = False
        return self.death()

    def established(self) -> None:
        """The broker accepted the connection whose will ``new_session`` made."""
        self._established = True

    def death(self) -> Message:
        payload = Payload(timestamp=now_ms())
        self._bd_seq_metric(payload)
        return self.topic_ndeath, payload.SerializeToString()

    def births(self, *, node: bool = True) -> list[Message]:
        """The births that declare every metric with its last value: NBIRTH (seq 0 again) and,
        for a device that has metrics yet, DBIRTH. ``node=False``: the device's DBIRTH alone,
        continuing the sequence (its metrics changed; the node's did not)."""
        stamp = now_ms()
        out: list[tuple[str, Payload]] = []
        target: Payload | None = None
        if node:
            self._seq = 0
            nbirth = Payload(timestamp=stamp, seq=self._next_seq())
            self._bd_seq_metric(nbirth)
            set_value(nbirth.metrics.add(name=REBIRTH, timestamp=stamp), False)
            out.append((self.topic_nbirth, nbirth))
            target = nbirth
        if self.topic_dbirth is not None:
            if not self._metrics:
                target = None  # a device is born with its first message
            else:
                target = Payload(timestamp=stamp, seq=self._next_seq())
                out.append((self.topic_dbirth, target))
        if target is not None:
            for metric in self._metrics.values():
                target.metrics.add().CopyFrom(metric)
        self._declared = {name: m.datatype for name, m in self._metrics.items()}
        return [(topic, p.SerializeToString()) for topic, p in out]

    # --- data -----------------------------------------------------------------------------

    def metrics(self, port: str, payload: Mapping[str, Any], *, seq: int, message_id: str) -> list[Payload.Metric]:
        """The metrics of one port message, timestamped now; nothing is sent or declared yet."""
        stamp = now_ms()
        values = flatten(port, payload)
        values["graphrun/seq"] = seq
        values["graphrun/id"] = message_id
        metrics = []
        for name, value in values.items():
            metric = Payload.Metric(name=name, timestamp=stamp)
            known = self._metrics.get(name)
            set_value(metric, value, known.datatype if known is not None else None)
            if name == "graphrun/seq":
                metric.datatype = UINT64
            metrics.append(metric)
        return metrics

    def data(self, metrics: list[Payload.Metric]) -> list[Message]:
        """The messages that publish ``metrics``: a new birth first when they bring a metric
        the last birth did not declare (or declared with another type), then NDATA or DDATA."""
        for metric in metrics:
            self._metrics[metric.name] = metric
        out: list[Message] = []
        if any(self._declared.get(m.name) != m.datatype for m in metrics):
            out += self.births(node=self.topic_dbirth is None)
        data = Payload(timestamp=now_ms(), seq=self._next_seq())
        data.metrics.extend(metrics)
        out.append((self.topic_data, data.SerializeToString()))
        return out

    def wants_rebirth(self, raw: bytes) -> bool:
        """Whether an NCMD payload asks for a rebirth (Node Control/Rebirth = true)."""
        try:
            command = Payload.FromString(raw)
        except DecodeError as exc:
            raise ValueError(f"not a Sparkplug B payload: {exc}") from None
        return any(m.name == REBIRTH and m.boolean_value for m in command.metrics)

    # --- helpers ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    def _bd_seq_metric(self, payload: Payload) -> None:
        metric = payload.metrics.add(name=BD_SEQ, timestamp=payload.timestamp)
        metric.datatype = UINT64
        metric.long_value = self.bd_seq
