"""Delivery: the at-least-once rule, in one place.

Agent code runs inside an ``Attempt``. What it does there (outputs sent, messages
held, held messages released) is kept apart until the code returns:

- an attempt that returns is *committed*: its outputs go to the outbox, and its
  messages (those not held) and the held messages it released are acknowledged
  after those outputs, in the same flush (see ``outbox``);
- an attempt that raises is *discarded*: none of its outputs is ever written, its
  holds and releases are undone, and its messages stay pending in Redis, to be
  retried (with a backoff of their own), dead-lettered, or taken over by another
  consumer if this one dies.

So a message's outputs are written once per successful attempt, before its XACK.

Owner: the runner's handling thread. Reader threads never touch this state.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .backoff import Backoff
from .errors import DeadLetter, FrameUnavailable, MessageFormatError, Retry
from .graph import InputBinding
from .health import Counters
from .message import Message
from .outbox import Outbox, Write
from .payload_check import payload_checker
from .transport import Entry, id_tuple

log = logging.getLogger("graphrun.runner")

DEAD_LETTER_MAXLEN = 100_000
EXCERPT_BYTES = 64 << 10  # of each field of a malformed entry kept in its dead letter
RETRY_INITIAL = 0.1  # seconds before the first retry of a failed message
RETRY_MAX = 30.0


@dataclass
class Attempt:
    """What agent code did during one call, not yet visible to anyone."""

    writes: list[Write] = field(default_factory=list)
    holds: list[tuple[str, str, InputBinding]] = field(default_factory=list)  # (stream, entry id, binding)
    releases: list[tuple[str, str]] = field(default_factory=list)  # (stream, entry id)


class RetrySchedule:
    """When each failed message is due again: its own backoff, reset by a success.

    Keyed by (instance, stream, entry id). A message that keeps failing waits longer
    each time; a success or a dead letter forgets it, so one bad message never slows
    the retries of others.
    """

    def __init__(self) -> None:
        self._due: dict[tuple[str, str, str], tuple[float, Backoff]] = {}

    def failed(self, instance: str, stream: str, entry_id: str, delay: float | None = None) -> float:
        """Schedule the next try; ``delay`` (from ``Retry``) overrides the backoff."""
        key = (instance, stream, entry_id)
        backoff = self._due[key][1] if key in self._due else Backoff(initial=RETRY_INITIAL, maximum=RETRY_MAX)
        wait = backoff.next() if delay is None else delay
        self._due[key] = (time.monotonic() + wait, backoff)
        return wait

    def forget(self, instance: str, stream: str, entry_ids: Iterable[str]) -> None:
        for entry_id in entry_ids:
            self._due.pop((instance, stream, entry_id), None)

    def next_due(self) -> float | None:
        return min((due for due, _ in self._due.values()), default=None)

    def due(self, now: float) -> dict[tuple[str, str], list[str]]:
        """(instance, stream) -> ids due now, oldest first. They stay scheduled until forgotten
        or failed again, so a retry that cannot be sent (Redis down) is not lost."""
        out: dict[tuple[str, str], list[str]] = defaultdict(list)
        for (instance, stream, entry_id), (when, _) in self._due.items():
            if when <= now:
                out[(instance, stream)].append(entry_id)
        for ids in out.values():
            ids.sort(key=id_tuple)
        return out

    def scheduled(self) -> dict[tuple[str, str], list[str]]:
        """(instance, stream) -> every id waiting for a retry (kept ours against reclaims)."""
        out: dict[tuple[str, str], list[str]] = defaultdict(list)
        for instance, stream, entry_id in self._due:
            out[(instance, stream)].append(entry_id)
        return out

    def __len__(self) -> int:
        return len(self._due)


class Delivery:
    """Turns entries read from Redis into attempts of agent code, and their outcomes into
    acknowledgements, retries and dead letters."""

    def __init__(self, *, agent_name: str, consumer: str, inputs: Mapping[str, InputBinding],
                 outbox: Outbox, counters: Counters, handle: Callable[[Message], None],
                 handle_batch: Callable[[list[Message]], None] | None,
                 payload_types: Mapping[str, type | None] | None = None,
                 on_batch: Callable[[list[Message], float], None] | None = None,
                 index_key: Callable[[InputBinding, Mapping[str, Any]], str | None] | None = None):
        self._agent = agent_name
        self._consumer = consumer
        self._inputs = inputs
        self._by_stream = {(b.instance, b.key): b for b in inputs.values()}
        types = payload_types or {}
        self._checks = {port: payload_checker(types.get(port)) for port in inputs}  # port -> check or None
        self._outbox = outbox
        self._counters = counters
        self._handle_one = handle
        self._handle_batch = handle_batch  # None: the agent handles one message at a time
        self._on_batch = on_batch  # (messages, seconds) after each batch: the metrics' histograms
        self._index_key = index_key  # (input, payload) -> the index list of a dead letter, for trace
        self.held: dict[tuple[str, str], InputBinding] = {}  # (stream, entry id) -> binding
        self.retries = RetrySchedule()
        self.attempt: Attempt | None = None
        self.current: Message | None = None  # the message in hand: sends inherit its trace
        self._last_errors: dict[str, str] = {}  # entry id -> last failure, for the dead letter
        self.last_error: str | None = None  # the latest handling failure, for the health record

    # --- what agent code calls, through the runner ----------------------------------------

    def binding_of(self, message: Message) -> InputBinding:
        binding = self._inputs.get(message.port or "")
        if binding is None or binding.key != message.stream:
            raise ValueError(f"{message!r} was not received by this agent")
        return binding

    def hold(self, message: Message) -> None:
        self._open().holds.append((message.stream or "", message.entry_id or "", self.binding_of(message)))

    def release(self, messages: Iterable[Message]) -> None:
        self._open().releases.extend((m.stream or "", m.entry_id or "") for m in messages)

    def emit(self, write: Write) -> None:
        self._open().writes.append(write)

    def _open(self) -> Attempt:
        if self.attempt is None:
            raise RuntimeError("agent code may send, hold and release only while the runtime calls it")
        return self.attempt

    # --- running agent code -----------------------------------------------------------------

    def attempt_call(self, call: Callable[[], None], messages: list[Message] = ()) -> BaseException | None:  # type: ignore[assignment]
        """Run agent code as one attempt: commit what it did if it returns, discard it if it
        raises (and return the exception)."""
        attempt = self.attempt = Attempt()
        self.current = messages[0] if len(messages) == 1 else None
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the caller accounts for every failure
            return exc
        finally:
            self.attempt = None
            self.current = None
        self._commit(attempt, messages)
        return None

    def _commit(self, attempt: Attempt, messages: list[Message]) -> None:
        for stream, entry_id, binding in attempt.holds:
            self.held[(stream, entry_id)] = binding
        acks: dict[InputBinding, list[str]] = defaultdict(list)
        for key in attempt.releases:
            binding = self.held.pop(key, None)
            if binding is not None:
                acks[binding].append(key[1])
        for message in messages:
            binding = self.binding_of(message)
            if (binding.key, message.entry_id) not in self.held:
                acks[binding].append(message.entry_id or "")
            self.retries.forget(binding.instance, binding.key, [message.entry_id or ""])
            self._last_errors.pop(message.entry_id or "", None)
        self._counters.handled += len(messages)
        self._outbox.commit(_mark_answers_ended(attempt.writes), acks)

    # --- a batch read from Redis -----------------------------------------------------------

    def process(self, instance: str, entries: list[Entry], counts: Mapping[str, int] | None) -> None:
        """Handle entries read from one instance; ``counts`` are delivery counts when the
        entries were delivered before (retries, own pending, claims)."""
        self._counters.received += len(entries)
        received = time.time()
        raw: dict[tuple[str, str], Entry] = {}
        good: list[Message] = []
        for entry in entries:
            binding = self._by_stream[(instance, entry.stream)]
            if entry.fields is None:  # deleted while pending: nothing left to handle
                self._outbox.commit([], {binding: [entry.id]})
                self.retries.forget(instance, entry.stream, [entry.id])
                continue
            deliveries = 1 if counts is None else counts.get(entry.id, 1)
            if deliveries > binding.spec.max_deliveries:
                reason = f"failed {deliveries - 1} deliveries (max_deliveries={binding.spec.max_deliveries})"
                last = self._last_errors.pop(entry.id, None)
                self.dead_letter(binding, entry, f"{reason}; last error: {last}" if last else reason)
                continue
            try:
                message = codec.decode(entry.fields)
            except FrameUnavailable as exc:  # its frame is not in shared memory as written: never wrong pixels
                self._counters.frames_unavailable += 1
                self.dead_letter(binding, entry, f"frame unavailable: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - whatever the bytes, the entry is dead-lettered with why
                self.dead_letter(binding, entry, f"malformed entry: {type(exc).__name__}: {exc}", excerpt=True)
                continue
            check = self._checks.get(binding.port)
            problem = check(message.payload) if check is not None else None
            if problem is not None:
                self.dead_letter(binding, entry, f"payload does not fit input {binding.port!r}: {problem}")
                continue
            if message.request is not None and message.request.expired(received):
                self._skip_expired(binding, entry, message)
                continue
            message.port, message.entry_id, message.stream, message.received = binding.port, entry.id, entry.stream, received
            raw[(entry.stream, entry.id)] = entry
            good.append(message)
        if any(m.request is not None and m.request.priority for m in good):
            good.sort(key=lambda m: -m.request.priority if m.request is not None else 0)  # stable: else in order
        if good:
            started = time.perf_counter()
            self._handle(good, raw)
            if self._on_batch is not None:
                self._on_batch(good, time.perf_counter() - started)

    def _skip_expired(self, binding: InputBinding, entry: Entry, message: Message) -> None:
        """A request its caller no longer waits for: acknowledged, not handled."""
        self._outbox.commit([], {binding: [entry.id]})
        self.retries.forget(binding.instance, binding.key, [entry.id])
        self._counters.expired += 1
        request = message.request
        late = 0.0 if request is None or request.deadline is None else time.time() - request.deadline
        log.info("skipped %s/%s: request %s reached its deadline %.3f s before it was read",
                 binding.key, entry.id, request.id if request else "?", late)

    def _handle(self, messages: list[Message], raw: Mapping[tuple[str, str], Entry]) -> None:
        if self._handle_batch is None:
            for message in messages:  # one outcome per message
                self._outcome([message], self.attempt_call(lambda m=message: self._handle_one(m), [message]), raw)
            return
        handle_batch = self._handle_batch
        exc = self.attempt_call(lambda: handle_batch(messages), messages)
        if exc is None or len(messages) == 1 or isinstance(exc, Retry):
            self._outcome(messages, exc, raw)
            return
        # Find the culprit one message at a time, so good messages are not held back.
        for message in messages:
            self._outcome([message], self.attempt_call(lambda m=message: handle_batch([m]), [message]), raw)

    def _outcome(self, messages: list[Message], exc: BaseException | None,
                 raw: Mapping[tuple[str, str], Entry]) -> None:
        if exc is None:
            return
        if isinstance(exc, DeadLetter) and len(messages) == 1:
            message = messages[0]
            self.dead_letter(self.binding_of(message), raw[(message.stream or "", message.entry_id or "")],
                             f"DeadLetter: {exc}")
            return
        if isinstance(exc, Retry):
            self._counters.retried += len(messages)
        else:
            self._counters.failed += len(messages)
            log.error("handling %s failed: %s", ", ".join(f"{m.port}/{m.entry_id}" for m in messages),
                      "".join(traceback.format_exception_only(type(exc), exc)).strip())
            log.debug("traceback", exc_info=exc)
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Retry):  # a retry the agent asked for is no error
            self.last_error = error
        for message in messages:
            binding = self.binding_of(message)
            self._last_errors[message.entry_id or ""] = error
            wait = self.retries.failed(binding.instance, binding.key, message.entry_id or "",
                                       exc.delay if isinstance(exc, Retry) else None)
        if isinstance(exc, Retry):
            log.info("retry of %d message(s) in %.1f s: %s", len(messages), wait, exc)

    def _dead_letter_index(self, binding: InputBinding, fields: Mapping[bytes, Any], excerpt: bool) -> str | None:
        """The index list of a dead letter: its message's, so a part's trace shows it with why."""
        if self._index_key is None or excerpt:  # an excerpt is of an entry that does not decode
            return None
        try:
            return self._index_key(binding, codec.decode(fields, gone=lambda spec, why: None).payload)
        except MessageFormatError:
            return None

    def dead_letter(self, binding: InputBinding, entry: Entry, reason: str, *, excerpt: bool = False) -> None:
        """Move an entry to its dead-letter stream with why, and acknowledge it there-after.

        ``excerpt``: the entry is malformed, so it cannot be handled again as it is; its
        fields are kept only up to ``EXCERPT_BYTES`` each (``dl:truncated`` says which and
        how long they were), so a huge entry is not copied whole.
        """
        fields: Mapping[bytes, Any] = entry.fields or {}
        cut = {}
        if excerpt:
            cut = {k: len(v) for k, v in fields.items() if len(v) > EXCERPT_BYTES}
            fields = {k: (v[:EXCERPT_BYTES] if k in cut else v) for k, v in fields.items()}
        record = {
            **fields,
            **({b"dl:truncated": json.dumps({k.decode(errors="replace"): n for k, n in cut.items()}).encode()}
               if cut else {}),
            b"dl:error": reason.encode(),
            b"dl:agent": self._agent.encode(),
            b"dl:consumer": self._consumer.encode(),
            b"dl:stream": binding.key.encode(),
            b"dl:id": entry.id.encode(),
            b"dl:time": repr(time.time()).encode(),
        }
        target = binding.dead_letter
        self._outbox.commit([Write(target.instance, target.key, DEAD_LETTER_MAXLEN, record,
                                   index_key=self._dead_letter_index(binding, fields, excerpt))], {binding: [entry.id]})
        self.retries.forget(binding.instance, binding.key, [entry.id])
        self._last_errors.pop(entry.id, None)
        self._counters.dead_lettered += 1
        log.error("dead-lettered %s/%s to %s: %s", binding.key, entry.id, target, reason)


REPLY_END = b"end"  # the field that marks the last entry of an answer on a reply stream


def _mark_answers_ended(writes: list[Write]) -> list[Write]:
    """Marks the last reply of each request among one attempt's writes: a streamed answer
    (chunks sent while one message was handled) ends there, and the caller stops reading."""
    last = {w.reply: w for w in writes if w.reply is not None}
    for w in last.values():
        w.fields = {**w.fields, REPLY_END: b"1"}
    return writes
