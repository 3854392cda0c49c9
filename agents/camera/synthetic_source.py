"""The ``synthetic`` source: rendered finger-follower parts, with their ground truth."""

from __future__ import annotations

import time

from .source import Grabbed, Source
from .synthetic import SyntheticConfig, render_part


class SyntheticSource(Source):
    """Renders part ``part_id``, so two cameras (front, back) asked for one id show one part."""

    def __init__(self, config: SyntheticConfig):
        super().__init__()
        self.config = config
        self.info = {"view": config.view, "seed": config.seed, "size": f"{config.width}x{config.height}"}

    def open(self) -> None:
        pass

    def grab(self, part_id: int) -> Grabbed:
        image, truth = render_part(part_id, self.config)
        return Grabbed(image, self.config.pixel_format, time.time(), truth=truth)

    def close(self) -> None:
        pass
