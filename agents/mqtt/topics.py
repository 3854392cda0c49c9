"""Which output port a received topic belongs to: the first subscription whose filter matches it."""

from __future__ import annotations

from collections.abc import Mapping

from paho.mqtt.client import topic_matches_sub


class Routes:
    def __init__(self, filters: Mapping[str, str]):
        self._filters = list(filters.items())  # (port, filter), in the graph's order

    def port(self, topic: str) -> str | None:
        """The port of the first subscription that matches ``topic`` (filters may overlap),
        None for a topic no subscription of this run matches."""
        for port, topic_filter in self._filters:
            if topic_matches_sub(topic_filter, topic):
                return port
        return None
