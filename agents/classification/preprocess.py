"""Frame pre-processing declared in the graph: crop, resize, colour, normalise, layout.

Cheap steps run first on the small uint8/uint16 image (crop is a view, resize shrinks
before any conversion), and normalisation is one fused multiply-add written straight
into the batch buffer in the model's layout, so a megabyte frame is read once and the
model input is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graphrun_agents.errors import FrameFormatError, PreprocessConfigError

Colour = Literal["gray", "bgr", "rgb"]
_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}
_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "uint8": np.uint8, "int8": np.int8}


class PreprocessSpec(BaseModel):
    """How a frame becomes one model input; every field has the neutral default."""

    model_config = ConfigDict(extra="forbid")

    roi: tuple[int, int, int, int] | None = Field(None, description="crop x, y, width, height, in frame pixels")
    resize: tuple[int, int] | None = Field(None, description="model input width, height")
    keep_aspect: bool = Field(False, description="letterbox: scale to fit and pad instead of stretching")
    pad_value: float = Field(0.0, description="pixel value of the letterbox padding")
    interpolation: Literal["area", "linear", "nearest", "cubic"] = "area"
    color: Colour = Field("gray", description="channels the model takes")
    scale: float = Field(1.0 / 255.0, description="multiplies pixel values before mean/std")
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "float64", "uint8", "int8"] = "float32"

    @field_validator("roi")
    @classmethod
    def _roi_positive(cls, roi: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if roi is not None and (roi[0] < 0 or roi[1] < 0 or roi[2] <= 0 or roi[3] <= 0):
            raise ValueError(f"roi {list(roi)} needs x, y >= 0 and width, height > 0")
        return roi

    @field_validator("resize")
    @classmethod
    def _resize_positive(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and (size[0] <= 0 or size[1] <= 0):
            raise ValueError(f"resize {list(size)} needs a positive width and height")
        return size

    @model_validator(mode="after")
    def _stats_match_channels(self) -> PreprocessSpec:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} has {len(values)} values; color {self.color!r} has {self.channels} channel(s)")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std {list(self.std)} contains 0")
        return self

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def input_shape(self, batch: int = 1) -> tuple[int, ...] | None:
        """The model input shape this spec produces, or None if it follows the frame size."""
        if self.resize is None:
            return None
        w, h = self.resize
        return (batch, self.channels, h, w) if self.layout == "NCHW" else (batch, h, w, self.channels)


class Preprocessor:
    """Applies one ``PreprocessSpec``; keeps the per-channel constants precomputed."""

    def __init__(self, spec: PreprocessSpec):
        self.spec = spec
        c = spec.channels
        mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (c,))
        std = np.broadcast_to(np.asarray(spec.std, np.float32), (c,))
        # (x * scale - mean) / std == x * gain + offset: one multiply-add per pixel.
        self._gain = (spec.scale / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)
        self._dtype = np.dtype(_DTYPES[spec.dtype])
        self._interp = _INTERPOLATION[spec.interpolation]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One frame as a batch of one."""
        return self.batch([image])

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Frames as one model input tensor."""
        return self.normalise([self.resized(image) for image in images])

    def normalise(self, smalls: Sequence[np.ndarray]) -> np.ndarray:
        """Images already through ``resized`` (same size) as one model input tensor."""
        if not smalls:
            raise ValueError("an empty batch has no model input")
        h, w = smalls[0].shape[:2]
        c = self.spec.channels
        shape = (len(smalls), c, h, w) if self.spec.layout == "NCHW" else (len(smalls), h, w, c)
        out = np.empty(shape, self._dtype)
        for i, small in enumerate(smalls):
            if small.shape[:2] != (h, w):
                raise FrameFormatError(
                    f"frame {i} of the batch is {small.shape[1]}x{small.shape[0]} after pre-processing, "
                    f"the batch is {w}x{h}: set preprocess.resize to batch frames of different sizes"
                )
            self._normalise(small, out[i])
        return out

    def resized(self, image: np.ndarray) -> np.ndarray:
        """Crop, resize and colour-convert, still in the frame's integer dtype (HxWxC)."""
        image = _check_frame(image)
        spec = self.spec
        if spec.roi is not None:
            x, y, w, h = spec.roi
            if x + w > image.shape[1] or y + h > image.shape[0]:
                raise FrameFormatError(
                    f"roi {list(spec.roi)} does not fit in a {image.shape[1]}x{image.shape[0]} frame"
                )
            image = image[y : y + h, x : x + w]
        if spec.resize is not None:
            image = self._resize(image)
        image = _convert_colour(image, spec.color)
        return image if image.ndim == 3 else image[:, :, None]

    def _resize(self, image: np.ndarray) -> np.ndarray:
        tw, th = self.spec.resize  # type: ignore[misc]
        h, w = image.shape[:2]
        if not self.spec.keep_aspect:
            return image if (w, h) == (tw, th) else cv2.resize(image, (tw, th), interpolation=self._interp)
        k = min(tw / w, th / h)
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        scaled = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=self._interp)
        left, top = (tw - nw) // 2, (th - nh) // 2
        return cv2.copyMakeBorder(
            scaled, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT, value=[self.spec.pad_value] * 4
        )

    def _normalise(self, image: np.ndarray, out: np.ndarray) -> None:
        """Writes gain*image+offset into ``out`` (one batch slot) in the spec's layout."""
        target = out.transpose(1, 2, 0) if self.spec.layout == "NCHW" else out  # HxWxC view of the slot
        if self._dtype.kind == "f":
            np.multiply(image, self._gain, out=target, casting="unsafe")
            np.add(target, self._offset, out=target)
        else:  # integer models take pixels as they are, after the same affine map, clipped
            info = np.iinfo(self._dtype)
            values = image * self._gain + self._offset
            np.clip(np.rint(values), info.min, info.max, out=values)
            target[...] = values


def _check_frame(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise FrameFormatError(f"frame image is a {type(image).__name__}, not a numpy array")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise FrameFormatError(f"frame image dtype {image.dtype} is not supported (uint8, uint16 or float32)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise FrameFormatError(f"frame image shape {list(image.shape)} is not HxW, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise FrameFormatError(f"frame image shape {list(image.shape)} is empty")
    return image


def _convert_colour(image: np.ndarray, colour: Colour) -> np.ndarray:
    """Frames are mono or BGR(A), as the camera sends them; the model wants ``colour``."""
    if image.ndim == 2:
        if colour == "gray":
            return image
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if colour == "bgr" else cv2.COLOR_GRAY2RGB)
    four = image.shape[2] == 4
    if colour == "gray":
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if four else cv2.COLOR_BGR2GRAY)
    if colour == "rgb":
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if four else cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if four else image


def check_against_model(spec: PreprocessSpec, model_shape: Sequence[int | str | None]) -> None:
    """Raise if the spec's output can't feed a model input of ``model_shape`` (None/str = dynamic)."""
    if len(model_shape) != 4:
        raise PreprocessConfigError(f"the model input has shape {list(model_shape)}; a 4-D image batch is needed")
    produced = spec.input_shape(1)
    dims = ("batch", "channels", "height", "width") if spec.layout == "NCHW" else ("batch", "height", "width", "channels")
    c_axis = 1 if spec.layout == "NCHW" else 3
    want_c = model_shape[c_axis]
    if isinstance(want_c, int) and want_c != spec.channels:
        raise PreprocessConfigError(
            f"preprocess.color {spec.color!r} gives {spec.channels} channel(s); the model's {spec.layout} input "
            f"{list(model_shape)} takes {want_c}"
        )
    if produced is None:
        return
    for axis in range(1, 4):
        want = model_shape[axis]
        if isinstance(want, int) and want != produced[axis]:
            raise PreprocessConfigError(
                f"preprocess gives {dims[axis]} {produced[axis]} (resize {list(spec.resize or ())}, layout "
                f"{spec.layout}); the model input {list(model_shape)} takes {want}"
            )
