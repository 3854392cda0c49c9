"""Errors of the built-in agents, in one place. Each section belongs to one agent."""

from __future__ import annotations

from graphrun import GraphrunError


class AgentConfigError(GraphrunError):
    """A built-in agent's parameters are well-typed but unusable (a map that overlaps, say)."""


# --- camera ---------------------------------------------------------------------------


class CameraError(GraphrunError):
    """A camera source cannot deliver frames (base of the camera's errors)."""


class CameraConfigError(CameraError, AgentConfigError):
    """A camera parameter is well-typed but unusable (an unknown view, an empty folder)."""


class PixelFormatError(CameraError):
    """A buffer's pixel format cannot be converted, or its size does not match it."""


class GenTLProducerError(CameraError):
    """The GenTL producer (.cti file) is missing, unreadable or offers no device."""


class DeviceNotFoundError(CameraError):
    """No device matches the serial number, id or user-defined name asked for."""


class FeatureError(CameraError):
    """A GenICam feature is missing on the device, not writable, or refuses the value."""


class DeviceLostError(CameraError):
    """A device or stream stopped delivering frames; the agent reconnects with backoff."""


# --- classification -------------------------------------------------------------------


class FrameFormatError(GraphrunError):
    """A frame's shape, channels or dtype can't be turned into the model's input."""


class ModelError(GraphrunError):
    """A model file or stored model version is missing, unreadable or unusable."""


class PreprocessConfigError(AgentConfigError):
    """A pre-processing spec does not fit the model it feeds (input size, channels, layout)."""


class RedisAIError(GraphrunError):
    """RedisAI rejected a command or answered with something the agent can't parse."""


# --- modbus ---------------------------------------------------------------------------
