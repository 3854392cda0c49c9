"""The MQTT agent's bookkeeping of publications the broker has not acknowledged (pure logic)."""

from __future__ import annotations

from graphrun_agents.mqtt.pending import Pending


def send_all(pending: Pending[str], first_mid: int, now: float = 0.0) -> list[int]:
    mids = []
    for mid, publication in enumerate(pending.to_send(), start=first_mid):
        pending.sent(publication, [mid], now)
        mids.append(mid)
    return mids


def test_acknowledgements_in_any_order_release_publications_in_the_order_taken() -> None:
    pending: Pending[str] = Pending()
    for item in "abcd":
        pending.add("p", item)
    send_all(pending, 1)
    assert [p.item for p in pending.acked([3, 1, 99])] == ["a", "c"]  # 99: a birth's, not one of them
    assert len(pending) == 2 and pending.in_flight == 2
    assert [p.item for p in pending.acked([2, 4])] == ["b", "d"]
    assert len(pending) == 0


def test_a_lost_connection_sends_everything_unacknowledged_again_in_order_with_the_same_numbers() -> None:
    pending: Pending[str] = Pending()
    for item in "abc":
        pending.add("p", item)
    send_all(pending, 1, now=5.0)
    pending.acked([2])
    assert pending.oldest_in_flight() == 5.0
    pending.add("p", "d")
    assert pending.connection_lost() == 3
    assert pending.oldest_in_flight() is None
    again = list(pending.to_send())
    assert [(p.item, p.seq) for p in again] == [("a", 1), ("c", 3), ("d", 4)]
    assert pending.acked([1]) == []  # a message id of the dropped connection acknowledges nothing
