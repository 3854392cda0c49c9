"""The HMI agent's parameters."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: Longest reason code an acknowledgement carries.
REASON_LENGTH = 64


class HmiParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1",
        description="address the web server listens on; 0.0.0.0 shows the HMI to the whole network",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the web server (0: any free port)")
    title: str = Field("Inspection", min_length=1, description="shown in the page's header")
    preview_width: int = Field(640, ge=16, le=8192, description="previews wider than this are scaled down")
    jpeg_quality: int = Field(80, ge=1, le=100)
    history: int = Field(50, ge=1, le=10_000, description="recent parts listed on the page")
    incomplete_after: float = Field(
        5.0, gt=0, description="seconds a part may wait for its missing views before it shows as incomplete"
    )
    refresh_ms: int = Field(250, ge=50, le=10_000, description="most often the page is sent news (pushed)")
    stream_fps: float = Field(10.0, gt=0, le=60, description="most images per second of an MJPEG stream")
    reject_window: int = Field(100, ge=1, le=100_000, description="the reject rate is over this many last parts")
    reject_alarm: float | None = Field(
        None, gt=0, le=1, description="reject rate (0-1) over a full window that raises the alarm; none: no alarm"
    )
    reason_codes: list[Annotated[str, Field(min_length=1, max_length=REASON_LENGTH)]] = Field(
        default_factory=list,
        description="the reason codes an acknowledgement may give, offered as a list; empty: any short text",
    )
