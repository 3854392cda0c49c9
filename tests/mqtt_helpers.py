"""Real MQTT parts for the MQTT agent's tests: a subscriber and a TCP gate between the agent and the broker.

The gate is a plain TCP forwarder the test opens and shuts: shut, it cuts every
connection through it at once (as an unplugged cable or a dying broker does, no MQTT
DISCONNECT sent) and refuses new ones. It lets a test order events that would
otherwise race: the test's subscriber is back on a restarted broker before the agent
may reconnect through the gate.
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from graphrun_agents.mqtt.broker import free_port


def mqtt_graph(params: str, inputs: str = "results: main:plc.results") -> str:
    """A graph file's text: graph ``line4`` with one MQTT agent, ``mqtt``, reaching a broker on
    127.0.0.1 at ``{port}``, which the test fills in with ``str.format`` (so braces in ``params``
    are doubled, as in any format string). ``params`` and ``inputs`` are YAML lines, indented here."""

    def block(lines: str) -> str:
        return textwrap.indent(textwrap.dedent(lines).strip("\n"), " " * 6) + "\n"

    return ("name: line4\nagents:\n  mqtt:\n    type: mqtt\n    params:\n      host: 127.0.0.1\n      port: {port}\n"
            + block(params) + "    inputs:\n" + block(inputs))


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that subscribes with QoS 1 and keeps everything it receives, in order."""

    def __init__(self, port: int, *topics: str, client_id: str = "", clean_session: bool = True,
                 username: str | None = None, password: str | None = None):
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self._client.on_message = self._on_message
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._port = port
        self._topics = topics

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def start(self) -> Subscriber:
        """Connect and subscribe; returns once the broker confirmed the subscription."""
        self._subscribed.clear()
        self._client.connect("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()
        self._client.subscribe([(t, 1) for t in self._topics])
        if not self._subscribed.wait(10):
            raise AssertionError("the broker did not confirm the test subscriber's subscription")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish(port: int, topic: str, payloads: list[bytes], *, retain: bool = False) -> None:
    """Publish with QoS 1 from a fresh client and wait for every PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


class Gate:
    """A TCP forwarder from ``port`` to the broker's port that the test opens and shuts."""

    def __init__(self, target: int):
        self.target = target
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)
        self._running = True
        threading.Thread(target=self._accept, daemon=True, name="gate").start()

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            if not self._open.is_set():
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._pairs.append((conn, upstream))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def shut(self) -> None:
        """Cut every connection through the gate and refuse new ones."""
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.shut()
        self._running = False
        self._server.close()

