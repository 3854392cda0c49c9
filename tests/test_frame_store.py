"""The shared-memory frame store alone: slots, generations, checksums, abandoned slots,
the graph key, and AgentHarness on both paths. Real files in /dev/shm, no Redis."""

from __future__ import annotations

import gc
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from frame_agents import FrameCheck, FrameSource, pixels
from graphrun import frame_store
from graphrun.errors import FrameStoreError, FrameUnavailable, GraphError
from graphrun.frame_store import FrameStore, Ref
from graphrun.graph import load_graph
from graphrun.testing import AgentHarness

_names = itertools.count()


@pytest.fixture
def make_store() -> Iterator:
    """Stores of this test's own names under /dev/shm, removed afterwards."""
    made: list[FrameStore] = []

    def make(size: int = 4 << 20, slot_size: int = 1 << 20) -> FrameStore:
        store = FrameStore.create(f"graphrun-test-{os.getpid()}-{next(_names)}", size=size, slot_size=slot_size)
        made.append(store)
        return store

    yield make
    for store in made:
        frame_store.remove(store.path)


def test_a_frame_put_in_a_slot_is_read_back_as_a_read_only_view_without_a_copy(make_store) -> None:
    store = make_store(size=4 << 20, slot_size=2 << 20)
    frame = pixels(7, (1024, 1280))
    ref = store.put(memoryview(frame).cast("B"))
    assert ref is not None and ref.length == frame.nbytes
    first, second = frame_store.view(ref), frame_store.view(ref)
    assert not first.flags.writeable
    assert np.array_equal(first.reshape(frame.shape), frame)
    # Two readers of one reference see the same memory: the slot itself, not copies of it.
    assert np.shares_memory(first, second)


def test_a_reference_to_a_reused_slot_is_refused_naming_the_generations(make_store) -> None:
    store = make_store(size=1 << 20, slot_size=1 << 20)  # one slot: the next put reuses it
    old = store.put(pixels(1).tobytes())
    assert old is not None
    store.record(old, "frames", "1-0")
    assert store.free_before("frames", (1, 1)) == 1
    new = store.put(pixels(2).tobytes())
    assert new is not None and new.slot == old.slot and new.generation == old.generation + 1
    with pytest.raises(FrameUnavailable, match=r"was reused: generation 2, the entry refers to 1"):
        frame_store.view(old)
    assert np.array_equal(np.frombuffer(frame_store.view(new), np.uint8), pixels(2).reshape(-1))


def test_bytes_changed_behind_a_reference_fail_its_checksum(make_store) -> None:
    store = make_store()
    ref = store.put(pixels(3).tobytes())
    assert ref is not None
    with open(store.path, "r+b") as file:  # a stray write into the slot, generation untouched
        file.seek(store._data + ref.slot * store.slot_size + 10)
        file.write(b"\xff\xfe")
    with pytest.raises(FrameUnavailable, match="does not match its checksum"):
        frame_store.view(ref)


def test_a_full_store_or_a_frame_larger_than_a_slot_gives_no_reference(make_store) -> None:
    store = make_store(size=2 << 20, slot_size=1 << 20)
    assert store.put(bytes(2 << 20)) is None  # larger than a slot
    assert store.put(bytes(100)) is not None and store.put(bytes(100)) is not None
    assert store.put(bytes(100)) is None  # both slots taken
    assert store.usage() == {"slots": 2, "free": 0, "taken": 2, "written": 0}


def test_a_frame_of_another_host_is_refused_naming_both_hosts(make_store) -> None:
    store = make_store()
    ref = store.put(bytes(10))
    assert ref is not None
    elsewhere = Ref(ref.name, ref.store, "camera-box-2", ref.slot, ref.generation, ref.length, ref.checksum)
    with pytest.raises(FrameUnavailable, match=r"on host 'camera-box-2', not on this host"):
        frame_store.view(elsewhere)


def test_a_frame_from_another_container_of_this_host_is_read(make_store) -> None:
    store = make_store()
    ref = store.put(b"pixels")
    assert ref is not None
    boot = frame_store.HOST.rpartition("@")[2]  # containers share the kernel's boot id, not the host name
    neighbour = Ref(ref.name, ref.store, f"camera-container@{boot}", ref.slot, ref.generation, ref.length,
                    ref.checksum)
    assert bytes(frame_store.view(neighbour)) == b"pixels"


def test_a_store_made_anew_under_the_same_name_refuses_references_to_the_old_one(make_store) -> None:
    store = make_store()
    ref = store.put(bytes(10))
    assert ref is not None
    store.path.unlink()  # (a process that mapped the old store still reads it until it lets go)
    FrameStore.create(store.name, size=4 << 20, slot_size=1 << 20)
    with pytest.raises(FrameUnavailable, match="made anew"):
        frame_store.view(ref)


def test_an_existing_store_of_another_layout_is_an_error_not_overwritten(make_store) -> None:
    store = make_store(size=4 << 20, slot_size=1 << 20)
    with pytest.raises(FrameStoreError, match=r"exists with another layout \(4 slots of 1048576 bytes"):
        FrameStore.create(store.name, size=8 << 20, slot_size=1 << 20)


def test_slots_taken_by_a_killed_producer_are_freed_after_the_claim_timeout_not_before(make_store) -> None:
    store = make_store()
    code = ("import sys, time; from graphrun.frame_store import FrameStore; "
            f"s = FrameStore({str(store.path)!r}, writable=True); s.put(bytes(1000)); s.put(bytes(1000)); "
            "print('taken', flush=True); time.sleep(60)")
    producer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert producer.stdout is not None and producer.stdout.readline().strip() == "taken"
    assert store.free_abandoned(0.0) == 0, "a live producer's slots are its own"
    producer.send_signal(signal.SIGKILL)
    producer.wait()
    killed = time.time()
    assert store.free_abandoned(5.0, now=killed) == 0, "freed before the claim timeout"
    assert store.free_abandoned(5.0, now=killed + 5.0) == 2
    assert store.usage()["free"] == store.slots


def test_a_written_slot_is_freed_only_for_entries_before_the_boundary_of_its_own_stream(make_store) -> None:
    store = make_store()
    refs = [store.put(bytes(10)) for _ in range(3)]
    for ref, (key, entry) in zip(refs, [("a", "5-0"), ("a", "9-1"), ("b", "1-0")]):
        store.record(ref, key, entry)
    assert store.written() == {"a": [(5, 0), (9, 1)], "b": [(1, 0)]}
    assert store.free_before("a", (9, 1)) == 1  # 9-1 itself is not done with
    assert store.written() == {"a": [(9, 1)], "b": [(1, 0)]}


def test_a_slot_is_not_reused_while_an_array_on_it_lives_even_when_its_entry_is_done_with(make_store) -> None:
    store = make_store(size=1 << 20, slot_size=1 << 20)  # one slot
    ref = store.put(pixels(1).tobytes())
    assert ref is not None
    store.record(ref, "frames", "1-0")
    kept = frame_store.view(ref).reshape(pixels(1).shape)[10:20]  # an agent keeps part of a frame
    assert store.free_before("frames", (2, 0)) == 0, "freed under a live array"
    assert store.put(pixels(2).tobytes()) is None
    assert np.array_equal(kept, pixels(1)[10:20])  # its pixels are still the frame's
    del kept
    gc.collect()
    assert store.free_before("frames", (2, 0)) == 1
    assert store.put(pixels(2).tobytes()) is not None


def test_an_array_collected_while_its_store_is_busy_in_the_same_thread_unpins_without_a_deadlock(make_store) -> None:
    store = make_store()
    ref = store.put(bytes(1000))
    assert ref is not None
    store.record(ref, "frames", "1-0")

    class Holder:  # an array in a reference cycle: freed by the cyclic collector, at any allocation
        pass

    holder = Holder()
    holder.me, holder.array = holder, frame_store.view(ref)
    del holder
    reading = frame_store._readers[store.name]
    with reading._locked():  # as if the collector ran inside a pin or a put of this thread
        gc.collect()
    assert store.free_before("frames", (2, 0)) == 1  # the pin went, once the section ended


def test_the_pins_of_a_killed_reader_do_not_keep_its_slots(make_store) -> None:
    store = make_store()
    ref = store.put(pixels(1).tobytes())
    assert ref is not None
    store.record(ref, "frames", "1-0")
    code = ("import time; from graphrun import frame_store; from graphrun.frame_store import Ref; "
            f"kept = frame_store.view(Ref(*{list(ref.encode())!r})); print('viewing', flush=True); time.sleep(60)")
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "viewing"
    assert store.free_before("frames", (2, 0)) == 0, "the live reader's array is on the slot"
    reader.send_signal(signal.SIGKILL)
    reader.wait()
    assert store.free_before("frames", (2, 0)) == 1


def test_two_producers_in_one_process_never_take_the_same_slot(make_store) -> None:
    store = make_store(size=256 << 10, slot_size=1 << 10)  # 256 slots
    other = FrameStore(store.path, writable=True)  # a second agent of the process, its own open file
    taken: list[list[Ref]] = [[], []]

    def fill(s: FrameStore, out: list[Ref]) -> None:
        while (ref := s.put(b"x" * 100)) is not None:
            out.append(ref)

    threads = [threading.Thread(target=fill, args=(s, out)) for s, out in zip((store, other), taken)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots = [r.slot for out in taken for r in out]
    assert sorted(slots) == list(range(store.slots))  # each slot once, none twice


def test_an_entry_written_twice_keeps_its_slot_until_the_later_one_is_done_with(make_store) -> None:
    store = make_store()
    ref = store.put(bytes(10))
    assert ref is not None
    store.record(ref, "frames", "5-0")
    store.record(ref, "frames", "7-0")  # the flush was sent again after a lost connection
    assert store.free_before("frames", (6, 0)) == 0
    assert store.free_before("frames", (7, 1)) == 1


def test_the_graph_key_is_checked_at_its_line(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("name: g\nredis:\n  main:\n    frame_store: {size: 256MB, threshold: lots}\nagents: {}\n")
    with pytest.raises(GraphError, match=r"g.yaml:4:\d+: .*not a size: 'lots'.*\(redis.main.frame_store.threshold\)"):
        load_graph(graph)
    graph.write_text("name: g\nnodes:\n  cam:\n    frame_store: {size: 1MB, slot_size: 4MB}\nagents: {}\n")
    with pytest.raises(GraphError, match=r"g.yaml:4:\d+: .*holds no slot.*\(nodes.cam.frame_store\)"):
        load_graph(graph)
    graph.write_text("name: g\nredis:\n  main:\n    frame_store: {size: 256MB, threshold: 64KB}\nagents: {}\n")
    spec = load_graph(graph).redis["main"].frame_store
    assert spec is not None and (spec.size, spec.threshold, spec.slot_size) == (256 << 20, 64 << 10, 4 << 20)


@pytest.mark.parametrize("frame_path", [None, {"size": "8mb", "slot_size": "1mb"}], ids=["inline", "shared memory"])
def test_the_harness_hands_an_agent_the_same_frames_on_both_paths(frame_path) -> None:
    with AgentHarness(FrameCheck, frame_store=frame_path) as checker:
        for seq in range(5):
            checker.send("frames", {"seq": seq, "image": pixels(seq)})
        assert checker.take("verdicts") == [{"seq": seq, "right": True} for seq in range(5)]
        if frame_path is not None:
            assert (checker.frames.shared, checker.frames.inline) == (5, 0)
    with AgentHarness(FrameSource, params={"count": 3}, frame_store=frame_path) as source:
        source.produce(3)
        sent = source.outputs["frames"]
        assert [np.array_equal(m["image"], pixels(m["seq"])) for m in sent] == [True] * 3
        assert all(not m["image"].flags.writeable for m in sent)


def test_the_harness_sends_inline_what_its_full_store_has_no_room_for() -> None:
    with AgentHarness(FrameCheck, frame_store={"size": "2mb", "slot_size": "1mb"}) as checker:
        for seq in range(4):
            checker.send("frames", {"seq": seq, "image": pixels(seq)})
        assert [v["right"] for v in checker.take("verdicts")] == [True] * 4
        assert (checker.frames.shared, checker.frames.inline) == (2, 2)





def test_compose_gives_the_agents_of_a_frame_store_the_host_s_shared_memory(tmp_path: Path) -> None:
    import yaml
    from graphrun.cli import main

    graph = tmp_path / "line.yaml"
    graph.write_text("""\
name: line
redis:
  frames: {frame_store: {size: 256MB}}
  results: {}
agents:
  cam: {type: frame_agents:FrameSource, outputs: {frames: frames:cam.frames}}
  check: {type: frame_agents:FrameCheck, inputs: {frames: cam.frames}, outputs: {verdicts: results:verdicts}}
  show: {type: examples.printer, inputs: {values: check.verdicts}}
""")
    out = tmp_path / "out"
    assert main(["compose", str(graph), "--out", str(out)]) == 0
    services = yaml.safe_load((out / "docker-compose.local.yml").read_text())["services"]
    assert "/dev/shm:/dev/shm" in services["cam"]["volumes"]  # writes the slots
    assert "/dev/shm:/dev/shm" in services["check"]["volumes"]  # reads them
    assert "/dev/shm:/dev/shm" not in services["show"]["volumes"]  # uses no store
