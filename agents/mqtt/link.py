"""The link to one MQTT broker, with paho-mqtt: one client per connection, paho's network thread, no auto-reconnect.

Each connection gets a fresh paho client and a generation number. When the link dies,
the client is dropped with everything it had in flight: the agent keeps its own list of
unacknowledged messages and publishes them again on the next connection, after the
Sparkplug births of that session. (paho's own retransmission would resend them before
the new births, with stale Sparkplug sequence numbers.)

Threads: paho's network thread (``loop_start``, which makes ``publish`` safe to call from
the agent's thread: it only queues) runs the callbacks, which only fill ``acked`` and
``incoming`` and set flags; the agent's thread calls everything else. Subscribed messages are received with manual
acknowledgement: the PUBACK goes out only when the agent says so, after Redis has them.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..errors import BrokerUnreachable
from .config import Tls

log = logging.getLogger("graphrun.agent.mqtt")

@dataclass(frozen=True)
class Incoming:
    """One message the broker delivered; ``ack`` it once Redis holds what was made of it."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    mid: int
    generation: int


class BrokerLink:
    def __init__(self, *, host: str, port: int, client_id: str, keepalive: int, connect_timeout: float,
                 username: str | None = None, password: str | None = None, tls: Tls | None = None,
                 max_inflight: int = 100):
        self.where = f"MQTT broker {host}:{port}"
        self._host, self._port = host, port
        self._client_id = client_id
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._username, self._password = username, password
        self._tls = tls
        self._max_inflight = max_inflight
        self.generation = 0
        self._client: mqtt.Client | None = None
        self._dropped = False  # the current connection was closed on purpose
        self._lock = threading.Lock()
        self._acked: set[int] = set()
        self.incoming: queue.Queue[Incoming] = queue.Queue()
        self._lost: str | None = None  # why the current connection ended, set by the network thread
        self._connack = threading.Event()
        self._connack_code: mqtt.ReasonCode | None = None
        self._suback = threading.Event()
        self._suback_codes: list[mqtt.ReasonCode] = []

    # --- connection ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._lost is None

    @property
    def lost(self) -> str | None:
        """Why the current connection ended, once the network thread saw it end (None again after ``close``)."""
        return self._lost if self._client is not None else None

    def connect(self, will: tuple[str, bytes] | None = None) -> None:
        """Open a new connection (the old one is dropped); raises BrokerUnreachable."""
        self.close()
        self.generation += 1
        generation = self.generation
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=False,
                             protocol=mqtt.MQTTv311, reconnect_on_failure=False, manual_ack=True)
        client.connect_timeout = self._connect_timeout
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(0)  # unlimited: the agent bounds what it publishes itself
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            client.tls_set(ca_certs=self._tls.ca_file, certfile=self._tls.cert_file, keyfile=self._tls.key_file,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(self._tls.insecure)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=False)
        client.on_connect = lambda c, u, flags, code, props: self._on_connack(code)
        client.on_disconnect = lambda c, u, flags, code, props: self._on_disconnect(generation, code)
        client.on_publish = lambda c, u, mid, code, props: self._on_puback(generation, mid)
        client.on_message = lambda c, u, m: self._on_message(generation, m)
        client.on_subscribe = lambda c, u, mid, codes, props: self._on_suback(codes)
        self._connack.clear()
        self._connack_code = None
        self._lost = None
        self._dropped = False
        with self._lock:
            self._acked.clear()
        try:
            client.connect(self._host, self._port, keepalive=self._keepalive)
        except (OSError, ValueError) as exc:
            raise BrokerUnreachable(f"cannot connect to {self.where}: {exc}") from exc
        self._client = client
        client.loop_start()
        answered = self._connack.wait(self._connect_timeout)
        code = self._connack_code
        if answered and code is not None and code.is_failure:  # the broker closes the link after it, too
            self.close()
            raise BrokerUnreachable(f"{self.where} refused the connection: {code}")
        if not answered or self._lost is not None:
            why = self._lost or f"no CONNACK within {self._connect_timeout} s"
            self.close()
            raise BrokerUnreachable(f"cannot connect to {self.where}: {why}")

    def subscribe(self, filters: list[str]) -> None:
        """Subscribe with QoS 1 and wait for the broker's SUBACK; a refused filter is an error."""
        if not filters:
            return
        client = self._require()
        self._suback.clear()
        rc, _ = client.subscribe([(f, 1) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerUnreachable(f"subscribing at {self.where} failed: {mqtt.error_string(rc)}")
        if not self._suback.wait(self._connect_timeout):
            raise BrokerUnreachable(f"{self.where} did not answer the subscription within {self._connect_timeout} s")
        refused = [f for f, code in zip(filters, self._suback_codes) if code.is_failure]
        if refused:
            raise BrokerUnreachable(f"{self.where} refused the subscription to {', '.join(refused)}")

    def close(self, last: tuple[str, bytes] | None = None) -> None:
        """Drop the connection; ``last`` is published first (an NDEATH), when the link is up."""
        client, self._client = self._client, None
        if client is None:
            return
        self._dropped = True  # its end is not a loss to report
        if self._lost is None:
            if last is not None:
                info = client.publish(last[0], last[1], qos=1)
                try:
                    info.wait_for_publish(self._connect_timeout)
                except (RuntimeError, ValueError) as exc:
                    log.debug("the last message before disconnecting was not acknowledged: %s", exc)
            client.disconnect()
        client.loop_stop()

    # --- traffic --------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Send with QoS 1; returns the message id its PUBACK will carry."""
        info = self._require().publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerUnreachable(f"publishing to {topic} at {self.where} failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def take_acked(self) -> set[int]:
        """Message ids the broker acknowledged (PUBACK) on this connection since the last call."""
        with self._lock:
            acked, self._acked = self._acked, set()
        return acked

    def ack(self, message: Incoming) -> bool:
        """Send the PUBACK of a received message; False if its connection is gone (the broker
        will deliver it again)."""
        if message.generation != self.generation or not self.connected:
            return False
        client = self._require()
        return client.ack(message.mid, message.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _require(self) -> mqtt.Client:
        if self._client is None or self._lost is not None:
            raise BrokerUnreachable(f"not connected to {self.where}: {self._lost or 'no connection'}")
        return self._client

    # --- the network thread -----------------------------------------------------------------

    def _on_disconnect(self, generation: int, code: mqtt.ReasonCode) -> None:
        if generation == self.generation and not self._dropped:
            self._lost = f"connection lost ({code})"
            self._connack.set()  # a connect still waiting learns at once

    def _on_connack(self, code: mqtt.ReasonCode) -> None:
        self._connack_code = code
        self._connack.set()

    def _on_suback(self, codes: list[mqtt.ReasonCode]) -> None:
        self._suback_codes = list(codes)
        self._suback.set()

    def _on_puback(self, generation: int, mid: int) -> None:
        if generation == self.generation:
            with self._lock:
                self._acked.add(mid)

    def _on_message(self, generation: int, message: mqtt.MQTTMessage) -> None:
        self.incoming.put(Incoming(message.topic, bytes(message.payload), bool(message.retain), message.qos,
                                   message.mid, generation))
