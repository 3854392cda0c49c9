"""Backoff and Pacer against a clock the test moves: the schedules are exact, and no test sleeps."""

from __future__ import annotations

import pytest

from graphrun import Backoff, Pacer


class Clock:
    """A monotonic clock that moves only when told; ``sleep`` moves it (plus a wake-up ``lag``)."""

    def __init__(self, lag: float = 0.0):
        self.now = 1000.0
        self.lag = lag
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> bool:
        """Like ``Agent.wait``: returns True when interrupted (never, here)."""
        self.slept.append(seconds)
        self.now += seconds + self.lag
        return False


# --- Backoff ----------------------------------------------------------------------------


def test_backoff_doubles_with_each_failure_of_a_run() -> None:
    backoff = Backoff(initial=0.25, maximum=100.0, clock=Clock())
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert backoff.failures == 5


def test_backoff_is_capped_and_never_overflows() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, clock=Clock())
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for _ in range(2000):  # a device down for days: 2.0 ** 2000 would overflow a float
        backoff.next()
    assert backoff.next() == 3.0


def test_a_success_starts_the_next_run_from_the_bottom() -> None:
    clock = Clock()
    backoff = Backoff(initial=0.5, maximum=8.0, clock=clock)
    backoff.next(), backoff.next(), backoff.next()
    assert not backoff.ready()
    backoff.reset()
    assert backoff.failures == 0 and backoff.ready() and backoff.remaining() == 0.0
    assert backoff.next() == 0.5


def test_peek_shows_the_next_delay_without_counting_a_failure() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, clock=Clock())
    assert backoff.peek() == backoff.peek() == 1.0
    backoff.next()
    assert backoff.peek() == 2.0 and backoff.failures == 1


def test_ready_and_remaining_follow_the_delay_of_the_last_failure() -> None:
    clock = Clock()
    backoff = Backoff(initial=0.5, maximum=8.0, clock=clock)
    assert backoff.ready() and backoff.remaining() == 0.0  # no failure yet: go ahead
    backoff.next()
    assert not backoff.ready() and backoff.remaining() == 0.5
    clock.advance(0.25)
    assert not backoff.ready() and backoff.remaining() == 0.25
    clock.advance(0.25)
    assert backoff.ready() and backoff.remaining() == 0.0
    backoff.next()  # the second failure of the run waits twice as long, from now
    clock.advance(0.5)
    assert not backoff.ready() and backoff.remaining() == 0.5
    clock.advance(10.0)
    assert backoff.ready() and backoff.remaining() == 0.0


@pytest.mark.parametrize("initial, maximum, factor", [(0.0, 1.0, 2.0), (-1.0, 1.0, 2.0), (2.0, 1.0, 2.0),
                                                      (0.1, 1.0, 0.5)])
def test_a_backoff_that_could_not_back_off_is_refused(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError, match="bad backoff"):
        Backoff(initial=initial, maximum=maximum, factor=factor)


# --- Pacer ------------------------------------------------------------------------------


def test_slots_keep_to_the_schedule_when_every_wake_up_is_late() -> None:
    clock = Clock(lag=0.003)  # every sleep overshoots by 3 ms, as a loaded machine's do
    pacer = Pacer(4.0, clock=clock)
    start = clock()
    sent = []
    for _ in range(400):
        assert pacer.wait(clock.sleep)
        sent.append(clock() - start)
    # Slot k goes out at k/4 s plus one wake-up lag; the lags do not add up.
    assert sent[0] == 0.0
    assert sent[-1] == pytest.approx(399 / 4 + 0.003)
    assert all(s == pytest.approx(k / 4 + 0.003) for k, s in enumerate(sent) if k)


def test_a_slot_late_by_less_than_a_period_does_not_shift_the_schedule() -> None:
    clock = Clock()
    pacer = Pacer(4.0, clock=clock)
    start = clock()
    assert pacer.wait(clock.sleep)
    clock.advance(0.4)  # the send took longer than a period (0.25 s)
    assert pacer.delay() == 0.0
    assert pacer.wait(clock.sleep)  # slot 1 goes out at once, late
    assert pacer.delay() == pytest.approx(0.1)  # slot 2 is still due at 0.5 s
    assert pacer.wait(clock.sleep)
    assert clock() - start == pytest.approx(0.5)


@pytest.mark.parametrize("catch_up", [0.0, 1.0])
def test_a_stall_makes_up_at_most_catch_up_seconds_of_slots(catch_up: float) -> None:
    clock = Clock()
    pacer = Pacer(4.0, catch_up=catch_up, clock=clock)
    assert pacer.wait(clock.sleep)
    clock.advance(10.0)  # stalled: 40 slots missed
    at_once = 0
    while pacer.delay() == 0.0:
        assert pacer.wait(clock.sleep)
        at_once += 1
        assert at_once <= 40, "the pacer is catching up every missed slot"
    # The late slot, then catch_up seconds' worth of slots at 4 a second; then the rate again.
    assert at_once == 1 + int(catch_up * 4)
    assert pacer.delay() == pytest.approx(0.25)
    resumed = clock()
    for k in range(1, 5):
        assert pacer.wait(clock.sleep)
        assert clock() - resumed == pytest.approx(k * 0.25)


def test_an_interrupted_wait_returns_false_and_leaves_the_slot_due() -> None:
    clock = Clock()
    pacer = Pacer(2.0, clock=clock)
    assert pacer.wait(clock.sleep)
    asked: list[float] = []

    def stopped(seconds: float) -> bool:
        asked.append(seconds)
        return True

    assert pacer.wait(stopped) is False
    assert asked == [0.5]
    assert pacer.delay() == 0.5  # not taken: the next wait still waits for it
    assert pacer.wait(clock.sleep) and clock.slept == [0.5]


def test_a_due_slot_does_not_sleep_at_all() -> None:
    clock = Clock()
    pacer = Pacer(10.0, clock=clock)
    assert pacer.wait(clock.sleep)
    clock.advance(0.1)
    assert pacer.wait(clock.sleep)
    assert clock.slept == []


def test_without_a_rate_every_slot_is_due_at_once() -> None:
    clock = Clock()
    pacer = Pacer(None, clock=clock)
    for _ in range(100):
        assert pacer.wait(clock.sleep)
    assert clock.slept == [] and pacer.delay() == 0.0 and pacer.period == 0.0


def test_reset_restarts_the_schedule_from_now() -> None:
    clock = Clock()
    pacer = Pacer(1.0, clock=clock)
    assert pacer.wait(clock.sleep)
    assert pacer.delay() == 1.0
    pacer.reset()
    assert pacer.delay() == 0.0


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(0.0)
