"""The archive agent: keeps every rejected part's images, verdicts, model versions and PLC
result on disk, with an index queryable by part id, time and label (``graphrun archive``).

Delivery contract: a part's messages (its frames, verdicts and PLC result) are held
until the part is settled: stored durably (files synced, index row committed) when it
was rejected, or simply passed when it was not. Only then are they acknowledged, so a
crash at any point makes Redis deliver them again; a part delivered again is found in
the index and stored once. The join of a part's messages is the one the PLC agent
uses (``graphrun_agents.part_join``), with the frames and the PLC result as views
beside the verdicts.

A part still missing a view ``join_timeout`` seconds after its first message is settled
with what arrived (a frame trimmed from its stream, a PLC that is down): rejected by its
verdicts, stored, and its PLC result added to the record when it comes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import PurePosixPath

from graphrun import Agent, DeadLetter, Deployment, Input, Inputs, Message

from ..errors import AgentConfigError
from ..messages import Frame, PlcResult, Verdict
from ..part_join import Join, Offer, Part
from . import record as records
from .params import ArchiveParams, archive_directory
from .store import Archive


class ArchiveAgent(Agent):
    """Stores rejected parts; see agents/archive/README.md."""

    frames = Inputs(Frame, doc="one port per camera; each rejected part's images are kept losslessly (PNG)")
    verdicts = Inputs(Verdict, doc="one port per camera view: a part is complete when every one has answered")
    results = Input(PlcResult, required=False,
                    doc="the PLC agent's results: what the PLC was given decides what is kept (not ok: kept)")

    Params = ArchiveParams
    params: ArchiveParams
    tick_interval = 0.1

    #: Where a container's default archive directory (its user's ~/.local/share/graphrun) is kept on the host.
    HOST_DIRECTORY = "/var/lib/graphrun/archive"
    CONTAINER_DATA = "/home/graphrun/.local/share/graphrun"

    @classmethod
    def deployment(cls, params: ArchiveParams) -> Deployment:
        """The archive must outlive its container: its directory is a folder of the host
        (which the image's user, uid 10001, may write)."""
        directory = params.directory
        if directory and PurePosixPath(directory).is_absolute():
            return Deployment(volumes=(f"{directory}:{directory}",),
                              notes=(f"archive in {directory} on the host (writable by uid 10001)",))
        if directory:
            lost = f"archive in {directory} inside the container, lost with it: give params.directory as an absolute path"
            return Deployment(notes=(lost,))
        return Deployment(volumes=(f"{cls.HOST_DIRECTORY}:{cls.CONTAINER_DATA}",),
                          notes=(f"archive in {cls.HOST_DIRECTORY} on the host (writable by uid 10001)",))

    def start(self) -> None:
        if not self.verdicts:
            raise AgentConfigError(f"archive agent {self.name!r} has no verdict inputs: connect at least one")
        p = self.params
        self._with_result = self.is_connected("results")
        views = (*self.frames, *self.verdicts, *((records.RESULT,) if self._with_result else ()))
        self._join: Join[Message] = Join(views, p.join_timeout)
        self.directory = archive_directory(p, self.graph, self.name)
        self.archive = Archive(self.directory, p.retention, self.log)
        self.archive.recover()
        self._prune()
        self._next_prune = time.monotonic() + p.retention.interval
        self._failing = False
        self.status.update(directory=str(self.directory), parts=0, stored=0, passed=0, duplicates=0,
                           archived=self.archive.index.count(), bytes=self.archive.index.total_bytes())
        self.log.info("archiving rejected parts of %s in %s", ", ".join(views), self.directory)

    def stop(self) -> None:
        archive = getattr(self, "archive", None)
        if archive is not None:
            archive.close()

    # --- messages and time ----------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if "part_id" not in msg.payload:
            raise DeadLetter(f"message on {msg.port!r} has no part_id")
        try:
            part_id = int(msg["part_id"])
        except (TypeError, ValueError):
            raise DeadLetter(f"message on {msg.port!r} has part_id {msg['part_id']!r}, not an integer") from None
        if part_id not in self._join.open and len(self._join.open) >= self.params.max_open:
            self._settle_oldest()
        if self._join.offer(msg.port or "", msg.payload, msg, time.monotonic()) is Offer.HELD:
            self.hold(msg)
        elif msg.port == records.RESULT:
            self._late_result(msg)
        self._settle()

    def tick(self) -> None:
        for part in self._join.expire(time.monotonic()):
            self.log.warning("part %s: no %s within %.1f s; settled with what arrived", part.part_id,
                             ", ".join(part.missing), self.params.join_timeout)
        self._settle()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + self.params.retention.interval
            self._prune()
        self.status["open"] = len(self._join.open)

    # --- settling parts ---------------------------------------------------------------------

    def _settle_oldest(self) -> None:
        """Make room for a new part: the oldest open part is settled with what arrived.

        Not a Retry: a message refused over and over (parts waiting for a PLC that is
        down) would end up dead-lettered, its part never archived.
        """
        oldest = next(iter(self._join.open.values()))
        for part in self._join.expire(oldest.opened + self._join.timeout):
            self.log.warning("part %s: %d parts open (max_open); settled early without %s", part.part_id,
                             self.params.max_open, ", ".join(part.missing))

    def _settle(self) -> None:
        """Store or pass the closed parts, oldest first; a failing disk keeps them held."""
        queue = self._join.queue
        while queue and not self.stopping:
            part = queue[0]
            try:
                stored = self._keep(part)
            except Exception as exc:  # the part stays held and is tried again; the agent lives on
                if not self._failing:
                    if isinstance(exc, (OSError, sqlite3.Error)):
                        self.log.error("cannot store part %s in %s: %s; its messages stay held, retrying",
                                       part.part_id, self.directory, exc)
                    else:
                        self.log.exception("cannot store part %s; its messages stay held, retrying", part.part_id)
                self._failing = True
                self.status["error"] = f"part {part.part_id}: {type(exc).__name__}: {exc}"
                return
            if self._failing:
                self.log.warning("storing parts again in %s", self.directory)
                self._failing = False
                self.status.pop("error", None)
            self._join.written(part)
            self.release(*part.items)
            self.status["parts"] += 1
            if stored:
                self._prune()

    def _keep(self, part: Part[Message]) -> bool:
        """Store ``part`` if rejected and not stored yet; whether it was stored now."""
        existing = self.archive.find(part.part_id, records.origin(part))
        plc = part.views.get(records.RESULT)
        if existing is not None:
            self.status["duplicates"] += 1
            if plc is not None and existing.plc_sequence is None:
                self.archive.add_result(existing, plc)
            self.log.info("part %s is already archived: acknowledged, not stored again", part.part_id)
            return False
        if not records.rejected(part, self.verdicts):
            self.status["passed"] += 1
            return False
        built = records.build(part, self.frames, self.verdicts, self.params.png_compression)
        entry = self.archive.put(built.record, built.files, model_versions=built.model_versions)
        self.status["stored"] += 1
        self.log.debug("part %s archived (%s, %s): %s", part.part_id, entry.outcome, entry.label, entry.path)
        return True

    def _late_result(self, msg: Message) -> None:
        """A PLC result of a part settled without it: added to the part's record if stored."""
        entry = self.archive.find(int(msg["part_id"]), msg.created)
        if entry is not None and entry.plc_sequence is None:
            self.archive.add_result(entry, msg.payload)
            self.log.info("part %s: its PLC result arrived late and is added to its record", msg["part_id"])
        elif entry is None and msg.get("outcome") != "ok":
            self.log.warning("part %s: the PLC was given %r, but the part was settled without it and not stored "
                             "(its verdicts passed it)", msg["part_id"], msg.get("outcome"))

    def _prune(self) -> None:
        removed = self.archive.prune()
        if removed:
            self.log.info("retention: deleted %d part(s), oldest %s", len(removed),
                          min(e.part_id for e in removed))
        self.status.update(archived=self.archive.index.count(), bytes=self.archive.index.total_bytes())
