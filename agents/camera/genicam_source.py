"""The ``genicam`` source: industrial cameras through harvesters and a GenTL producer (.cti).

Every buffer goes back to the producer before ``grab`` returns (the image is copied out
while it is held), so a long run neither leaks nor starves the producer of buffers.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from genicam.genapi import EAccessMode
from genicam.genapi import GenericException as GenApiError
from genicam.gentl import GenericException as GenTLError
from genicam.gentl import TimeoutException
from harvesters.core import Callback, Harvester, ImageAcquirer

from graphrun_agents.errors import (
    CameraError,
    DeviceLostError,
    DeviceNotFoundError,
    FeatureError,
    GenTLProducerError,
)

from .pixel_formats import lookup, to_array
from .source import Grabbed, Source

CTI_ENV = "GENICAM_GENTL64_PATH"
PACKAGE_PREFIX = "pkg:"  # "pkg:genicam/viky.cti": a producer shipped inside a Python package
_WRITABLE = (EAccessMode.RW, EAccessMode.WO)


def resolve_cti(cti: str | None) -> list[str]:
    """The producer files to load: ``cti`` if given, else those GENICAM_GENTL64_PATH names."""
    if cti:
        path = _package_file(cti[len(PACKAGE_PREFIX):]) if cti.startswith(PACKAGE_PREFIX) else os.path.expanduser(cti)
        if not os.path.isfile(path):
            raise GenTLProducerError(f"cti {cti!r} is not a file" + (f" (resolved to {path!r})" if path != cti else ""))
        return [path]
    value = os.environ.get(CTI_ENV, "")
    entries = [e for e in value.split(os.pathsep) if e.strip()]
    if not entries:
        raise GenTLProducerError(f"no GenTL producer: set params.cti to a .cti file, or {CTI_ENV} to its folder")
    files: list[str] = []
    for entry in entries:  # the standard lists folders; a file is accepted too
        files += sorted(glob.glob(os.path.join(entry, "*.cti"))) if os.path.isdir(entry) else [entry] if os.path.isfile(entry) else []
    if not files:
        raise GenTLProducerError(f"{CTI_ENV}={value!r} names no .cti file")
    return files


def _package_file(spec: str) -> str:
    package, _, name = spec.partition("/")
    found = importlib.util.find_spec(package) if package else None
    if found is None or not found.submodule_search_locations:
        return spec
    return os.path.join(list(found.submodule_search_locations)[0], name)


def select_device(devices: Sequence[Any], wanted: str | None) -> int:
    """Index of the device whose serial number, id or user-defined name is ``wanted`` (first if None)."""
    if wanted is None:
        return 0
    for index, info in enumerate(devices):
        if wanted in (_attr(info, "serial_number"), _attr(info, "id_"), _attr(info, "user_defined_name")):
            return index
    found = "; ".join(f"id {_attr(d, 'id_')!r} serial {_attr(d, 'serial_number')!r} name {_attr(d, 'user_defined_name')!r}" for d in devices)
    raise DeviceNotFoundError(f"no device has the serial number, id or user-defined name {wanted!r} (found: {found or 'none'})")


Features = Mapping[str, Any] | Sequence[Mapping[str, Any] | tuple[str, Any]]


def feature_list(features: Features | None) -> list[tuple[str, Any]]:
    """Features as ordered (name, value) pairs.

    A mapping is enough for most cameras; a list of one-key mappings lets a feature come
    back, as selector-indexed features need (TriggerSelector, then TriggerMode, twice).
    """
    if not features:
        return []
    if isinstance(features, Mapping):
        return list(features.items())
    return [pair for item in features for pair in (item.items() if isinstance(item, Mapping) else [tuple(item)])]


def apply_features(node_map: Any, features: Features) -> None:
    """Set GenICam features in order; the first that is missing, read-only or refused raises FeatureError."""
    for name, value in feature_list(features):
        node = getattr(node_map, name, None)
        if node is None:
            raise FeatureError(f"the device has no feature {name!r} (asked to set it to {value!r})")
        access = node.node.get_access_mode()
        if access not in _WRITABLE:
            raise FeatureError(f"feature {name!r} is not writable on this device now (asked to set it to {value!r})")
        value = _enum_word(node, value)
        try:
            if hasattr(node, "execute"):  # a command: a true value runs it
                if value:
                    node.execute()
            else:
                node.value = value
        except (GenApiError, GenTLError, TypeError, ValueError) as exc:
            allowed = _attr(node, "symbolics")
            hint = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
            raise FeatureError(f"the device refused {name} = {value!r}: {_reason(exc)}{hint}") from exc


def _enum_word(node: Any, value: Any) -> Any:
    """YAML reads an unquoted On/Off as a boolean; an enumeration wants the word back."""
    if not isinstance(value, bool):
        return value
    allowed = _attr(node, "symbolics") or ()
    for word in (("On", "True", "Yes") if value else ("Off", "False", "No")):
        if word in allowed:
            return word
    return value


def _reason(exc: BaseException) -> str:
    """GenApi's message without its C++ location suffix."""
    text = re.sub(r"\s*:\s*\w+Exception thrown .*$", "", str(exc), flags=re.S).strip()
    return text or type(exc).__name__


def _attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except Exception:  # a producer may refuse to tell; an absent value is not an error here
        return None


def _read(node_map: Any, name: str) -> float | None:
    node = getattr(node_map, name, None)
    try:
        return None if node is None else float(node.value)
    except Exception:  # not readable in this device state
        return None


class _Counter(Callback):
    """Counts the incomplete buffers harvesters discards."""

    def __init__(self, stats: Any):
        self._stats = stats

    def emit(self, context: object | None = None) -> None:
        self._stats.incomplete += 1


class GenICamSource(Source):
    """One GenICam device. A GenTL producer serves one process: one genicam camera per agent process.

    ``trigger`` is "free-run" (the device streams; a fetch timeout means it is lost),
    "software" (``trigger()`` executes TriggerSoftware) or "hardware" (a line triggers the
    device; timeouts are quiet spells, not losses).
    """

    paced = False

    def __init__(
        self,
        *,
        cti: str | None = None,
        device: str | None = None,
        features: Features | None = None,
        trigger: str = "free-run",
        timeout: float = 2.0,
        buffers: int = 8,
        fps: float | None = None,
    ):
        super().__init__()
        self.cti = cti
        self.device = device
        self.features = feature_list(features)
        self.trigger_mode = trigger
        self.timeout = timeout
        self.buffers = buffers
        self.fps = fps
        self._harvester: Harvester | None = None
        self._acquirer: ImageAcquirer | None = None
        self._last_frame_id: int | None = None
        self._exposure: float | None = None
        self._gain: float | None = None

    def open(self) -> None:
        self.close()
        files = resolve_cti(self.cti)
        harvester = Harvester()
        self._harvester = harvester
        try:
            for path in files:
                harvester.add_file(path)
            harvester.update()
            devices = harvester.device_info_list
            if not devices:
                raise GenTLProducerError(
                    f"GenTL producer {', '.join(files)} offers no device (not a GenTL producer, or no camera connected)"
                )
            index = select_device(devices, self.device)
            try:
                self._acquirer = harvester.create(index)
            except (GenTLError, GenApiError) as exc:
                raise DeviceLostError(f"device {self.device or index!r} could not be opened: {_reason(exc)}") from exc
            self._configure(self._acquirer, devices[index])
        except BaseException:
            self.close()
            raise

    def _configure(self, acquirer: ImageAcquirer, info: Any) -> None:
        node_map = acquirer.remote_device.node_map
        apply_features(node_map, self.features)
        named = {name for name, _ in self.features}
        if self.fps and "AcquisitionFrameRate" not in named and getattr(node_map, "AcquisitionFrameRate", None) is not None:
            apply_features(node_map, {"AcquisitionFrameRate": float(self.fps)})
        if self.trigger_mode == "software" and getattr(node_map, "TriggerSoftware", None) is None:
            raise FeatureError("trigger 'software' needs the feature 'TriggerSoftware', which the device does not have")
        pixel_format = str(node_map.PixelFormat.value) if getattr(node_map, "PixelFormat", None) is not None else "Mono8"
        lookup(pixel_format)  # refuse an unsupported format now, not at the first frame
        self._exposure = _read(node_map, "ExposureTime")
        self._gain = _read(node_map, "Gain")
        acquirer.num_buffers = max(acquirer.min_num_buffers, self.buffers)
        acquirer.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, _Counter(self.stats))
        acquirer.start()
        self._last_frame_id = None
        self.info = {
            "device": _attr(info, "display_name") or _attr(info, "id_"),
            "serial": _attr(info, "serial_number"),
            "pixel_format": pixel_format,
            "trigger": self.trigger_mode,
        }

    def trigger(self) -> None:
        if self.trigger_mode != "software":
            return
        acquirer = self._require()
        try:
            acquirer.remote_device.node_map.TriggerSoftware.execute()
        except (GenApiError, GenTLError) as exc:
            raise DeviceLostError(f"software trigger failed: {_reason(exc)}") from exc

    def grab(self, part_id: int) -> Grabbed | None:
        acquirer = self._require()
        try:
            buffer = acquirer.fetch(timeout=self.timeout)
        except TimeoutException:
            if self.trigger_mode == "free-run":
                raise DeviceLostError(f"no frame within {self.timeout} s from a free-running device") from None
            return None
        except (GenTLError, GenApiError, IndexError) as exc:
            raise DeviceLostError(f"fetching a frame failed: {_reason(exc)}") from exc
        with buffer:  # queues the buffer back to the producer on leaving
            acquired = time.time()
            component = buffer.payload.components[0]
            pixel_format = component.data_format
            padding = _attr(buffer.module, "padding_x") or 0
            pitch = component.width * lookup(pixel_format).bytes_per_pixel + padding if padding else None
            image, sent_as = to_array(component.data, component.width, component.height, pixel_format, line_pitch=pitch, copy=True)
            frame_id = _attr(buffer.module, "frame_id")
        if frame_id is not None and self._last_frame_id is not None and frame_id > self._last_frame_id + 1:
            self.stats.dropped += frame_id - self._last_frame_id - 1
        self._last_frame_id = frame_id
        return Grabbed(image, sent_as, acquired, frame_id=frame_id, exposure_us=self._exposure, gain=self._gain)

    def _require(self) -> ImageAcquirer:
        if self._acquirer is None:
            raise DeviceLostError("the device is not open")
        return self._acquirer

    def close(self) -> None:
        acquirer, harvester = self._acquirer, self._harvester
        self._acquirer = self._harvester = None
        for step in (
            (lambda: acquirer.stop()) if acquirer else None,
            (lambda: acquirer.destroy()) if acquirer else None,
            (lambda: harvester.reset()) if harvester else None,
        ):
            if step is None:
                continue
            try:
                step()
            except (GenTLError, GenApiError, CameraError, RuntimeError, IndexError) as exc:
                # A lost device can't be stopped cleanly; releasing the rest still matters.
                self.info["close_error"] = _reason(exc)

