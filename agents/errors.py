"""Errors of the built-in agents, in one place. Each section belongs to one agent."""

from __future__ import annotations

from graphrun import GraphrunError


class AgentConfigError(GraphrunError):
    """A built-in agent's parameters are well-typed but unusable (a map that overlaps, say)."""


# --- camera ---------------------------------------------------------------------------


# --- classification -------------------------------------------------------------------


# --- modbus ---------------------------------------------------------------------------
