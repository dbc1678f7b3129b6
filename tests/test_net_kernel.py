"""UDP destinations and TCP connect outcomes, against the real kernel.

``tracehound profile --evidence`` runs tests/workloads/net_outcomes.py
(Debian's python3): UDP sends every way (sendto to 127.0.0.1 and ::1,
sendmsg, sendmmsg to two ports, send() on a connected socket), sends that
are not UDP (UNIX datagram, TCP stream), and one accepted and one refused
non-blocking connect. The profile and the evidence log must each say so:
every UDP destination with its datagrams, nothing for the others, and
``established`` / ``refused`` where the connect returned EINPROGRESS. Then
the same with struct enrichment off (a skewed offset fails the self-check):
sends naming an address are kept but marked unchecked, and a refused
connect is only known to have failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.capture import kernel_layout
from agent.capture.cache_store import CACHE_DIR_ENV
from tests.conftest import REPO, TRACEHOUND, require_kernel
from tests.harness import evidence

WORKLOAD = REPO / "tests" / "workloads" / "net_outcomes.py"


def _keygen(state: Path) -> None:
    out = subprocess.run([*TRACEHOUND, "evidence", "keygen", "--state-dir", str(state)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr


def _run(tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """Profile the workload with an evidence log; the profile, the facts, the log."""
    state, out, facts = tmp / "state", tmp / "profile.json", tmp / "facts.json"
    _keygen(state)
    done = subprocess.run(
        [*TRACEHOUND, "profile", "--evidence", str(state), "--output", str(out), "--",
         "/usr/bin/python3", str(WORKLOAD), str(facts), str(tmp)],
        capture_output=True, text=True, timeout=180, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    profile = json.loads(out.read_text())
    found = json.loads(facts.read_text())
    (root,) = [p for p in profile["processes"] if p["pid"] == found["pid"]]
    return {"profile": profile, "facts": found, "root": root, "state": state}


@pytest.fixture(scope="module")
def enriched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_kernel()
    return _run(tmp_path_factory.mktemp("net-enriched"), {})


@pytest.fixture(scope="module")
def unenriched(
    tmp_path_factory: pytest.TempPathFactory, skewed_program_cache: str
) -> dict[str, Any]:
    require_kernel()
    tmp = tmp_path_factory.mktemp("net-unenriched")
    return _run(
        tmp, {kernel_layout.SKEW_ENV: "fs_struct.pwd=16", CACHE_DIR_ENV: skewed_program_cache}
    )


def _lines(proc: dict[str, Any], key: str, op: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {
        (n["endpoint"]["family"], n["endpoint"]["address"], n["endpoint"]["port"]): n
        for n in proc[key]
        if n["op"] == op and n["endpoint"]
    }


def _net_records(state: Path, op: str, pid: int) -> list[dict[str, Any]]:
    return [r["data"] for r in evidence(state, f"network.{op}.v1") if r["data"]["pid"] == pid]


def test_the_workload_really_did_it(kernel: None, enriched: dict[str, Any]) -> None:
    facts = enriched["facts"]
    assert facts["sendmmsg"] == 3
    outcomes = facts["outcomes"]
    assert outcomes["accepted"]["returned"] == outcomes["refused"]["returned"] == 115  # EINPROGRESS
    assert (outcomes["accepted"]["so_error"], outcomes["refused"]["so_error"]) == (0, 111)
    assert all(p["attached"] for p in enriched["profile"]["probes"]), enriched["profile"]["probes"]


def test_profile_udp_destinations_per_peer(kernel: None, enriched: dict[str, Any]) -> None:
    ports = enriched["facts"]["ports"]
    sends = _lines(enriched["root"], "network", "send")
    want = {
        ("ipv4", "127.0.0.1", ports["sendto"]): 1,
        ("ipv6", "::1", ports["sendto6"]): 1,
        ("ipv4", "127.0.0.1", ports["sendmsg"]): 1,
        ("ipv4", "127.0.0.1", ports["mm1"]): 2,
        ("ipv4", "127.0.0.1", ports["mm2"]): 1,
        ("ipv4", "127.0.0.1", ports["connected"]): 2,  # send() on the connected socket
    }
    assert {peer: line["count"] for peer, line in sends.items()} == want
    assert {line["proto"] for line in sends.values()} == {"udp"}
    # The connected socket's connect is there too, as UDP's.
    connect = _lines(enriched["root"], "network", "connect")
    assert connect[("ipv4", "127.0.0.1", ports["connected"])]["proto"] == "udp"
    # Neither the UNIX datagram nor the TCP stream's sendto is a UDP send.
    assert not [n for n in enriched["root"]["network"] if n["op"] == "send"
                and n["endpoint"]["family"] == "unix"]  # fmt: skip
    assert ("ipv4", "127.0.0.1", ports["accepted"]) not in sends


def test_profile_connect_outcomes(kernel: None, enriched: dict[str, Any]) -> None:
    ports = enriched["facts"]["ports"]
    ok = _lines(enriched["root"], "network", "connect")[("ipv4", "127.0.0.1", ports["accepted"])]
    assert (ok["result"], ok["proto"], ok["count"]) == ("established", "tcp", 1)
    failed = _lines(enriched["root"], "failed_network", "connect")
    refused = failed[("ipv4", "127.0.0.1", ports["refused"])]
    assert (refused["result"], refused["error"], refused["count"]) == ("refused", "ECONNREFUSED", 1)
    assert ("ipv4", "127.0.0.1", ports["refused"]) not in _lines(
        enriched["root"], "network", "connect"
    ), "the refused connect is no longer in progress"
    assert not [n for n in enriched["root"]["network"] if n["result"] == "in-progress"]


def test_evidence_udp_sends(kernel: None, enriched: dict[str, Any]) -> None:
    state, facts = enriched["state"], enriched["facts"]
    ports, pid = facts["ports"], facts["pid"]
    records = _net_records(state, "sendto", pid)
    sendto = {(r["endpoint"]["address"], r["endpoint"]["port"]): r for r in records}
    connected = [r for r in records if r["endpoint"]["port"] == ports["connected"]]
    assert sum(r.get("count", 1) for r in connected) == 2
    v4 = sendto[("127.0.0.1", ports["sendto"])]
    assert (v4["ret"], v4["proto"], v4["messages"]) == (facts["sendto_bytes"], "udp", 1)
    assert "peer_from_socket" not in v4 and "unchecked" not in v4
    assert sendto[("::1", ports["sendto6"])]["endpoint"]["family"] == "ipv6"
    peer = sendto[("127.0.0.1", ports["connected"])]
    assert peer["peer_from_socket"] is True
    # Two send()s: one record, or one folded record of two.
    assert peer.get("count", 1) in (1, 2)
    (msg,) = _net_records(state, "sendmsg", pid)
    assert msg["endpoint"]["port"] == ports["sendmsg"]
    mm = [
        (r["endpoint"]["port"], r["messages"], r["ret"])
        for r in _net_records(state, "sendmmsg", pid)
    ]
    assert mm == [(ports["mm1"], 2, 3), (ports["mm2"], 1, 3)]
    assert not [r for r in sendto.values() if r["endpoint"]["family"] == "unix"]


def test_evidence_connect_results(kernel: None, enriched: dict[str, Any]) -> None:
    state, facts = enriched["state"], enriched["facts"]
    ports, pid = facts["ports"], facts["pid"]
    results = {r["endpoint"]["port"]: r for r in _net_records(state, "connect_result", pid)}
    assert set(results) == {ports["accepted"], ports["refused"]}
    ok, refused = results[ports["accepted"]], results[ports["refused"]]
    assert (ok["outcome"], ok["ret"], ok["proto"]) == ("established", 0, "tcp")
    assert (refused["outcome"], refused["ret"]) == ("refused", -111)
    # The header is the connecting thread's, although the handshake ended in softirq.
    assert ok["comm"] == refused["comm"] == "python3"
    assert ok["tid"] == pid and ok["fd"] == facts["outcomes"]["accepted"]["fd"]
    connects = {r["endpoint"]["port"]: r["ret"] for r in _net_records(state, "connect", pid)
                if r["endpoint"] and r["endpoint"]["family"] == "ipv4"}  # fmt: skip
    assert connects[ports["accepted"]] == connects[ports["refused"]] == -115


def test_without_enrichment_sends_are_marked_unchecked(
    kernel: None, unenriched: dict[str, Any]
) -> None:
    probes = {p["name"]: p for p in unenriched["profile"]["probes"]}
    assert probes["kernel.layout"]["attached"] is False
    state, facts = unenriched["state"], unenriched["facts"]
    ports, pid = facts["ports"], facts["pid"]
    sendto = _net_records(state, "sendto", pid)
    by_port = {r["endpoint"]["port"]: r for r in sendto if r["endpoint"]["family"] != "unix"}
    assert by_port[ports["sendto"]]["unchecked"] is True
    assert "proto" not in by_port[ports["sendto"]]
    # The UNIX datagram names a path, which no UDP send does.
    assert not [r for r in sendto if r["endpoint"]["family"] == "unix"]
    # send() on the connected socket names no address: its peer is unknown.
    assert ports["connected"] not in by_port
    mm = [(r["endpoint"]["port"], r["messages"]) for r in _net_records(state, "sendmmsg", pid)]
    assert mm == [(ports["mm1"], 2), (ports["mm2"], 1)]


def test_without_enrichment_outcomes_are_known_errors_are_not(
    kernel: None, unenriched: dict[str, Any]
) -> None:
    state, facts = unenriched["state"], unenriched["facts"]
    ports, pid = facts["ports"], facts["pid"]
    results = {r["endpoint"]["port"]: r for r in _net_records(state, "connect_result", pid)}
    assert results[ports["accepted"]]["outcome"] == "established"
    refused = results[ports["refused"]]
    assert (refused["outcome"], refused["ret"], refused["unchecked"]) == ("failed", 0, True)
    failed = _lines(unenriched["root"], "failed_network", "connect")
    line = failed[("ipv4", "127.0.0.1", ports["refused"])]
    assert (line["result"], line["error"]) == ("failed", "unknown")
    text = re.sub(r"\s+", " ", json.dumps(unenriched["root"]["network"]))
    assert "in-progress" not in text
