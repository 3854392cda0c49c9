"""What the HMI shows, kept up to date by the agent and read by the web server.

Writers (the agent's handle) and readers (HTTP threads) meet under one lock. Writes
are O(1) and copy nothing: a frame is kept by reference (the received, read-only
array), and only a camera's last few. Everything costly (JPEG encoding, rates, the
JSON snapshot) happens on the reader's side, on demand.

A tile shows the newest frame whose verdict has arrived, so image and verdict always
belong to the same part; the newest frame, unjudged, when none of those kept has one
(no classifier, or one far behind).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PreviewError
from .parts import Reject, RejectLog, RejectWindow, json_ready, verdict_view

#: Frame arrivals kept per camera to measure its rate; enough for a 2 s window at 30 fps.
RATE_SAMPLES = 64
#: The rate is measured over arrivals this recent; a camera silent longer shows 0 fps.
RATE_WINDOW = 2.0
#: Latencies averaged per camera.
LATENCY_SAMPLES = 32
#: Frames kept per camera while their verdicts are on the way (a few hundred ms of a line).
RECENT_FRAMES = 4


@dataclass(frozen=True, slots=True)
class Shot:
    """One received frame; ``seq`` numbers a camera's frames (the preview cache key)."""

    camera: str
    seq: int
    image: np.ndarray
    pixel_format: str
    part_id: int | None
    frame: int | None
    at: float  # when it arrived

    def info(self, now: float) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "part_id": self.part_id,
            "frame": self.frame,
            "width": int(self.image.shape[1]),
            "height": int(self.image.shape[0]),
            "pixel_format": self.pixel_format,
            "age_s": round(now - self.at, 3),
        }


@dataclass(slots=True)
class _Camera:
    name: str
    port: str | None = None  # the frames port its frames came on
    recent: deque[Shot] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    frames: int = 0
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_SAMPLES))
    frame_latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    verdict: dict[str, Any] | None = None
    verdict_at: float = 0.0
    verdicts: int = 0
    verdict_latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


@dataclass(slots=True)
class _Part:
    part_id: int
    first: float  # when its first verdict arrived
    views: dict[str, dict[str, Any]] = field(default_factory=dict)

    def outcome(self, expected: int, now: float, incomplete_after: float) -> str:
        if any(v["defective"] for v in self.views.values()):
            return "REJECT"
        if len(self.views) >= expected:
            return "OK"
        return "INCOMPLETE" if now - self.first >= incomplete_after else "PENDING"


class ActionRefused(Exception):
    """An operator's request that cannot be done; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class LiveState:
    """The latest frame and verdict of every camera, recent parts, and counters.

    ``views`` is how many verdicts make a part complete (one per connected verdict
    input). A part is REJECT as soon as one view says defective, OK once every view
    says good, and INCOMPLETE when a view is still missing ``incomplete_after``
    seconds after its first verdict. ``parts`` and ``rejects`` count the shift (since
    the last reset); ``window`` is the reject rate over the last parts.
    """

    def __init__(self, *, views: int, history: int, incomplete_after: float, ports: Sequence[str] = (),
                 window: int = 100, alarm: float | None = None):
        self.views = max(1, views)
        self.ports = tuple(ports)  # frames ports in the graph's order: the order of the tiles
        self.history = history
        self.incomplete_after = incomplete_after
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # wakes MJPEG streams when a tile's frame may change
        self._cameras: dict[str, _Camera] = {}
        self._parts: OrderedDict[int, _Part] = OrderedDict()
        # Part ids already counted, and whether as a reject: verdicts are delivered at
        # least once, and a copy must not count twice even after its row left the list.
        self._counted: OrderedDict[int, bool] = OrderedDict()
        self._memory = max(4096, 4 * history, 2 * window)
        self.parts = 0
        self.rejects = 0
        self.shift_started = time.time()
        self.window = RejectWindow(window, alarm)
        self.reject_log = RejectLog(history)
        self.version = 0  # counts changes: a pushed page is sent the state when it moved

    # --- writers (the agent) -------------------------------------------------------

    def add_frame(self, camera: str, port: str | None, payload: Mapping[str, Any], created: float,
                  now: float | None = None) -> None:
        now = time.time() if now is None else now
        image = payload.get("image")
        if not isinstance(image, np.ndarray) or image.ndim < 2:
            raise PreviewError(f"frame 'image' of camera {camera!r} is not an image array: {type(image).__name__} "
                               f"of shape {getattr(image, 'shape', None)}")
        part_id = payload.get("part_id")
        with self._lock:
            cam = self._camera(camera)
            cam.port = cam.port or port
            cam.frames += 1
            cam.recent.append(Shot(camera, cam.frames, image, str(payload.get("pixel_format") or ""),
                                   None if part_id is None else int(part_id), payload.get("frame"), now))
            cam.arrivals.append(now)
            cam.frame_latency.append(now - created)
            self._changed_now()

    def add_verdict(self, camera: str, payload: Mapping[str, Any], created: float,
                    now: float | None = None, source: Any = None) -> bool | None:
        """Counts the verdict; returns the reject-rate alarm's new state if this verdict changed it.

        ``source`` is the verdict's message: acknowledging the part is traced from it.
        """
        now = time.time() if now is None else now
        verdict = verdict_view(payload)
        with self._lock:
            cam = self._camera(camera)
            cam.verdict, cam.verdict_at = verdict, now
            cam.verdicts += 1
            cam.verdict_latency.append(now - created)
            self._changed_now()
            if verdict["part_id"] is None:
                return None
            self._add_to_part(int(verdict["part_id"]), camera, verdict, now, source)
            return self.window.update_alarm()

    def reset_counters(self, now: float | None = None) -> dict[str, Any]:
        """Starts a new shift: the shift's counts go back to zero; returns the shift that ended."""
        now = time.time() if now is None else now
        with self._lock:
            ended = {"parts": self.parts, "rejects": self.rejects, "started": self.shift_started, "ended": now}
            self.parts = self.rejects = 0
            self.shift_started = now
            self._changed_now()
            return ended

    def acknowledge(self, part_id: int, reason: str | None, now: float | None = None) -> Reject:
        """Marks a listed reject acknowledged; ActionRefused for a part not listed as a reject, or done twice."""
        now = time.time() if now is None else now
        with self._lock:
            reject = self.reject_log.get(part_id)
            if reject is None:
                listed = part_id in self._parts
                raise ActionRefused(409 if listed else 404, f"part {part_id} is not a reject" if listed else
                                    f"part {part_id} is not among the last {self.reject_log.keep} rejects")
            if reject.acknowledged is not None:
                raise ActionRefused(409, f"part {part_id} was acknowledged already")
            reject.acknowledged = {"time": now, "reason": reason}
            self._changed_now()
            return reject

    def _changed_now(self) -> None:
        """Under the lock: wakes the MJPEG streams and pushed pages waiting for news."""
        self.version += 1
        self._changed.notify_all()

    def wait_changed(self, after: int, timeout: float) -> int:
        """The state's version once it is another than ``after``, or as it is after ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != after, timeout)
            return self.version

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            cam = self._cameras[name] = _Camera(name)
        return cam

    def _add_to_part(self, part_id: int, camera: str, verdict: dict[str, Any], now: float, source: Any) -> None:
        rejected = self._counted.get(part_id)
        if rejected is None:
            self.parts += 1
            rejected = self._counted[part_id] = False
            if len(self._counted) > self._memory:
                self._counted.popitem(last=False)
            self._parts[part_id] = _Part(part_id, now)
            if len(self._parts) > self.history:
                self._parts.popitem(last=False)
            self.window.add_part(part_id)
        if verdict["defective"]:
            if not rejected:
                self.rejects += 1
                self._counted[part_id] = True
                self.window.mark_reject(part_id)
            self.reject_log.add(part_id, camera, verdict["label"], now, source)
        part = self._parts.get(part_id)
        if part is not None:  # None: a late copy for a part no longer listed
            part.views.setdefault(camera, verdict)  # the first verdict of a view stands

    # --- readers (the web server) ---------------------------------------------------

    def camera_names(self) -> list[str]:
        """The cameras with a tile: those a frame or a verdict has named."""
        with self._lock:
            return list(self._cameras)

    def shown_frame(self, camera: str) -> Shot | None:
        """The frame a camera's tile shows, None before its first frame."""
        with self._lock:
            cam = self._cameras.get(camera)
            return None if cam is None else self._shown(cam)[0]

    def next_shown_frame(self, camera: str, after: int, timeout: float) -> Shot | None:
        """The frame a camera's tile shows once it is another than frame ``after``; None on timeout."""

        def changed() -> Shot | None:
            cam = self._cameras.get(camera)
            shot = None if cam is None else self._shown(cam)[0]
            return shot if shot is not None and shot.seq != after else None

        with self._changed:
            return self._changed.wait_for(changed, timeout)

    @staticmethod
    def _shown(cam: _Camera) -> tuple[Shot | None, bool]:
        """(the frame to show, whether the camera's latest verdict is about it)."""
        if cam.verdict is not None:
            for shot in reversed(cam.recent):
                if shot.part_id is not None and shot.part_id == cam.verdict["part_id"]:
                    return shot, True
        return (cam.recent[-1] if cam.recent else None), False

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready values; newest parts first."""
        now = time.time() if now is None else now
        with self._lock:
            cameras = [self._camera_view(cam, now) for cam in sorted(self._cameras.values(), key=self._rank)]
            parts = [self._part_view(p, now) for p in reversed(self._parts.values())]
            latencies = [c["verdict_latency_ms"] for c in cameras if c["verdict_latency_ms"] is not None]
            return {
                "time": now,
                "views": self.views,
                "cameras": cameras,
                "parts": parts,
                "counters": {
                    "parts": self.parts,
                    "rejects": self.rejects,
                    "reject_rate": self.rejects / self.parts if self.parts else None,
                    "shift_started": self.shift_started,
                    "frames": sum(c["frames"] for c in cameras),
                    "verdicts": sum(c["verdicts"] for c in cameras),
                    "latency_ms": max(latencies) if latencies else None,
                },
                "window": self.window.view(),
                "rejects": self.reject_log.views(),
                "unacknowledged": self.reject_log.unacknowledged,
            }

    def _rank(self, cam: _Camera) -> int:
        """Tiles in the order of the graph's frames ports, whichever camera spoke first."""
        return self.ports.index(cam.port) if cam.port in self.ports else len(self.ports)

    def _camera_view(self, cam: _Camera, now: float) -> dict[str, Any]:
        shot, judged = self._shown(cam)
        verdict = None
        if cam.verdict is not None:
            verdict = dict(json_ready(cam.verdict), age_s=round(now - cam.verdict_at, 3))
        status = "none"
        if verdict is not None and (judged or shot is None):  # a verdict only counts for the image it judged
            status = "reject" if verdict["defective"] else "ok"
        return {
            "name": cam.name,
            "port": cam.port,
            "status": status,
            "frame": None if shot is None else shot.info(now),
            "latest_part_id": cam.recent[-1].part_id if cam.recent else None,
            "verdict": verdict,
            "frames": cam.frames,
            "verdicts": cam.verdicts,
            "fps": _rate(cam.arrivals, now),
            "frame_latency_ms": _mean_ms(cam.frame_latency),
            "verdict_latency_ms": _mean_ms(cam.verdict_latency),
        }

    def _part_view(self, part: _Part, now: float) -> dict[str, Any]:
        outcome = part.outcome(self.views, now, self.incomplete_after)
        defective = [v for v in part.views.values() if v["defective"]]
        return {
            "part_id": part.part_id,
            "time": part.first,
            "outcome": outcome,
            "label": defective[0]["label"] if defective else ("ok" if outcome == "OK" else ""),
            "score": max((v["score"] for v in part.views.values() if v["score"] is not None), default=None),
            "views": {
                cam: {"label": v["label"], "score": v["score"], "defective": v["defective"]}
                for cam, v in part.views.items()
            },
        }


def _rate(arrivals: deque[float], now: float) -> float:
    """Frames per second over the recent arrivals; 0 for a camera gone quiet."""
    recent = [t for t in arrivals if now - t <= RATE_WINDOW]
    if len(recent) < 2 or recent[-1] <= recent[0]:
        return 0.0
    return round((len(recent) - 1) / (recent[-1] - recent[0]), 2)


def _mean_ms(samples: deque[float]) -> float | None:
    return round(1000 * sum(samples) / len(samples), 1) if samples else None
