"""Subjects and ids: hostile host names and types stay one token, reversibly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.evidence.chain import ChainRecord
from agent.fleet.wire import evidence_subject, message_id, record_id, subject_token, token_text


@given(st.text())
def test_a_token_is_one_safe_token_and_comes_back(text: str) -> None:
    token = subject_token(text)
    assert token and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
    assert token_text(token) == text


@given(st.text(), st.text())
def test_distinct_names_never_share_a_token(a: str, b: str) -> None:
    assert (subject_token(a) == subject_token(b)) == (a == b)


def test_a_record_subject_has_the_host_as_one_token_and_the_type_after_it() -> None:
    subject = evidence_subject("th", "web1.example.com", "dev.tracehound.file.open.v1")
    assert subject.split(".") == ["th", "evidence", "web1_2eexample_2ecom", "file", "open", "v1"]


def test_the_id_is_the_cloudevent_id_or_the_chain_hash() -> None:
    event = ChainRecord(
        seq=3, prev="0" * 64, hash="a" * 64, type="dev.tracehound.file.open.v1", body={"id": "e1"}
    )
    store = ChainRecord(seq=4, prev="a" * 64, hash="b" * 64, type="checkpoint", body={"id": "x"})
    assert record_id(event) == "e1"
    assert record_id(store) == "b" * 64
    assert message_id("h.1", event) == "h_2e1:e1"
