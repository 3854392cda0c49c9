"""The camera agent: frames from a GenICam camera, OpenCV, a folder of images, or synthetic parts.

Part ids: front and back cameras give the frames of one part the same id in one of three
ways, chosen by wiring.

* Synchronised sequence (nothing connected to ``trigger``): each camera numbers its frames
  from ``part_id_start``; a frame the device dropped (a gap in its frame ids) still
  advances the number. Fits cameras fired by one hardware trigger line, and synthetic
  cameras with the same ``fps`` and ``part_id_start``. The next id is kept in the home
  Redis (``graphrun_agents.part_ids``), so a restarted camera never repeats an id; but
  it does not know how many parts passed while it was down, so two cameras numbering
  their own frames fall out of step when one restarts: shared triggering does not.
* Shared trigger counter (``trigger`` connected, ``trigger: software``): one agent (the
  ``trigger`` source, as in the shipped line) counts parts and sends ``{"part_id": n}`` on one stream; each camera reads it in its own group,
  fires (TriggerSoftware on GenICam devices; other sources take an image now) and labels
  the frame ``n``. Fits any source, and keeps the cameras in step even if one restarts.
* Part-id input (``trigger`` connected, ``trigger: hardware``): a sensor on the device's
  trigger line fires the camera; each message on ``trigger`` names the part the next frame
  belongs to. Fits a PLC or encoder that knows part ids while the line fires the cameras.

The camera never waits for its readers: ``frames`` is a bounded stream, so when
downstream is slower the oldest frames are trimmed, and each reader's health record
counts the frames it lost that way (``trimmed_before_read``).
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import NotRequired

from graphrun import (Agent, AgentStartError, Backoff, DeadLetter, Deployment, Input, Message, Output, Pacer,
                      RedisAccess, Retry)
from graphrun_agents.errors import (
    CameraConfigError,
    CameraError,
    DeviceLostError,
    FeatureError,
    GenTLProducerError,
    PixelFormatError,
)
from graphrun_agents.messages import Frame
from graphrun_agents.part_ids import PartIds, part_ids_access

from .deployment import camera_deployment
from .pixel_formats import convert
from .source import Grabbed, Source
from .synthetic import DEFECT_KINDS, SyntheticConfig

#: Errors at start that mean a wrong setting; a missing or lost device is retried instead.
_NOT_RETRYABLE = (CameraConfigError, FeatureError, GenTLProducerError, PixelFormatError)

#: Default bound of a ``frames`` stream: frames are megabytes, so keep seconds, not hours.
FRAMES_MAXLEN = 50


class PartTrigger(TypedDict):
    """A request for one frame of one part (``part_id`` omitted: the camera's own count)."""

    part_id: NotRequired[int]


class CameraParams(BaseModel):
    """Parameters of the camera agent; only those of the chosen ``source`` matter."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["genicam", "opencv", "folder", "synthetic"]
    camera: str | None = Field(None, description="camera name in the frames (default: the agent's name)")
    fps: float | None = Field(5.0, gt=0, description="frame rate of free-run sources; None: as fast as possible")
    count: int | None = Field(None, ge=0, description="stop after this many frames")
    part_id_start: int = Field(0, ge=0)
    trigger: Literal["free-run", "software", "hardware"] = "free-run"
    trigger_max_age: float | None = Field(
        None, gt=0, description="skip a trigger made longer ago than this many seconds: its part has left the camera"
    )
    trigger_part_id: Literal["optional", "required"] = Field(
        "optional", description="required: a trigger without a part_id is dead-lettered, never labelled with the "
        "camera's own count (cameras sharing a trigger must agree on every id)")
    pixel_format: str | None = Field(None, description="synthetic: Mono8 or BGR8; others: convert frames to it")
    # synthetic
    view: Literal["front", "back"] = "front"
    seed: int = 0
    width: int = Field(1280, ge=32)
    height: int = Field(1024, ge=32)
    defect_rate: float = Field(0.3, ge=0, le=1)
    distractor_rate: float = Field(0.6, ge=0, le=1)
    defect_kinds: list[str] = Field(default_factory=lambda: list(DEFECT_KINDS))
    # folder and opencv
    path: str | int | None = Field(None, description="folder or glob; video file, device index or URL")
    loop: bool = False
    # genicam
    cti: str | None = Field(None, description="GenTL producer file; 'pkg:genicam/viky.cti' for one in a package")
    device: str | None = Field(None, description="serial number, id or user-defined name (default: first)")
    features: dict[str, Any] | list[dict[str, Any]] = Field(
        default_factory=dict, description="GenICam features, set in order; a list of one-key mappings may repeat one"
    )
    timeout: float = Field(2.0, gt=0, description="seconds to wait for a frame")
    buffers: int = Field(8, ge=1, description="buffers announced to the GenTL producer")
    # device loss
    reconnect_delay: float = Field(0.5, gt=0, description="first wait before reopening a lost device")
    reconnect_max_delay: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> CameraParams:
        if self.source in ("folder", "opencv") and self.path is None:
            raise ValueError(f"source {self.source!r} needs path (a folder or glob, or a video file, device index or URL)")
        if self.features and self.source != "genicam":
            raise ValueError(f"features are GenICam features; source {self.source!r} takes none")
        if self.trigger == "hardware" and self.source != "genicam":
            raise ValueError(f"trigger 'hardware' needs source 'genicam', not {self.source!r}")
        if self.source == "synthetic":
            try:
                self.synthetic_config()
            except CameraConfigError as exc:
                raise ValueError(str(exc)) from None
        elif self.pixel_format not in (None, "Mono8", "BGR8"):
            raise ValueError(f"pixel_format converts frames to Mono8 or BGR8, not {self.pixel_format!r}")
        return self

    def synthetic_config(self) -> SyntheticConfig:
        return SyntheticConfig(
            width=self.width, height=self.height, view=self.view, seed=self.seed,
            defect_rate=self.defect_rate, distractor_rate=self.distractor_rate,
            defect_kinds=tuple(self.defect_kinds), pixel_format=self.pixel_format or "Mono8",
        )


def make_source(params: CameraParams) -> Source:
    """The source ``params`` describe (imports only what that source needs)."""
    if params.source == "synthetic":
        from .synthetic_source import SyntheticSource

        return SyntheticSource(params.synthetic_config())
    path = params.path
    if params.source in ("folder", "opencv"):
        if path is None:
            raise CameraConfigError(f"source {params.source!r} needs path")
        if params.source == "folder":
            from .folder_source import FolderSource

            return FolderSource(str(path), loop=params.loop)
        from .opencv_source import OpenCVSource

        return OpenCVSource(path, loop=params.loop, timeout=params.timeout)
    from .genicam_source import GenICamSource

    return GenICamSource(
        cti=params.cti, device=params.device, features=params.features, trigger=params.trigger,
        timeout=params.timeout, buffers=params.buffers, fps=params.fps,
    )


class CameraAgent(Agent):
    """Acquires images and sends them, with their metadata, on ``frames``."""

    frames = Output(Frame, maxlen=FRAMES_MAXLEN, doc="images with camera, part id, counters, timing and format")
    trigger = Input(PartTrigger, required=False, doc="one frame per message, for the part it names")

    Params = CameraParams
    params: CameraParams

    @classmethod
    def deployment(cls, params: CameraParams) -> Deployment:
        return camera_deployment(params)

    @classmethod
    def redis_access(cls, params: CameraParams, *, graph: str, agent: str, home: str) -> RedisAccess:
        """Its next part id (a camera numbering its own frames), kept on its home Redis."""
        return RedisAccess(grants=(part_ids_access(graph, agent, home),))

    def start(self) -> None:
        self._source = make_source(self.params)
        self._camera = self.params.camera or self.name
        self._frame = 0
        self._ids = PartIds.of(self, self.params.part_id_start)
        self._skipping = False  # in a run of stale triggers: warned once for the run
        self._pace = Pacer(self.params.fps)
        # A cap below the first delay makes every reopen wait the cap.
        self._reconnect = Backoff(initial=min(self.params.reconnect_delay, self.params.reconnect_max_delay),
                                  maximum=self.params.reconnect_max_delay)
        self._window = (time.monotonic(), 0)
        self.status.update(
            source=self.params.source, state="opening", frames=0, lost=0, reconnects=0, missed_triggers=0,
            stale_triggers=0,
            incomplete=0, dropped=0, unreadable=0,
        )
        try:
            self._source.open()
        except _NOT_RETRYABLE as exc:
            # No restart fixes a wrong setting: AgentStartError tells the launcher to give up.
            raise AgentStartError(f"{type(exc).__name__}: {exc}") from exc
        self._open = True
        self.status.update(state="acquiring", device=self._source.info)

    def stop(self) -> None:
        source = getattr(self, "_source", None)
        if source is not None:
            source.close()
            self.status["state"] = "stopped"

    # --- acquisition ----------------------------------------------------------------------

    def produce(self) -> None:
        if self._finished():
            self.wait(0.5)
            return
        if not self._ensure_open():
            return
        if self._source.paced and not self._pace.wait(self.wait):
            return
        grabbed, part_id = self._grab(self._ids.next, counted=True)
        if grabbed is not None:
            self._send(grabbed, part_id)

    def handle(self, msg: Message) -> None:
        if self._finished():
            return
        wanted = msg.get("part_id")
        if wanted is None and self.params.trigger_part_id == "required":
            raise DeadLetter("the trigger carries no part_id, and this camera takes every part id from its "
                             "trigger (trigger_part_id: required)")
        if wanted is not None and wanted < 0:
            raise DeadLetter(f"part id {wanted} is negative")
        if self._stale(msg):
            return
        part_id = int(wanted) if wanted is not None else self._ids.next
        if not self._ensure_open():
            raise Retry("the camera is reconnecting", delay=max(0.05, self._reconnect.remaining()))
        try:
            self._source.trigger()
        except DeviceLostError as exc:
            self._lost(exc)
            raise Retry(f"the camera was lost: {exc}", delay=self._reconnect.remaining()) from exc
        grabbed, part_id = self._grab(part_id, counted=wanted is None)
        if grabbed is None:
            self.status["missed_triggers"] += 1
            self.log.warning("no frame for part %s within %.1f s", part_id, self.params.timeout)
            return
        self._send(grabbed, part_id)

    def _stale(self, msg: Message) -> bool:
        """Whether a trigger is too old to fire on: an image taken now would show a later
        part under this part's id (a backlog after a restart, a camera slower than the line)."""
        max_age = self.params.trigger_max_age
        if max_age is None or msg.age <= max_age:
            self._skipping = False
            return False
        self.status["stale_triggers"] += 1
        if not self._skipping:
            self.log.warning("skipping triggers older than %.1f s (part %s is %.1f s old)", max_age,
                             msg.get("part_id", "?"), msg.age)
        self._skipping = True
        return True

    def _grab(self, part_id: int, *, counted: bool) -> tuple[Grabbed | None, int]:
        """Grab one frame; with ``counted``, the part id follows the device's frame-id gaps."""
        dropped = self._source.stats.dropped
        try:
            grabbed = self._source.grab(part_id)
        except DeviceLostError as exc:
            self._lost(exc)
            return None, part_id
        if counted and grabbed is not None:
            part_id += self._source.stats.dropped - dropped
            self._ids.advance(part_id + 1)  # saved before the frame is sent
        return grabbed, part_id

    def _send(self, grabbed: Grabbed, part_id: int) -> None:
        wanted = None if self.params.source == "synthetic" else self.params.pixel_format
        image, pixel_format = convert(grabbed.image, grabbed.pixel_format, wanted)
        frame: Frame = {
            "image": image,
            "camera": self._camera,
            "part_id": int(part_id),
            "frame": self._frame,
            "timestamp": grabbed.timestamp,
            "pixel_format": pixel_format,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "exposure_us": grabbed.exposure_us,
            "gain": grabbed.gain,
        }
        if grabbed.truth is not None:
            frame["truth"] = grabbed.truth
        self.frames.send(frame)
        self._frame += 1
        self._count(part_id)

    def _count(self, part_id: int) -> None:
        status = self.status
        status["frames"] = self._frame
        status["last_part_id"] = part_id
        status.update(self._source.stats.as_dict())
        start, frames = self._window
        elapsed = time.monotonic() - start
        if elapsed >= 2.0:
            status["fps"] = round((self._frame - frames) / elapsed, 2)
            self._window = (time.monotonic(), self._frame)

    def _finished(self) -> bool:
        done = self._source.exhausted or (self.params.count is not None and self._frame >= self.params.count)
        if done and self.status.get("state") != "finished":
            self.status["state"] = "finished"
            self.log.info("camera %s finished after %d frames", self._camera, self._frame)
        return done

    # --- device loss ------------------------------------------------------------------------

    def _lost(self, exc: CameraError) -> None:
        self.status["lost"] += 1
        self.status.update(state="lost", last_error=str(exc))
        self.log.warning("camera %s lost: %s; reopening in %.1f s", self._camera, exc, self._reconnect.peek())
        self._source.close()
        self._open = False
        self._reconnect.next()

    def _ensure_open(self) -> bool:
        """True when the source is open; otherwise try to reopen it once its backoff has passed."""
        if self._open:
            return True
        if not self._reconnect.ready():
            self.wait(min(self._reconnect.remaining(), 0.5))
            return False
        self.status["state"] = "reconnecting"
        try:
            self._source.open()
        except CameraError as exc:
            delay = self._reconnect.next()
            self.status.update(state="lost", last_error=str(exc))
            self.log.warning("camera %s still unavailable: %s; next try in %.1f s", self._camera, exc, delay)
            return False
        self._open = True
        self._reconnect.reset()
        self.status["reconnects"] += 1
        self.status.update(state="acquiring", device=self._source.info)
        self.log.info("camera %s reconnected", self._camera)
        return True
