"""The MQTT agent's parameters: broker, topics per port, Sparkplug B, validated from the graph.

Everything that can be wrong in the graph is refused here, by pydantic, so that
``graphrun validate`` names the file, line and key: a wildcard in a topic the agent
publishes to, a malformed topic filter, a retained message in Sparkplug mode (the
specification forbids it), a plain topic missing where there is no Sparkplug.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..shorthand import string_means

#: MQTT topic names and filters are at most 65535 bytes of UTF-8 (MQTT 3.1.1, 4.7.3).
MAX_TOPIC_BYTES = 65535


def check_topic(topic: str) -> str:
    """A topic the agent publishes to: no wildcards, no NUL, not empty."""
    _check_text(topic)
    if "+" in topic or "#" in topic:
        raise ValueError(f"topic {topic!r} has a wildcard ('+' or '#'): a message is published to one topic")
    return topic


def check_filter(topic: str) -> str:
    """A topic filter the agent subscribes to: '+' fills a whole level, '#' only the last one."""
    _check_text(topic)
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {topic!r}: '#' must be a whole level, the last one")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic!r}: '+' must be a whole level")
    return topic


def _check_text(topic: str) -> None:
    if not topic:
        raise ValueError("a topic may not be empty")
    if "\x00" in topic:
        raise ValueError(f"topic {topic!r} contains a NUL character")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is longer than {MAX_TOPIC_BYTES} bytes")


def _sparkplug_id(value: str) -> str:
    """Sparkplug ids are topic levels: no '/', '+' or '#' (Sparkplug 3.0, 4.1.1)."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"{value!r} is not a Sparkplug id: it must be non-empty, without '/', '+' or '#'")
    return value


class Publish(BaseModel):
    """Where one input port's messages go. A plain string in the graph is the topic."""

    model_config = ConfigDict(extra="forbid")

    topic: str | None = Field(None, description="the MQTT topic; required unless the agent speaks Sparkplug B")
    retain: bool = Field(False, description="the broker keeps the last message for new subscribers")

    _shorthand = string_means("topic")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value)


class Subscribe(BaseModel):
    """Which topics feed one output port. A plain string in the graph is the topic filter."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description="an MQTT topic filter ('+' and '#' wildcards allowed)")
    format: Literal["json", "text", "bytes"] = Field(
        "json", description="how the MQTT payload is read: JSON, UTF-8 text, or raw bytes (a uint8 array)")

    _shorthand = string_means("topic")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_filter(value)


class Sparkplug(BaseModel):
    """Sparkplug B identity: published data goes to spBv1.0/<group_id>/NDATA/<edge_node_id>
    (or DDATA/<edge_node_id>/<device_id> with a device)."""

    model_config = ConfigDict(extra="forbid")

    group_id: str
    edge_node_id: str
    device_id: str | None = Field(None, description="publish as this device (DBIRTH/DDATA) instead of as the node")

    @field_validator("group_id", "edge_node_id", "device_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else _sparkplug_id(value)


class Tls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(None, description="CA certificates to verify the broker with (default: the system's)")
    cert_file: str | None = Field(None, description="client certificate, for brokers that require one")
    key_file: str | None = None
    insecure: bool = Field(False, description="skip the check of the broker's host name (test rigs only)")

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="the broker's host name or address")
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, description="MQTT client id; default graphrun-<graph>-<agent>. The broker "
                                  "keeps subscriptions and unacknowledged messages under it across restarts")
    username: str | None = None
    password_secret: str | None = Field(
        None, description="name of the secret holding the password: env GRAPHRUN_<NAME> or the file GRAPHRUN_<NAME>_FILE")
    tls: Tls | None = None
    keepalive: int = Field(10, ge=2, le=65535, description="seconds; a dead broker link is noticed within 1.5 times it")
    connect_timeout: float = Field(2.0, gt=0, description="seconds to wait for the broker's CONNACK")
    # Declared before publish: publish's check reads it.
    sparkplug: Sparkplug | None = Field(None, description="publish Sparkplug B payloads, births and deaths")
    publish: dict[str, Publish] = Field(default_factory=dict, description="input port -> topic")
    subscribe: dict[str, Subscribe] = Field(default_factory=dict, description="output port -> topic filter")
    reconnect_min: float = Field(0.1, gt=0, description="first delay before reconnecting to an unreachable broker")
    reconnect_max: float = Field(2.0, gt=0, description="longest delay between reconnection attempts")
    max_inflight: int = Field(100, ge=1, le=65535, description="messages published and not yet acknowledged by the broker")
    max_queue: int = Field(10_000, ge=1, description="messages kept while the broker is away; beyond it, new ones wait in Redis")
    max_bytes: int = Field(256 << 10, ge=1, description="largest payload published; a bigger message is dead-lettered")

    @field_validator("publish")
    @classmethod
    def _topics(cls, publish: dict[str, Publish], info: ValidationInfo) -> dict[str, Publish]:
        sparkplug = info.data.get("sparkplug")
        for port, spec in publish.items():
            if sparkplug is None and spec.topic is None:
                raise ValueError(f"publish.{port}: give a topic (or a sparkplug section, which names the topics)")
            if sparkplug is not None and spec.retain:
                raise ValueError(f"publish.{port}: Sparkplug B messages are never retained (the specification "
                                 "requires retain false); use a plain topic for a retained last value")
            if sparkplug is not None and spec.topic is not None:
                raise ValueError(f"publish.{port}: in Sparkplug B mode the topic is spBv1.0/<group>/NDATA/<node>; "
                                 "leave topic out")
        return publish

    @model_validator(mode="after")
    def _apart(self) -> MqttParams:
        both = set(self.publish) & set(self.subscribe)
        if both:
            raise ValueError(f"port {sorted(both)[0]!r} is both published and subscribed: name them apart")
        return self
