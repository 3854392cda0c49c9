"""``graphrun echo GRAPH AGENT.PORT``: the messages on a port's stream, as they flow.

One line per message: entry id, producer, age since the origin of its chain, and the
payload with each array shown as dtype, shape and range. It reads with plain XREAD, so
the agents' consumer groups see nothing of it. ``--save DIR`` keeps the images
(2-D uint8/uint16, or HxWx3 in OpenCV's BGR order) as PNG files, to look at a frame
the classifier judged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import follow
from ..cli import add_redis_option
from ..errors import ConfigError
from ..summary import arrays, decode, entry_line
from ..transport import Entry


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    echo = subparsers.add_parser("echo", help="print the messages on a port's stream as they flow (XREAD: disturbs nothing)")
    echo.add_argument("graph", type=Path)
    echo.add_argument("port", metavar="AGENT.PORT", help="an output port, or an input port (its stream)")
    echo.add_argument("--count", type=follow.positive, metavar="N", help="stop after N messages")
    echo.add_argument("--save", type=Path, metavar="DIR", help="write image arrays as PNG files named ENTRYID_FIELD.png")
    start = echo.add_mutually_exclusive_group()
    start.add_argument("--from", dest="after", metavar="ID", help="start after this entry id (default: new messages only)")
    start.add_argument("--last", type=follow.positive, metavar="N", help="show the last N messages, then follow")
    add_redis_option(echo)
    echo.set_defaults(func=cmd_echo)


def is_image(array: np.ndarray) -> bool:
    """What a PNG can hold as it is: 2-D Mono8/Mono16, or HxWx3 (BGR)."""
    if array.dtype not in (np.uint8, np.uint16) or 0 in array.shape:
        return False
    return array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)


def save_images(folder: Path, entry: Entry) -> list[Path]:
    """Write the entry's image arrays as ``<entry id>_<field path>.png``; the paths written."""
    message, _ = decode(entry.fields or {})
    if message is None:
        return []
    images = [(name, array) for name, array in arrays(message.payload) if is_image(array)]
    if not images:
        return []
    try:
        import cv2
    except ImportError as exc:
        raise ConfigError(f"--save needs OpenCV: pip install 'graphrun[camera]' ({exc})") from exc
    written = []
    for name, array in images:
        path = folder / f"{entry.id}_{name}.png"
        if not cv2.imwrite(str(path), array):
            raise ConfigError(f"could not write {path}")
        written.append(path)
    return written


def cmd_echo(args: argparse.Namespace) -> int:
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    with follow.watching(args.graph, args.port, dict(args.redis)) as (client, ref):
        backlog: list[Entry] = []
        if args.after is not None:
            start = follow.entry_id(args.after)
        elif args.last is not None:
            backlog = follow.latest(client, ref.key, args.last)
            start = backlog[-1].id if backlog else follow.last_id(client, ref.key)
        else:
            start = follow.last_id(client, ref.key)
        print(f"# {args.port} on {ref}, after {start}", file=sys.stderr, flush=True)
        shown = _show(backlog, args, args.count)
        if args.count is not None and shown >= args.count:
            return 0
        for batch in follow.follow(client, ref.key, start):
            shown += _show(batch, args, args.count - shown if args.count is not None else None)
            if args.count is not None and shown >= args.count:
                return 0
    return 0


def _show(entries: Iterable[Entry], args: argparse.Namespace, limit: int | None = None) -> int:
    shown = 0
    for entry in entries:
        if limit is not None and shown >= limit:
            break
        print(entry_line(entry.id, entry.fields or {}), flush=True)
        if args.save is not None:
            for path in save_images(args.save, entry):
                print(f"  saved {path}", flush=True)
        shown += 1
    return shown
