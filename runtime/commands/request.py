"""``graphrun request GRAPH AGENT.PORT FILE [--timeout S]``: one request into a running graph.

FILE is an image (PNG, JPEG or TIFF, read with OpenCV, sent as a frame-like payload:
``--field KEY=VALUE`` sets more fields, such as ``part_id=7``) or a JSON object. The
answer of the graph (by default the output where the graph downstream of AGENT ends;
``--answer AGENT.PORT`` names another) is printed as JSON; no answer within the timeout
exits with 1 and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import add_redis_option
from ..client import DEFAULT_TIMEOUT, GraphClient
from ..errors import ConfigError
from ..request_payloads import (
    IMAGE_SUFFIXES,
    field_value,
    image_payload,
    json_payload,
    object_payload,
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    request = subparsers.add_parser("request", help="send one image or JSON payload to an input port and print "
                                                    "the graph's answer as JSON")
    request.add_argument("graph", type=Path)
    request.add_argument("port", metavar="AGENT.PORT", help="the input port the request goes to")
    request.add_argument("file", type=Path, metavar="FILE", help="a PNG, JPEG or TIFF image, or a .json payload")
    request.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                         help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT:g})")
    request.add_argument("--answer", metavar="AGENT.PORT", help="the output that answers (default: where the graph ends)")
    request.add_argument("--field", action="append", default=[], metavar="KEY=VALUE", type=_field,
                         help="a payload field beside an image (VALUE read as JSON, else as text); repeatable")
    request.add_argument("--priority", type=int, default=0, help="higher is handled first among waiting requests")
    add_redis_option(request)
    request.set_defaults(func=cmd_request)


def _field(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, field_value(value)


def read_payload(path: Path, fields: dict[str, Any]) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return image_payload(data, str(path), **fields)
    if path.suffix.lower() == ".json":
        return {**object_payload(data, str(path)), **fields}
    raise ConfigError(f"{path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a .json payload")


def cmd_request(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout:g}")
    payload = read_payload(args.file, dict(args.field))
    with GraphClient(args.graph, redis_urls=dict(args.redis), timeout=args.timeout, name="cli") as client:
        answer = client.request(args.port, payload, priority=args.priority, answer=args.answer)
    json.dump(json_payload(answer.payload), sys.stdout)
    sys.stdout.write("\n")
    return 0
