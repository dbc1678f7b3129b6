"""Ledger.account: generated == lost_kernel + decode_errors + dropped + delivered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.capture.events import KINDS
from agent.capture.ledger import KindAccount, Ledger, SinkAccount


def ledger(received: dict[str, int], errors: dict[str, int] | None = None) -> Ledger:
    led = Ledger()
    led.received.update(received)
    led.decode_errors.update(errors or {})
    return led


def test_every_kind_is_present_and_empty_books_balance() -> None:
    books = Ledger().account({}, {})
    assert list(books) == list(KINDS)
    for acct in books.values():
        assert acct == KindAccount(
            generated=0, lost_kernel=0, received=0, decode_errors=0, abandoned=0,
            delivered=0, dropped_sink=0, sinks={}, balanced=True,
        )  # fmt: skip


def test_abandoned_events_are_in_the_books() -> None:
    """Received, then never handed to a sink (drain cancelled mid-batch):
    counted, so the books balance, and shown as lost; left out, they don't."""
    led = ledger({"file": 10})
    led.abandoned["file"] = 3
    sinks = {"agg": {"file": (7, 0)}, "stream": {"file": (5, 2)}}
    acct = led.account({"file": (12, 2)}, sinks)["file"]
    assert acct.balanced
    assert acct.abandoned == 3
    assert (acct.delivered, acct.dropped_sink) == (5, 2)
    assert acct.lost == 2 + 0 + 3 + 2
    led.abandoned["file"] = 2  # one event unaccounted for
    assert not led.account({"file": (12, 2)}, sinks)["file"].balanced
    # With no sink at all, what was abandoned is not delivered.
    alone = ledger({"exec": 4})
    alone.abandoned["exec"] = 1
    assert alone.account({"exec": (4, 0)}, {})["exec"].delivered == 3


def test_balanced_with_kernel_loss() -> None:
    led = ledger({"exec": 8})
    books = led.account({"exec": (10, 2)}, {"agg": {"exec": (8, 0)}})
    acct = books["exec"]
    assert acct.balanced
    assert (acct.generated, acct.lost_kernel, acct.received) == (10, 2, 8)
    assert (acct.delivered, acct.dropped_sink) == (8, 0)
    assert acct.sinks == {"agg": SinkAccount(8, 0)}


def test_unbalanced_kernel_side() -> None:
    # One event neither received nor counted lost.
    books = ledger({"file": 9}).account({"file": (10, 0)}, {"agg": {"file": (9, 0)}})
    assert not books["file"].balanced
    # Received more than generated is just as wrong.
    books = ledger({"file": 11}).account({"file": (10, 0)}, {"agg": {"file": (11, 0)}})
    assert not books["file"].balanced


def test_unbalanced_sink_side() -> None:
    books = ledger({"net": 8}).account({"net": (8, 0)}, {"agg": {"net": (7, 0)}})
    assert not books["net"].balanced
    books = ledger({"net": 8}).account({"net": (8, 0)}, {"agg": {"net": (7, 2)}})
    assert not books["net"].balanced


def test_decode_errors_balance() -> None:
    led = ledger({"exit": 8}, {"exit": 1})
    acct = led.account({"exit": (8, 0)}, {"agg": {"exit": (7, 0)}})["exit"]
    assert acct.balanced
    assert acct.decode_errors == 1
    assert acct.delivered == 7


def test_one_unbalanced_sink_unbalances_the_kind() -> None:
    led = ledger({"fork": 5})
    books = led.account({"fork": (5, 0)}, {"a": {"fork": (5, 0)}, "b": {"fork": (4, 0)}})
    assert not books["fork"].balanced
    assert books["exec"].balanced  # other kinds unaffected


def test_worst_sink_is_shown() -> None:
    led = ledger({"fork": 8})
    sinks = {"zagg": {"fork": (8, 0)}, "astream": {"fork": (5, 3)}, "mid": {"fork": (7, 1)}}
    acct = led.account({"fork": (8, 0)}, sinks)["fork"]
    assert acct.balanced
    assert (acct.delivered, acct.dropped_sink) == (5, 3)
    assert list(acct.sinks) == ["astream", "mid", "zagg"]
    assert acct.sinks["mid"] == SinkAccount(7, 1)


def test_worst_sink_per_kind() -> None:
    led = ledger({"fork": 4, "exit": 4})
    sinks = {"a": {"fork": (4, 0), "exit": (1, 3)}, "b": {"fork": (2, 2), "exit": (4, 0)}}
    books = led.account({"fork": (4, 0), "exit": (4, 0)}, sinks)
    assert (books["fork"].delivered, books["fork"].dropped_sink) == (2, 2)
    assert (books["exit"].delivered, books["exit"].dropped_sink) == (1, 3)


def test_a_sink_that_never_saw_a_kind_counts_zero() -> None:
    led = ledger({"net": 2})
    acct = led.account({"net": (2, 0)}, {"a": {"net": (2, 0)}, "b": {}})["net"]
    assert acct.sinks["b"] == SinkAccount(0, 0)
    assert not acct.balanced
    assert acct.delivered == 0


def test_no_sinks_delivered_is_received_minus_errors() -> None:
    acct = ledger({"exec": 6}, {"exec": 2}).account({"exec": (7, 1)}, {})["exec"]
    assert acct.balanced
    assert (acct.delivered, acct.dropped_sink) == (4, 0)
    assert acct.sinks == {}


def test_syscall_counts_are_carried_whole() -> None:
    # Sinks' own syscall numbers count readings, not syscalls: the ledger uses
    # the map's counts for every sink.
    led = ledger({"syscall": 1000})
    books = led.account({"syscall": (1003, 3)}, {"a": {"syscall": (4, 0)}, "b": {}})
    acct = books["syscall"]
    assert acct.balanced
    assert acct.sinks == {"a": SinkAccount(1000, 0), "b": SinkAccount(1000, 0)}
    assert (acct.delivered, acct.dropped_sink, acct.lost_kernel) == (1000, 0, 3)
    unbalanced = ledger({"syscall": 999}).account({"syscall": (1003, 3)}, {"a": {}})
    assert not unbalanced["syscall"].balanced


def test_non_kernel_kinds_are_not_booked() -> None:
    led = ledger({"fork": 1})
    books = led.account({"fork": (1, 0)}, {"a": {"fork": (1, 0), "process": (9, 0)}})
    assert "process" not in books
    assert books["fork"].balanced


BOOKED = [k for k in KINDS if k != "syscall"]


@st.composite
def consistent_books(draw: st.DrawFn) -> tuple[str, int, int, int, int, dict[str, tuple[int, int]]]:
    kind = draw(st.sampled_from(BOOKED))
    received = draw(st.integers(0, 1000))
    lost = draw(st.integers(0, 1000))
    errors = draw(st.integers(0, received))
    names = draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), unique=True, max_size=4))
    sinks = {}
    for name in names:
        dropped = draw(st.integers(0, received - errors))
        sinks[name] = (received - errors - dropped, dropped)
    return kind, received + lost, lost, received, errors, sinks


@given(consistent_books())
def test_consistent_books_balance(
    books: tuple[str, int, int, int, int, dict[str, tuple[int, int]]],
) -> None:
    kind, generated, lost, received, errors, sinks = books
    led = ledger({kind: received}, {kind: errors})
    acct = led.account({kind: (generated, lost)}, {n: {kind: c} for n, c in sinks.items()})[kind]
    assert acct.balanced
    if sinks:
        assert acct.dropped_sink == max(d for _, d in sinks.values())
        assert acct.delivered == min(d for d, _ in sinks.values())
    else:
        assert acct.delivered == received - errors


@given(consistent_books(), st.data())
def test_any_miscount_unbalances(
    books: tuple[str, int, int, int, int, dict[str, tuple[int, int]]], data: st.DataObject
) -> None:
    kind, generated, lost, received, errors, sinks = books
    fields = ["generated", "lost", "received", *(f"sink:{n}" for n in sinks)]
    which = data.draw(st.sampled_from(fields))
    delta = data.draw(st.sampled_from([-1, 1]))
    if which == "generated":
        generated += delta
    elif which == "lost":
        lost += delta
    elif which == "received":
        received += delta
    else:
        name = which.split(":", 1)[1]
        d, x = sinks[name]
        if data.draw(st.booleans()):
            sinks[name] = (d + delta, x)
        else:
            sinks[name] = (d, x + delta)
    led = ledger({kind: received}, {kind: errors})
    acct = led.account({kind: (generated, lost)}, {n: {kind: c} for n, c in sinks.items()})[kind]
    assert not acct.balanced


@pytest.mark.parametrize("kind", BOOKED)
def test_kinds_do_not_leak_into_each_other(kind: str) -> None:
    led = ledger({kind: 3})
    books = led.account({kind: (3, 0)}, {"a": {kind: (3, 0)}})
    for other, acct in books.items():
        expected = 3 if other == kind else 0
        assert acct.received == expected
        assert acct.generated == expected
        assert acct.balanced
