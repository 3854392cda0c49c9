"""Procedurally rendered finger-follower parts, with labelled defects and harmless distractors.

The inspection problem this data poses is the one the line has: real defects (scratches,
chips, cracks, pitting) must be told apart from dust and loose particles. Both families
come in dark and bright variants of similar contrast, so only shape and texture separate
them: a scratch is a long smooth line, a crack a jagged branching one, pitting a cluster of
sharp pits, a chip a bite out of an edge; dust is soft-edged, a particle is one compact spot.

A part is a pure function of (seed, index, view): the demo, the tests and model training
see the same parts for the same seed. Sizes scale with the image, so defects stay visible
after the model's downscale to about 256x256.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from graphrun_agents.errors import CameraConfigError
from graphrun_agents.messages import Truth

DEFECT_KINDS: tuple[str, ...] = ("scratch", "chip", "crack", "pitting")
DISTRACTOR_KINDS: tuple[str, ...] = ("dust", "particle")
VIEWS: tuple[str, ...] = ("front", "back")
PIXEL_FORMATS: tuple[str, ...] = ("Mono8", "BGR8")

_BACKGROUND = 38.0
# Per-channel gains that give BGR8 parts a faint warm steel tint on a cool background.
_TINT = (0.93, 1.0, 1.06, 0.0)


@dataclass(frozen=True)
class SyntheticConfig:
    """What to render; also the synthetic part of the camera's parameters."""

    width: int = 1280
    height: int = 1024
    view: str = "front"  # "front" | "back"
    seed: int = 0
    defect_rate: float = 0.3  # probability that a part carries a defect
    distractor_rate: float = 0.6  # probability that a part carries dust or particles
    defect_kinds: tuple[str, ...] = DEFECT_KINDS
    pixel_format: str = "Mono8"  # Mono8 (HxW uint8) or BGR8 (HxWx3 uint8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defect_kinds", tuple(self.defect_kinds))
        if not (32 <= self.width <= 16384):
            raise CameraConfigError(f"synthetic width must be 32..16384 pixels, got {self.width!r}")
        if not (32 <= self.height <= 16384):
            raise CameraConfigError(f"synthetic height must be 32..16384 pixels, got {self.height!r}")
        if self.view not in VIEWS:
            raise CameraConfigError(f"synthetic view must be one of {', '.join(VIEWS)}; got {self.view!r}")
        if self.pixel_format not in PIXEL_FORMATS:
            raise CameraConfigError(
                f"synthetic pixel_format must be one of {', '.join(PIXEL_FORMATS)}; got {self.pixel_format!r}"
            )
        for name in ("defect_rate", "distractor_rate"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise CameraConfigError(f"synthetic {name} must be between 0 and 1, got {value!r}")
        unknown = [k for k in self.defect_kinds if k not in DEFECT_KINDS]
        if unknown:
            raise CameraConfigError(
                f"synthetic defect_kinds has unknown kind(s) {unknown!r}; known: {', '.join(DEFECT_KINDS)}"
            )
        if self.defect_rate > 0 and not self.defect_kinds:
            raise CameraConfigError("synthetic defect_kinds is empty but defect_rate is above 0")


def part_rngs(seed: int, index: int, view: str) -> tuple[np.random.Generator, ...]:
    """Independent generators for one view of one part: labels, pose, defect, distractors, light, noise.

    Separate streams keep every aspect fixed when another changes: the same part with and
    without its defect differs only by the defect.
    """
    root = np.random.SeedSequence([seed & 0xFFFFFFFF, index & 0xFFFFFFFFFFFF, VIEWS.index(view), 0x9A27])
    return tuple(np.random.default_rng(child) for child in root.spawn(6))


def render_part(index: int, config: SyntheticConfig) -> tuple[np.ndarray, Truth]:
    """Render part ``index`` as ``config`` says; returns the image and its ground truth."""
    labels, pose, defect_rng, distractor_rng, light, noise = part_rngs(config.seed, index, config.view)
    defective = labels.random() < config.defect_rate and bool(config.defect_kinds)
    kind_index = int(labels.integers(max(1, len(config.defect_kinds))))
    kind = config.defect_kinds[kind_index] if defective else "ok"
    distracted = labels.random() < config.distractor_rate

    part = _Part.posed(pose, config.width, config.height, config.view)
    base, mask = part.draw()
    defects: list[dict[str, Any]] = []
    distractors: list[dict[str, Any]] = []
    if kind == "chip":
        defects.append(_chip(defect_rng, part, base, mask))
    image = base.astype(np.float32)
    if kind in _SURFACE_DEFECTS:
        defects.append(_SURFACE_DEFECTS[kind](defect_rng, part, image, mask))
    if distracted:
        for _ in range(int(distractor_rng.integers(1, 7))):
            distractors.append(_distractor(distractor_rng, part, image, mask))
    image *= _lighting(light, config.width, config.height)
    _add_noise(image, noise)
    mono = cv2.convertScaleAbs(image)  # rounds and saturates to uint8 in one pass
    if config.pixel_format == "BGR8":
        pixels = cv2.multiply(cv2.cvtColor(mono, cv2.COLOR_GRAY2BGR), _TINT, dtype=cv2.CV_8U)
    else:
        pixels = mono
    truth: Truth = {"defective": kind != "ok", "label": kind, "defects": defects, "distractors": distractors}
    return pixels, truth


# --- the part -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """A posed part: local coordinates are in lever lengths, x from pivot (-0.5) to pad (+0.5)."""

    cx: float
    cy: float
    angle: float
    length: float
    mirror: float  # -1 flips the lever end for end: the back view shows the pad on the left
    view: str
    width: int
    height: int

    @classmethod
    def posed(cls, rng: np.random.Generator, width: int, height: int, view: str) -> _Part:
        length = 0.78 * min(width, 1.25 * height) * rng.uniform(0.94, 1.04)
        return cls(
            cx=width / 2 + rng.uniform(-0.03, 0.03) * width,
            cy=height / 2 + rng.uniform(-0.04, 0.04) * height,
            angle=math.radians(rng.uniform(-8.0, 8.0)),
            length=length,
            mirror=1.0 if view == "front" else -1.0,
            view=view,
            width=width,
            height=height,
        )

    @property
    def k(self) -> float:
        """Pixels per thousandth of a lever: the unit of defect sizes."""
        return self.length / 1000.0

    def px(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Local coordinates to pixel coordinates (float, shape (..., 2))."""
        x = np.asarray(x, dtype=np.float64) * self.mirror
        y = np.asarray(y, dtype=np.float64)
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + self.length * (x * c - y * s), self.cy + self.length * (x * s + y * c)], axis=-1)

    def pt(self, x: float, y: float) -> tuple[int, int]:
        p = self.px(x, y)
        return int(round(p[0])), int(round(p[1]))

    def r(self, radius: float) -> int:
        return max(1, int(round(radius * self.length)))

    def ellipse(self, img: np.ndarray, x: float, y: float, ax: float, ay: float, value: float) -> None:
        deg = math.degrees(self.angle)
        cv2.ellipse(img, self.pt(x, y), (self.r(ax), self.r(ay)), deg, 0, 360, value, -1, cv2.LINE_AA)

    def outline(self) -> np.ndarray:
        """The lever body's outline (int32 pixel polygon), without the pivot boss and pad."""
        xs = np.linspace(-0.38, 0.40, 40)
        bulge = np.exp(-((xs / 0.16) ** 2))
        top = self.px(xs, -(0.095 + 0.045 * bulge))
        bottom = self.px(xs[::-1], (0.085 + 0.055 * bulge)[::-1])
        return np.round(np.concatenate([top, bottom])).astype(np.int32)

    def edge_point(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """A point on the outer contour and its outward normal angle (local units, radians)."""
        where = rng.random()
        if where < 0.6:  # along the body, top or bottom
            x = rng.uniform(-0.22, 0.28)
            bulge = math.exp(-((x / 0.16) ** 2))
            if rng.random() < 0.5:
                return x, -(0.095 + 0.045 * bulge), -math.pi / 2
            return x, 0.085 + 0.055 * bulge, math.pi / 2
        if where < 0.8:  # around the pivot boss, away from the body
            a = rng.uniform(0.6 * math.pi, 1.4 * math.pi)
            return -0.38 + 0.12 * math.cos(a), 0.12 * math.sin(a), a
        a = rng.uniform(-0.35 * math.pi, 0.35 * math.pi)  # around the pad's end
        return 0.42 + 0.09 * math.cos(a), 0.115 * math.sin(a), a

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """The unlit part on its background (uint8) and the part's mask (uint8, 255 on metal)."""
        base = np.full((self.height, self.width), _BACKGROUND, dtype=np.uint8)
        mask = np.zeros_like(base)
        for img, metal in ((mask, 255), (base, 150 if self.view == "front" else 132)):
            cv2.fillPoly(img, [self.outline()], metal, cv2.LINE_AA)
            cv2.circle(img, self.pt(-0.38, 0.0), self.r(0.12), metal, -1, cv2.LINE_AA)
            self.ellipse(img, 0.42, 0.0, 0.09, 0.115, metal)
            cv2.fillPoly(img, [np.round(self.px([0.30, 0.42, 0.42, 0.30], [-0.115, -0.115, 0.115, 0.115])).astype(np.int32)], metal, cv2.LINE_AA)
        if self.view == "front":
            self.ellipse(base, 0.43, 0.0, 0.06, 0.09, 196)  # polished pad
            cv2.circle(base, self.pt(0.0, 0.0), self.r(0.097), 62, -1, cv2.LINE_AA)  # gap round the roller
            cv2.circle(base, self.pt(0.0, 0.0), self.r(0.085), 182, -1, cv2.LINE_AA)  # roller
            cv2.circle(base, self.pt(0.0, 0.0), self.r(0.030), 118, -1, cv2.LINE_AA)  # axle
            cv2.circle(base, self.pt(0.0, 0.0), self.r(0.012), 90, -1, cv2.LINE_AA)
            cv2.circle(base, self.pt(-0.38, 0.0), self.r(0.07), 168, -1, cv2.LINE_AA)  # chamfer
        else:
            cv2.line(base, self.pt(-0.28, 0.0), self.pt(0.33, 0.0), 164, self.r(0.035), cv2.LINE_AA)  # rib
            slot = self.px([-0.11, 0.11, 0.11, -0.11], [-0.062, -0.062, 0.062, 0.062])
            cv2.fillPoly(base, [np.round(slot).astype(np.int32)], 58, cv2.LINE_AA)  # roller window
            self.ellipse(base, 0.0, 0.0, 0.085, 0.04, 142)  # roller rim seen from behind
            self.ellipse(base, 0.43, 0.0, 0.055, 0.085, 112)  # pad underside
            cv2.circle(base, self.pt(-0.38, 0.0), self.r(0.078), 108, -1, cv2.LINE_AA)  # socket
        for img in (base, mask):  # the pivot bore goes through
            cv2.circle(img, self.pt(-0.38, 0.0), self.r(0.05), 0 if img is mask else _BACKGROUND, -1, cv2.LINE_AA)
        return base, mask

    def point_on_metal(self, rng: np.random.Generator, mask: np.ndarray, margin: float = 0.0) -> tuple[float, float]:
        """A random pixel position on the part, ``margin`` pixels inside the image."""
        for _ in range(200):
            x = rng.uniform(margin, self.width - 1 - margin)
            y = rng.uniform(margin, self.height - 1 - margin)
            if mask[int(y), int(x)] == 255:
                return x, y
        return float(self.pt(0.2, 0.0)[0]), float(self.pt(0.2, 0.0)[1])


# --- drawing helpers --------------------------------------------------------------------


def _stamp(image: np.ndarray, mask: np.ndarray | None, points: np.ndarray, pad: int, draw: Any, blur: float) -> None:
    """Draw a small feature in a patch around ``points`` and add it to ``image``, on metal only.

    ``draw(patch, offset)`` paints signed grey-level changes into a float32 patch; the patch
    is softened by ``blur`` (pixels) so edges look optical, not drawn.
    """
    h, w = image.shape
    x0 = max(0, int(points[:, 0].min()) - pad)
    y0 = max(0, int(points[:, 1].min()) - pad)
    x1 = min(w, int(points[:, 0].max()) + pad + 1)
    y1 = min(h, int(points[:, 1].max()) + pad + 1)
    if x1 <= x0 or y1 <= y0:
        return
    patch = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    draw(patch, np.array([x0, y0], dtype=np.float64))
    if blur > 0:
        patch = cv2.GaussianBlur(patch, (0, 0), blur)
    if mask is not None:
        patch *= mask[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255)
    image[y0:y1, x0:x1] += patch


def _record(kind: str, points: np.ndarray, size: float, **extra: Any) -> dict[str, Any]:
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    return {"kind": kind, "x": int(round(centre[0])), "y": int(round(centre[1])), "size": int(round(size)), **extra}


def _polyline(patch: np.ndarray, points: np.ndarray, offset: np.ndarray, value: float, thickness: int) -> None:
    pts = np.round(points - offset).astype(np.int32)
    cv2.polylines(patch, [pts], False, float(value), thickness, cv2.LINE_8)


# --- defects ----------------------------------------------------------------------------

# Minimum severities, in thousandths of a lever (about a pixel at 1280x1024, a quarter pixel at
# the model's 320x256): a labelled defect is one the spec counts as a defect, so the faintest one
# must still show after the model's area resize (a line at least 3 px wide and about 0.75 of its
# contrast, a chip biting at least 0.6 of its radius into the edge). Fainter marks than these are
# not defects by the spec, and the renderer draws none.
_MIN_SCRATCH_LENGTH = 150.0
_MIN_CRACK_LENGTH = 120.0
_MIN_PITS = 14
_MIN_CHIP_RADIUS = 34.0
# A surface defect lies on lit metal: at least this share of its line (or of its pits) falls
# on the part and off the dark features (bore, roller gap and window, where a dark mark cannot
# show); a placement that fails is drawn again, up to _PLACEMENT_TRIES times.
_MIN_VISIBLE = 0.85
_VISIBLE_LEVEL = 100.0
_PLACEMENT_TRIES = 30


def _densify(points: np.ndarray, per_segment: int = 6) -> np.ndarray:
    """Points along a polyline, ``per_segment`` per segment."""
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[None, :, None]
    seg = points[:-1, None, :] + (points[1:, None, :] - points[:-1, None, :]) * t
    return np.concatenate([seg.reshape(-1, 2), points[-1:]])


def _visible_fraction(points: np.ndarray, image: np.ndarray, mask: np.ndarray) -> float:
    """Share of ``points`` that fall on lit metal of the (unlit) ``image``."""
    h, w = mask.shape
    xs = np.round(points[:, 0]).astype(np.int64)
    ys = np.round(points[:, 1]).astype(np.int64)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys = xs[inside], ys[inside]
    ok = (mask[ys, xs] == 255) & (image[ys, xs] >= _VISIBLE_LEVEL)
    return float(ok.sum()) / max(1, len(points))


def _scratch(rng: np.random.Generator, part: _Part, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """A long, smooth, thin line, slightly curved, sometimes interrupted; dark or bright."""
    k = part.k
    t = np.linspace(-0.5, 0.5, 9)
    for _ in range(_PLACEMENT_TRIES):
        x, y = part.point_on_metal(rng, mask)
        length = rng.uniform(_MIN_SCRATCH_LENGTH, 300) * k
        heading = rng.uniform(0, math.pi)
        bend = rng.uniform(-0.25, 0.25)
        angles = heading + bend * t
        points = np.stack([x + length * t * np.cos(angles), y + length * t * np.sin(angles)], axis=-1)
        if _visible_fraction(_densify(points), image, mask) >= _MIN_VISIBLE:
            break
    sign = -1.0 if rng.random() < 0.65 else 1.0
    contrast = sign * rng.uniform(55, 80)
    thickness = max(3, int(round(rng.uniform(3.2, 4.8) * k)))
    strengths = rng.uniform(0.8, 1.0, len(points) - 1)
    gap = int(rng.integers(len(points) - 1)) if rng.random() < 0.4 else -1

    def draw(patch: np.ndarray, offset: np.ndarray) -> None:
        for i in range(len(points) - 1):
            if i != gap:
                _polyline(patch, points[i : i + 2], offset, contrast * strengths[i], thickness)

    _stamp(image, mask, points, 4 * thickness, draw, max(0.7, 0.7 * k))
    return _record("scratch", points, length, angle=round(math.degrees(heading), 1))


def _crack(rng: np.random.Generator, part: _Part, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """A jagged dark line that wanders and branches."""
    k = part.k
    steps = 14
    for _ in range(_PLACEMENT_TRIES):
        x, y = part.point_on_metal(rng, mask)
        length = rng.uniform(_MIN_CRACK_LENGTH, 220) * k
        heading = rng.uniform(0, 2 * math.pi)
        trunk = _walk(rng, np.array([x, y]), heading, length / steps, steps, 0.45)
        branches = [trunk]
        for _ in range(int(rng.integers(1, 4))):
            start = trunk[int(rng.integers(2, steps - 2))]
            turn = heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.1)
            branches.append(_walk(rng, start, turn, length / steps * 0.8, int(rng.integers(3, 8)), 0.5))
        if _visible_fraction(_densify(trunk), image, mask) >= _MIN_VISIBLE:
            break
    contrast = -rng.uniform(65, 95)
    thickness = max(3, int(round(rng.uniform(3.0, 3.8) * k)))
    allpoints = np.concatenate(branches)

    def draw(patch: np.ndarray, offset: np.ndarray) -> None:
        for i, branch in enumerate(branches):
            _polyline(patch, branch, offset, contrast * (1.0 if i == 0 else 0.85), thickness if i == 0 else max(2, thickness - 1))

    _stamp(image, mask, allpoints, 4 * thickness, draw, max(0.7, 0.6 * k))
    return _record("crack", allpoints, length, branches=len(branches) - 1)


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, step: float, steps: int, jitter: float) -> np.ndarray:
    turns = heading + np.cumsum(rng.normal(0.0, jitter, steps))
    deltas = np.stack([np.cos(turns), np.sin(turns)], axis=-1) * step * rng.uniform(0.6, 1.4, (steps, 1))
    return np.concatenate([start[None, :], start + np.cumsum(deltas, axis=0)])


def _pitting(rng: np.random.Generator, part: _Part, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """A cluster of small, sharp-edged pits."""
    k = part.k
    for _ in range(_PLACEMENT_TRIES):
        x, y = part.point_on_metal(rng, mask)
        spread = rng.uniform(20, 40) * k
        count = int(rng.integers(_MIN_PITS, 28))
        offsets = rng.normal(0.0, spread / 2, (count, 2))
        centres = np.array([x, y]) + offsets
        if _visible_fraction(centres, image, mask) >= _MIN_VISIBLE:
            break
    radii = rng.uniform(3.6, 5.5, count) * k
    depths = -rng.uniform(55, 95, count)

    def draw(patch: np.ndarray, offset: np.ndarray) -> None:
        for (cx, cy), r, d in zip(centres - offset, radii, depths):
            cv2.circle(patch, (int(round(cx)), int(round(cy))), max(1, int(round(r))), float(d), -1, cv2.LINE_8)

    _stamp(image, mask, centres, int(6 * k) + 6, draw, max(0.7, 0.6 * k))
    extent = float(np.ptp(centres, axis=0).max() + 2 * radii.max())
    return _record("pitting", centres, extent, count=count)


def _chip(rng: np.random.Generator, part: _Part, base: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """A bite out of the outer edge, with the bright rim of a fresh fracture; edits base and mask."""
    lx, ly, normal = part.edge_point(rng)
    radius = rng.uniform(_MIN_CHIP_RADIUS, 58) * part.k
    centre = part.px(lx, ly)
    outward = part.px(lx + 0.01 * math.cos(normal), ly + 0.01 * math.sin(normal)) - centre
    # The bite's centre sits a little outside the edge, so the missing piece is a bite, not a hole.
    centre = centre + 0.25 * radius * outward / np.linalg.norm(outward)
    corners = int(rng.integers(6, 10))
    # Corners spread all round (jittered, not bunched), so no long chord cuts the bite shallow.
    angles = 2 * math.pi * (np.arange(corners) + rng.uniform(-0.3, 0.3, corners)) / corners + rng.uniform(0, 2 * math.pi)
    radii = radius * rng.uniform(0.85, 1.15, corners)
    poly = np.round(centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)).astype(np.int32)
    rim = max(2, int(round(3.0 * part.k)))
    h, w = base.shape
    x0, y0 = max(0, int(poly[:, 0].min()) - 2 * rim), max(0, int(poly[:, 1].min()) - 2 * rim)
    x1, y1 = min(w, int(poly[:, 0].max()) + 2 * rim + 1), min(h, int(poly[:, 1].max()) + 2 * rim + 1)
    if x1 > x0 and y1 > y0:
        roi, roi_mask = base[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        rimmed = roi.copy()
        cv2.polylines(rimmed, [poly - np.array([x0, y0], dtype=np.int32)], True, 205, rim + 1, cv2.LINE_AA)
        np.copyto(roi, rimmed, where=roi_mask == 255)  # the fracture rim only shows on metal
    cv2.fillPoly(base, [poly], _BACKGROUND, cv2.LINE_AA)
    cv2.fillPoly(mask, [poly], 0, cv2.LINE_AA)
    return _record("chip", poly.astype(np.float64), 2 * radius)


_SURFACE_DEFECTS = {"scratch": _scratch, "crack": _crack, "pitting": _pitting}


# --- distractors ------------------------------------------------------------------------


def _distractor(rng: np.random.Generator, part: _Part, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Dust (soft blobs, bright or grey, alone or in a small group) or a compact dark particle."""
    k = part.k
    on_part = rng.random() < 0.85
    if on_part:
        x, y = part.point_on_metal(rng, mask)
    else:
        x, y = rng.uniform(0, part.width - 1), rng.uniform(0, part.height - 1)
    if rng.random() < 0.6:
        count = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
        centres = np.array([x, y]) + rng.normal(0.0, 14 * k, (count, 2)) * (count > 1)
        radii = rng.uniform(4.0, 12.0, count) * k
        sign = 1.0 if rng.random() < 0.55 else -1.0
        amps = sign * rng.uniform(30, 70, count)
        aspects = rng.uniform(1.0, 1.9, count)
        tilts = rng.uniform(0, 180, count)

        def draw(patch: np.ndarray, offset: np.ndarray) -> None:
            for (cx, cy), r, a, asp, tilt in zip(centres - offset, radii, amps, aspects, tilts):
                axes = (max(1, int(round(r * asp / 2))), max(1, int(round(r / 2))))
                cv2.ellipse(patch, (int(round(cx)), int(round(cy))), axes, float(tilt), 0, 360, float(a), -1)

        _stamp(image, None, centres, int(12 * k) + 8, draw, max(1.0, 0.28 * float(radii.mean())))
        return _record("dust", centres, float(np.ptp(centres, axis=0).max() + 2 * radii.max()), count=count)
    radius = rng.uniform(3.0, 7.0) * k
    corners = int(rng.integers(5, 8))
    angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
    poly = np.array([x, y]) + radius * rng.uniform(0.7, 1.2, (corners, 1)) * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    depth = -rng.uniform(50, 100)

    def draw_particle(patch: np.ndarray, offset: np.ndarray) -> None:
        cv2.fillPoly(patch, [np.round(poly - offset).astype(np.int32)], float(depth), cv2.LINE_8)

    _stamp(image, None, poly, int(4 * k) + 4, draw_particle, max(0.7, 0.6 * k))
    return _record("particle", poly, 2 * radius)


# --- lighting -----------------------------------------------------------------------------


def _lighting(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth gain field: overall level, a gradient across the part, and a specular hot spot."""
    gw, gh = max(2, width // 16), max(2, height // 16)
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xs = xs / (gw - 1) - 0.5
    ys = ys / (gh - 1) - 0.5
    gain = rng.uniform(0.78, 1.2)
    tilt = rng.uniform(-0.35, 0.35, 2)
    hx, hy = rng.uniform(-0.35, 0.35, 2)
    spot = rng.uniform(0.0, 0.3) * np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / rng.uniform(0.02, 0.08))
    field = (gain * (1.0 + tilt[0] * xs + tilt[1] * ys) + spot).astype(np.float32)
    return cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)


# --- sensor noise -------------------------------------------------------------------------

_NOISE_PAD = 64


@functools.lru_cache(maxsize=4)
def _noise_tile(height: int, width: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise, a little larger than the image.

    Drawing 1.3 million normal samples per frame would cost more than the rest of the
    rendering; a random window of one shared field (and its mirror images) is as good
    as fresh sensor noise and stays deterministic.
    """
    tile = np.random.default_rng(0x5E2503).standard_normal((height + _NOISE_PAD, width + _NOISE_PAD), dtype=np.float32)
    tile.setflags(write=False)
    return tile


def _add_noise(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape
    dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, 2))
    field = _noise_tile(h, w)[dy : dy + h, dx : dx + w]
    if rng.random() < 0.5:
        field = field[::-1]
    if rng.random() < 0.5:
        field = field[:, ::-1]
    sigma = np.float32(rng.uniform(1.5, 4.0))
    image += field * sigma
