"""Errors of the built-in agents, in one place. Each section belongs to one agent."""

from __future__ import annotations

from graphrun import GraphrunError


class AgentConfigError(GraphrunError):
    """A built-in agent's parameters are well-typed but unusable (a map that overlaps, say)."""


# --- camera ---------------------------------------------------------------------------


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
