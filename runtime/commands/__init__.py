"""The commands that look at a running graph, one module each.

Each module has ``register(subparsers)``, adding its subcommand to ``graphrun``; they find
the running graph through ``graphrun.locate``. ``NAMES`` lists them in the order
``graphrun --help`` shows them.
"""

from __future__ import annotations

import argparse
from importlib import import_module

NAMES = ["status", "graph", "echo", "hz", "dead", "record", "replay", "trace", "acl", "request"]


def register_all(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name in NAMES:
        import_module(f"{__name__}.{name}").register(subparsers)
