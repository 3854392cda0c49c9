"""The HMI agent: a browser page with each camera's live image and verdict, and the parts.

It reads the same frame streams as the classifiers (through its own consumer group)
and their verdict streams. It keeps only a camera's last few frames, by reference:
handle() is O(1) and copies nothing, so a preview never slows the line. Images are
scaled and JPEG-encoded when a browser asks for them, in the web server's threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphrun import Agent, DeadLetter, GraphHealth, Inputs, Message, RedisAccess

from ..errors import AgentConfigError, PreviewError
from ..messages import Frame, Verdict
from .params import HmiParams
from .preview import PreviewCache
from .server import HmiServer, Site
from .state import LiveState

PAGE = Path(__file__).parent / "static" / "index.html"


class HmiAgent(Agent):
    """Serves the operator's page; see agents/hmi/README.md."""

    frames = Inputs(Frame, doc="one port per camera; each tile shows the camera's newest judged frame")
    verdicts = Inputs(Verdict, doc="one port per camera view; a part is complete when every one has answered")

    Params = HmiParams
    params: HmiParams

    @classmethod
    def redis_access(cls, params: HmiParams, *, graph: str, agent: str, home: str) -> RedisAccess:
        """The page shows every agent's heartbeat and every stream's backlog: it reads what
        ``graphrun status`` reads."""
        return RedisAccess(observe=True)

    def start(self) -> None:
        if not self.frames and not self.verdicts:
            raise AgentConfigError(f"hmi agent {self.name!r} has no inputs: connect frames, verdicts or both")
        p = self.params
        self.live = LiveState(views=len(self.verdicts), history=p.history, incomplete_after=p.incomplete_after,
                              ports=self.frames)
        self.previews = PreviewCache(p.preview_width, p.jpeg_quality)
        self.health = GraphHealth(self)  # every agent's heartbeat and every stream's lag, as graphrun status
        page = PAGE.read_bytes()
        site = Site(page, self._state, self._jpeg, self._next_jpeg, stream_interval=1.0 / p.stream_fps)
        self.server = HmiServer(site, host=p.host, port=p.port, log=self.log)
        self.server.start()
        self.status["url"] = self.server.url
        self.log.info("HMI for %s at %s", ", ".join(self.frames) or "no cameras", self.server.url)

    def stop(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
        health = getattr(self, "health", None)
        if health is not None:
            health.close()

    def handle(self, msg: Message) -> None:
        # Frames and verdicts meet by the camera name they carry: port names are the graph's to choose.
        camera = str(msg.get("camera") or msg.port)
        if msg.port in self.frames:
            try:
                self.live.add_frame(camera, msg.port, msg.payload, msg.created)
            except PreviewError as exc:
                raise DeadLetter(str(exc)) from exc  # no retry makes it an image
        else:
            self.live.add_verdict(camera, msg.payload, msg.created)
            self.status["parts"], self.status["rejects"] = self.live.parts, self.live.rejects

    # --- what the web server calls, from its own threads ----------------------------------

    def _state(self) -> dict[str, Any]:
        state = self.live.snapshot()
        state.update(title=self.params.title, agent=self.name, graph=self.graph,
                     refresh_ms=self.params.refresh_ms, previews_encoded=self.previews.encoded,
                     health=self.health.snapshot())
        return state

    def _jpeg(self, camera: str) -> bytes | None:
        frame = self.live.shown_frame(camera)
        return None if frame is None else self.previews.jpeg(frame)

    def _next_jpeg(self, camera: str, after: int, timeout: float) -> tuple[int, bytes] | None:
        frame = self.live.next_shown_frame(camera, after, timeout)
        return None if frame is None else (frame.seq, self.previews.jpeg(frame))
