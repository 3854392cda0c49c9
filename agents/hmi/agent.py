"""The HMI agent: a browser page with each camera's live image and verdict, and the parts.

It reads the same frame streams as the classifiers (through its own consumer group)
and their verdict streams. It keeps only a camera's last few frames, by reference:
handle() is O(1) and copies nothing, so a preview never slows the line. Images are
scaled and JPEG-encoded when a browser asks for them, in the web server's threads.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graphrun import (Agent, AgentStartError, DeadLetter, Deployment, GraphHealth, Inputs, Message, Output,
                      RedisAccess, operator_token)

from ..errors import AgentConfigError, PreviewError
from ..messages import Frame, OperatorEvent, Verdict
from .access import OPERATOR_TOKEN, Access, is_local
from .desk import DeskClosed, OperatorDesk
from .params import REASON_LENGTH, HmiParams
from .preview import PreviewCache
from .server import HmiServer, Site
from .state import ActionRefused, LiveState

PAGE = Path(__file__).parent / "static" / "index.html"


class HmiAgent(Agent):
    """Serves the operator's page; see agents/hmi/README.md."""

    frames = Inputs(Frame, doc="one port per camera; each tile shows the camera's newest judged frame")
    verdicts = Inputs(Verdict, doc="one port per camera view; a part is complete when every one has answered")
    operator_events = Output(OperatorEvent, doc="acknowledged rejects, counter resets, reject-rate alarms")

    Params = HmiParams
    params: HmiParams
    tick_interval = 0.1  # operator events are sent from the agent's thread, in tick

    @classmethod
    def deployment(cls, params: HmiParams) -> Deployment:
        """The container gets the operator token (acknowledging, resetting; required beyond this machine)."""
        return replace(super().deployment(params), secrets=(OPERATOR_TOKEN,))

    @classmethod
    def redis_access(cls, params: HmiParams, *, graph: str, agent: str, home: str) -> RedisAccess:
        """The page shows every agent's heartbeat and every stream's backlog: it reads what
        ``graphrun status`` reads."""
        return RedisAccess(observe=True)

    def start(self) -> None:
        if not self.frames and not self.verdicts:
            raise AgentConfigError(f"hmi agent {self.name!r} has no inputs: connect frames, verdicts or both")
        p = self.params
        token = operator_token()
        if token is None and not is_local(p.host):
            raise AgentStartError(
                f"the HMI would listen on {p.host!r}, beyond this machine, with no operator token: set "
                "GRAPHRUN_OPERATOR_TOKEN (or GRAPHRUN_OPERATOR_TOKEN_FILE), or listen on 127.0.0.1"
            )
        self.live = LiveState(views=len(self.verdicts), history=p.history, incomplete_after=p.incomplete_after,
                              ports=self.frames, window=p.reject_window, alarm=p.reject_alarm)
        self.previews = PreviewCache(p.preview_width, p.jpeg_quality)
        self.health = GraphHealth(self)  # every agent's heartbeat and every stream's lag, as graphrun status
        self.desk = OperatorDesk()
        access = Access(token, view_needs_token=not is_local(p.host))
        site = Site(PAGE.read_bytes(), self._state, self._jpeg, self._next_jpeg, self.live.camera_names,
                    self.live.wait_changed, self._act, access,
                    stream_interval=1.0 / p.stream_fps, push_interval=p.refresh_ms / 1000)
        self.server = HmiServer(site, host=p.host, port=p.port, log=self.log)
        self.server.start()
        self.status["url"] = self.server.url
        self.log.info("HMI for %s at %s (%s)", ", ".join(self.frames) or "no cameras", self.server.url,
                      "operator token set" if token else "no operator token: acknowledging and resetting are off")
        if token and not self.operator_events.connected:
            self.log.warning("operator_events is not connected in the graph: acknowledgements, resets and "
                             "alarms are shown on the page but recorded nowhere")

    def stop(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
        desk = getattr(self, "desk", None)
        if desk is not None:
            desk.close()
        health = getattr(self, "health", None)
        if health is not None:
            health.close()

    def tick(self) -> None:
        self.desk.tick(self._send_event)

    def _send_event(self, event: dict[str, Any], parent: Message | None) -> None:
        self.operator_events.send(event, parent=parent)

    def handle(self, msg: Message) -> None:
        # Frames and verdicts meet by the camera name they carry: port names are the graph's to choose.
        camera = str(msg.get("camera") or msg.port)
        if msg.port in self.frames:
            try:
                self.live.add_frame(camera, msg.port, msg.payload, msg.created)
            except PreviewError as exc:
                raise DeadLetter(str(exc)) from exc  # no retry makes it an image
        else:
            alarm = self.live.add_verdict(camera, msg.payload, msg.created, source=msg)
            self.status["parts"], self.status["rejects"] = self.live.parts, self.live.rejects
            if alarm is not None:  # traced from the verdict that raised or cleared it
                window = self.live.window.view()
                self.operator_events.send(self._event("reject_rate_alarm" if alarm else "reject_rate_normal",
                                                      window=window))
                (self.log.warning if alarm else self.log.info)(
                    "reject rate %s: %d of the last %d parts", "alarm" if alarm else "back to normal",
                    window["rejects"], window["parts"])

    def _event(self, name: str, **fields: Any) -> dict[str, Any]:
        return {"event": name, "time": time.time(), "hmi": self.name, **fields}

    # --- the operator's actions, from the web server's threads ----------------------------

    def _act(self, action: str, body: dict[str, Any], client: str) -> dict[str, Any]:
        """Acknowledges a reject or resets the shift's counters; the event is written when this returns."""
        if action == "ack":
            try:
                ack = _Ack.model_validate(body)
            except ValidationError as exc:
                raise ActionRefused(400, f"acknowledge: {_problems(exc)}") from None
            codes = self.params.reason_codes
            if codes and ack.reason is not None and ack.reason not in codes:
                raise ActionRefused(400, f"reason {ack.reason!r} is not one of the reason codes {codes}")
            reject = self.live.acknowledge(ack.part_id, ack.reason)
            event = self._event("acknowledged", client=client, part_id=ack.part_id, label=reject.label,
                                reason=ack.reason)
            parent = reject.source
        elif action == "reset":
            if body:
                raise ActionRefused(400, f"reset takes no fields, not {sorted(body)}")
            event = self._event("counters_reset", client=client, shift=self.live.reset_counters())
            parent = None
        else:
            raise ActionRefused(404, f"no action {action!r}")
        try:
            self.desk.submit(event, parent)
        except (DeskClosed, TimeoutError) as exc:
            raise ActionRefused(503, f"{event['event']} is shown on the page, but its event is not confirmed "
                                     f"written: {exc}") from exc
        self.log.info("operator at %s: %s%s", client, event["event"],
                      f" part {event['part_id']} ({event['reason'] or 'no reason'})" if "part_id" in event else "")
        return event

    # --- what the web server calls, from its own threads ----------------------------------

    def _state(self) -> dict[str, Any]:
        state = self.live.snapshot()
        state.update(title=self.params.title, agent=self.name, graph=self.graph,
                     refresh_ms=self.params.refresh_ms, previews_encoded=self.previews.encoded,
                     health=self.health.snapshot(), reason_codes=self.params.reason_codes)
        return state

    def _jpeg(self, camera: str) -> bytes | None:
        frame = self.live.shown_frame(camera)
        return None if frame is None else self.previews.jpeg(frame)

    def _next_jpeg(self, camera: str, after: int, timeout: float) -> tuple[int, bytes] | None:
        frame = self.live.next_shown_frame(camera, after, timeout)
        return None if frame is None else (frame.seq, self.previews.jpeg(frame))


class _Ack(BaseModel):
    """The body of an acknowledgement."""

    model_config = ConfigDict(extra="forbid")

    part_id: int = Field(strict=True)
    reason: str | None = Field(None, min_length=1, max_length=REASON_LENGTH)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
