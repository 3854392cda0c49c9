"""The MQTT agent: publishes chosen ports to a broker (plain JSON or Sparkplug B) and emits subscribed topics on ports.

Delivery contract, publishing: a message is acknowledged in Redis only once the broker
has acknowledged its publication (QoS 1 PUBACK). Until then it is held; while the broker
is away the agent reconnects with backoff and keeps the publications in order, and on
the next connection it sends them again (after that session's Sparkplug births). A crash
leaves the held messages pending in Redis, to be published again on restart. A broker
that is down when the agent starts is the same case, not a failed start.

Subscribing: a message from the broker is acknowledged to the broker (PUBACK, sent by
hand) only after its output entry is written to Redis. The runner writes what a hook
sent before it calls the next hook, so the acknowledgements of one ``tick`` (or
``produce``) go out at the start of the next. Until then the broker holds the message
in the agent's session (clean session off, a fixed client id) and delivers it again
after a lost connection or a restart of the agent.
"""

from __future__ import annotations

import queue
import time

from graphrun import Agent, Backoff, Inputs, Message, Outputs, ParamError, Retry, read_secret

from ..errors import AgentConfigError, BrokerUnreachable
from ..messages import MqttMessage
from . import payloads
from .config import MqttParams
from .link import BrokerLink, Incoming
from .pending import Pending, Publication
from .sparkplug import EdgeNode, Payload, now_ms
from .topics import Routes

#: Subscribed messages handed on per tick at most, so that a flood keeps the agent responsive.
INCOMING_PER_TICK = 1000


class MqttAgent(Agent):
    """Publishes chosen ports to an MQTT broker and emits subscribed topics on output ports."""

    publish = Inputs(None, doc="one input per published port; params.publish names its topic")
    subscribe = Outputs(MqttMessage, maxlen=10_000, index=None,
                        doc="one output per subscription; params.subscribe names its topic filter")

    Params = MqttParams
    params: MqttParams
    tick_interval = 0.05

    def start(self) -> None:
        p = self.params
        self._check_ports()
        self._routes = Routes({port: spec.topic for port, spec in p.subscribe.items()})
        self._node = EdgeNode(p.sparkplug) if p.sparkplug is not None else None
        password = read_secret(p.password_secret) if p.password_secret else None
        if p.password_secret and password is None:
            raise AgentConfigError(f"mqtt agent {self.name!r}: the secret {p.password_secret!r} is not set "
                                   f"(GRAPHRUN_{p.password_secret.upper()} or GRAPHRUN_{p.password_secret.upper()}_FILE)")
        self._link = BrokerLink(host=p.host, port=p.port, client_id=p.client_id or f"graphrun-{self.graph}-{self.name}",
                                keepalive=p.keepalive, connect_timeout=p.connect_timeout, username=p.username,
                                password=password, tls=p.tls, max_inflight=p.max_inflight)
        self._pending: Pending[Message] = Pending()
        self._session = now_ms()  # names this run in plain payloads; seq starts again at 1 with it
        self._to_ack: list[Incoming] = []  # received, sent on a port, acknowledged once that is written
        self._rebirth = False
        self._reconnect = Backoff(initial=min(p.reconnect_min, p.reconnect_max), maximum=p.reconnect_max)
        self._down_since: float | None = time.monotonic()
        self._ever_up = False
        self.status.update(published=0, received=0, unreadable=0, queued=0, in_flight=0, mqtt="waiting for broker")
        self._link_up()

    @classmethod
    def check_wiring(cls, params: MqttParams, inputs: frozenset[str], outputs: frozenset[str]) -> list[ParamError]:
        """Each connected input needs a topic and each subscription a connected output:
        otherwise a message would be published nowhere, or received and dropped."""
        problems = [ParamError(("publish",), f"input {port!r} has no entry in params.publish "
                                             f"(publish: {{{port}: <topic>}})")
                    for port in sorted(inputs - set(params.publish))]
        problems += [ParamError(("subscribe", port), f"params.subscribe.{port} has no output port in the graph "
                                                     f"(outputs: {{{port}: <stream>}}); its messages would be lost")
                     for port in params.subscribe if port not in outputs]
        return problems

    def _check_ports(self) -> None:
        """The graph's check, again: an agent run without a graph file (AgentHarness) gets it too."""
        problems = self.check_wiring(self.params, frozenset(self.publish), frozenset(self.subscribe))
        if problems:
            raise problems[0]

    def stop(self) -> None:
        if not hasattr(self, "_link"):
            return
        # Publications in flight get the broker's acknowledgement, if it comes soon: what is
        # still held after that is published again by the next run (a visible duplicate).
        end = time.monotonic() + self.params.connect_timeout
        while self._pending.in_flight and self._link.connected and time.monotonic() < end:
            time.sleep(0.01)
            self._collect()
        # Received messages of the last tick are not acknowledged: their entries may not be
        # written yet. The broker delivers them again to the next run.
        self._link.close(last=self._node.death() if self._node is not None else None)

    # --- publishing ---------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if len(self._pending) >= self.params.max_queue:
            raise Retry(f"{len(self._pending)} messages are waiting for the broker", delay=self._reconnect.peek())
        port = msg.port or ""
        body = self._encode(port, msg, self._pending.next_seq)  # DeadLetter before anything is kept
        self.hold(msg)
        self._pending.add(port, msg).body = body
        try:
            self._collect()
            self._flush()
        except Exception as exc:  # the message is held and queued: a new link sends it
            self.log.exception("publishing failed")
            self._link_lost(f"publishing failed: {exc!r}")

    def _encode(self, port: str, msg: Message, seq: int) -> bytes | list[Payload.Metric]:
        """What is published for one message, checked now so that a message that can't be
        published is dead-lettered at once rather than blocking the queue."""
        limit = self.params.max_bytes
        where = f"message {msg.id} on {port!r}"
        if self._node is None:
            body = payloads.envelope(msg.payload, seq=seq, session=self._session, message_id=msg.id, now=time.time())
            payloads.check_size(body, limit, where)
            return body
        metrics = self._node.metrics(port, msg.payload, seq=seq, message_id=msg.id)
        payloads.check_size(Payload(metrics=metrics).SerializeToString(), limit, where)
        return metrics

    def _flush(self) -> None:
        """Send what waits, oldest first, while the link is up."""
        if not self._link.connected:
            return
        now = time.time()
        try:
            if self._rebirth and self._node is not None:
                self._rebirth = False
                for topic, body in self._node.births():
                    self._link.publish(topic, body)
            for publication in self._pending.to_send():
                try:
                    mids = self._send(publication)
                except BrokerUnreachable:
                    self._pending.unsent(publication)
                    raise
                self._pending.sent(publication, mids, now)
        except BrokerUnreachable as exc:
            self._link_lost(str(exc))

    def _send(self, publication: Publication[Message]) -> list[int]:
        if self._node is None:
            spec = self.params.publish[publication.port]
            assert spec.topic is not None and isinstance(publication.body, bytes)
            return [self._link.publish(spec.topic, publication.body, retain=spec.retain)]
        assert isinstance(publication.body, list)
        mids = [self._link.publish(topic, body) for topic, body in self._node.data(publication.body)]
        return mids[-1:]  # the data message's: births of this session are sent again after any reconnect

    def _collect(self) -> None:
        """Release the messages whose publication the broker acknowledged."""
        done = self._pending.acked(self._link.take_acked())
        if done:
            self.release(*(p.item for p in done))
            self.status["published"] = self.status.get("published", 0) + len(done)
            self.status["seq"] = done[-1].seq

    # --- subscribing ----------------------------------------------------------------------

    def produce(self) -> None:
        """Only for an agent with no input connected: the runner calls this in a loop."""
        try:
            first = self._link.incoming.get(timeout=self.tick_interval)
        except queue.Empty:
            first = None
        self._receive(first)

    def _receive(self, first: Incoming | None = None) -> None:
        """Acknowledge what the previous call sent (now written), then send what arrived."""
        for message in self._to_ack:
            self._link.ack(message)  # False for a connection since lost: the broker sends it again
        self._to_ack = []
        for _ in range(INCOMING_PER_TICK):
            if first is not None:
                message, first = first, None
            else:
                try:
                    message = self._link.incoming.get_nowait()
                except queue.Empty:
                    return
            if message.generation != self._link.generation:
                continue  # of a dropped connection: the broker delivers it again on this one
            if self._node is not None and message.topic == self._node.topic_ncmd:
                self._command(message)
                continue
            self._emit(message)

    def _emit(self, message: Incoming) -> None:
        port = self._routes.port(message.topic)
        if port is None:  # a subscription of an earlier run, kept by the broker in the session
            self._link.ack(message)
            return
        spec = self.params.subscribe[port]
        try:
            payload = payloads.decode(message.payload, spec.format)
        except ValueError as exc:
            self.log.warning("message on %s is not %s (%s): acknowledged and not sent on %r", message.topic,
                             spec.format, exc, port)
            self.status["unreadable"] = self.status.get("unreadable", 0) + 1
            self._link.ack(message)
            return
        out: MqttMessage = {"topic": message.topic, "payload": payload, "retain": message.retain,
                            "received": time.time()}
        self.subscribe[port].send(out)
        self._to_ack.append(message)
        self.status["received"] = self.status.get("received", 0) + 1

    def _command(self, message: Incoming) -> None:
        """NCMD: a host application asks for a rebirth."""
        assert self._node is not None
        try:
            self._rebirth = self._rebirth or self._node.wants_rebirth(message.payload)
        except ValueError as exc:  # the sender's mistake: said, and dropped
            self.log.warning("unreadable Sparkplug command on %s: %s", message.topic, exc)
        self._link.ack(message)

    # --- time and the link ------------------------------------------------------------------

    def tick(self) -> None:
        if self._link.lost is not None:
            self._link_lost(self._link.lost)
        elif self._link.connected and self._puback_overdue():
            self._link_lost(f"no PUBACK from {self._link.where} for {self._puback_limit():.0f} s")
        if not self._link.connected:
            self._link_up()
        self._collect()
        self._receive()
        self._flush()
        self.status.update(queued=self._pending.waiting, in_flight=self._pending.in_flight)
        # What the run's summary line counts (``graphrun run`` prints it when it stops).
        self.status["counts"] = {"published": self.status["published"], "received": self.status["received"]}

    def _puback_limit(self) -> float:
        return 2 * self.params.keepalive + self.params.connect_timeout

    def _puback_overdue(self) -> bool:
        """A link whose broker stopped acknowledging (a stalled broker, a network thread that
        died) is treated as lost: its publications are sent again on a new connection."""
        sent = self._pending.oldest_in_flight()
        return sent is not None and time.time() - sent > self._puback_limit()

    def _link_up(self) -> bool:
        if not self._reconnect.ready():
            return False
        p = self.params
        try:
            self._link.connect(will=self._node.new_session() if self._node is not None else None)
            if self._node is not None:
                self._node.established()
            filters = [spec.topic for spec in p.subscribe.values()]
            self._link.subscribe(filters + ([self._node.topic_ncmd] if self._node is not None else []))
        except BrokerUnreachable as exc:
            self._link_lost(str(exc))
            return False
        self._rebirth = self._node is not None  # a new session begins with its births
        if self._ever_up:
            self.log.warning("%s reconnected after %.1f s; %d message(s) to publish", self._link.where,
                             time.monotonic() - (self._down_since or time.monotonic()), len(self._pending))
        else:
            self.log.info("connected to %s; %d message(s) to publish", self._link.where, len(self._pending))
        self._down_since = None
        self._ever_up = True
        self._reconnect.reset()
        self.status["mqtt"] = "connected"
        self.status.pop("mqtt_error", None)
        self._flush()
        return True

    def _link_lost(self, why: str) -> None:
        self._link.close()
        requeued = self._pending.connection_lost()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.log.error("%s; reconnecting with backoff, %d message(s) to publish again", why, requeued)
        elif not self._ever_up and self.status.get("mqtt_error") is None:
            self.log.warning("%s; waiting for the broker (messages are held until it answers)", why)
        self._reconnect.next()
        self.status["mqtt"] = "unreachable" if self._ever_up else "waiting for broker"
        self.status["mqtt_error"] = why
