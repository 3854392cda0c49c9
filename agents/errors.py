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


class RegisterMapError(AgentConfigError, ValueError):
    """A Modbus register map is unusable: overlapping entries, a coil given a numeric encoding.

    Also a ValueError, so pydantic reports it against the graph's ``map`` with its line.
    """


class EncodingError(GraphrunError, ValueError):
    """A value does not fit the encoding its map entry declares (a part id too big for uint16)."""


class PlcAddressRefused(GraphrunError):
    """A write to an address outside the register map; refused before it reaches the wire."""


class PlcUnreachable(GraphrunError):
    """The PLC did not answer: no TCP connection, or no reply within the timeout."""


class PlcExceptionReply(GraphrunError):
    """The PLC answered a request with a Modbus exception (illegal address, device busy...)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# --- opcua ----------------------------------------------------------------------------


class OpcuaUnreachable(GraphrunError):
    """The OPC UA server did not answer: no connection, a closed session, or no reply in time."""


class OpcuaRefused(GraphrunError):
    """The OPC UA server answered a request with a bad status (a node it lacks, a wrong type,
    access denied)."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


# --- mqtt ---------------------------------------------------------------------------


class BrokerUnreachable(GraphrunError):
    """The MQTT broker did not answer, refused the connection or a subscription, or the link dropped."""


# --- hmi ------------------------------------------------------------------------------


class HmiServerError(GraphrunError):
    """The HMI's web server cannot listen where its parameters say (the port is taken, say)."""


class PreviewError(GraphrunError):
    """A frame's image cannot be shown as a preview (a dtype or shape the HMI does not know)."""
