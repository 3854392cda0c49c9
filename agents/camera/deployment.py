"""What a camera's container needs from the machine, for ``graphrun compose``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from graphrun import Deployment

if TYPE_CHECKING:
    from .agent import CameraParams


def camera_deployment(params: CameraParams) -> Deployment:
    """A GigE Vision camera is found by a broadcast, which a bridged network drops, so it
    uses the host's network; its GenTL producer comes from GENICAM_GENTL64_PATH or
    ``params.cti``, and an absolute cti path is the vendor's install on the host, mounted
    read-only. An OpenCV camera on a device index or /dev path needs that device."""
    if params.source == "genicam":
        cti = params.cti
        folder = os.path.dirname(cti) if cti is not None and os.path.isabs(cti) else None
        return Deployment(
            host_network=True,
            environment={"GENICAM_GENTL64_PATH": None},
            volumes=(f"{folder}:{folder}:ro",) if folder else (),
            notes=("GigE Vision camera, on the host's network",),
        )
    if params.source == "opencv":
        path = params.path
        if isinstance(path, int):
            return Deployment(devices=(f"/dev/video{path}",))
        if isinstance(path, str) and path.startswith("/dev/"):
            return Deployment(devices=(path,))
    return Deployment()
