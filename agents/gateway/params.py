"""The HTTP gateway's graph parameters."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GatewayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on; beyond this machine the operator token is required")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0: any free one (shown in the health record)")
    timeout: float = Field(10.0, gt=0, description="seconds a request waits for its answer, unless it asks for less")
    max_timeout: float = Field(60.0, gt=0, description="the most a request may ask for with ?timeout=S")
    max_backlog: int | None = Field(None, ge=1, description="answer 503 while a port has this many requests waiting")
    ports: list[str] | None = Field(None, description="the AGENT.PORT inputs open to requests; default: every input")
    max_body_bytes: int = Field(64 << 20, gt=0, description="largest request body accepted")
