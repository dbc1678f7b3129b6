"""End to end: processes run under cgroups named like containers, and the
daemon's snapshot, ``snapshot --container``, ``/v1/snapshot?container=``
and the evidence log all say which container each ran in (and a conmon
helper's cgroup is no container)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.cgroup_dirs import H2, H3, H, make_cgroups
from tests.conftest import TRACEHOUND
from tests.harness import evidence, own_daemon, wait_until

NAMES = {
    "docker": f"docker-{H}.scope",
    "containerd": f"cri-containerd-{H2}.scope",
    "conmon": f"crio-conmon-{H3}.scope",
}


def run_in(directory: Path, mark: str) -> subprocess.Popen[bytes]:
    """A shell that moves itself into ``directory``'s cgroup, then execs a
    program whose argv carries ``mark``."""
    script = f'echo $$ > "{directory}/cgroup.procs" && exec /usr/bin/env TH_MARK={mark} sleep 2'
    return subprocess.Popen(["/bin/sh", "-c", script])


def marked(profile: dict[str, Any], mark: str) -> list[dict[str, Any]]:
    """The processes that exec'd the marked ``env`` (it then execs sleep)."""
    return [
        p for p in profile["processes"] if any(f"TH_MARK={mark}" in ex["argv"] for ex in p["execs"])
    ]


def test_processes_carry_their_container(tmp_path: Path) -> None:
    with own_daemon(tmp_path) as daemon, make_cgroups(*NAMES.values()) as (_, parent, dirs):
        daemon.start()
        where = dict(zip(NAMES, dirs, strict=True))
        procs = [run_in(where[mark], mark) for mark in NAMES]
        try:
            found: dict[str, dict[str, Any]] = {}

            def all_resolved() -> bool:
                profile = daemon.get_json("/v1/snapshot")
                for mark in NAMES:
                    shown = [p for p in marked(profile, mark) if p["cgroup"] is not None]
                    if shown:
                        found[mark] = shown[0]
                return len(found) == len(NAMES)

            wait_until(all_resolved, "the marked processes with their cgroups")
            assert found["docker"]["cgroup"] == f"{parent}/{NAMES['docker']}"
            assert found["docker"]["container"] == {"id": H, "runtime": "docker", "pod": None}
            assert found["containerd"]["container"] == {
                "id": H2, "runtime": "containerd", "pod": None
            }  # fmt: skip
            assert found["conmon"]["cgroup"] == f"{parent}/{NAMES['conmon']}"
            assert found["conmon"]["container"] is None  # a monitor, not a container

            # The filter: a 12-digit prefix, like docker ps shows.
            only = daemon.get_json(f"/v1/snapshot?container={H[:12]}")
            assert only["processes"] and all(p["container"]["id"] == H for p in only["processes"])
            assert marked(only, "docker") and not marked(only, "containerd")
            cli = subprocess.run(
                [*TRACEHOUND, "snapshot", "--container", H2, "--socket", str(daemon.sock)],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            listed = json.loads(cli.stdout)
            assert marked(listed, "containerd") and not marked(listed, "docker")
            text = subprocess.run(
                [*TRACEHOUND, "snapshot", "--text", "--container", H[:20],
                 "--socket", str(daemon.sock)],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert f"container docker {H}" in text.stdout, text.stdout

            # Bad values: one line, non-zero, nothing asked of the daemon.
            bad = subprocess.run(
                [*TRACEHOUND, "snapshot", "--container", H[:11], "--socket", str(daemon.sock)],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert bad.returncode == 2
            assert bad.stderr.count("\n") == 1 and "--container" in bad.stderr
            code, body = daemon.status(f"/v1/snapshot?container={H[:12].upper()}")
            assert code == 400 and "container" in body

            # The evidence: the exec record of the marked program says it too.
            def exec_record(mark: str) -> dict[str, Any] | None:
                for ce in evidence(daemon.state, "process.exec.v1"):
                    if f"TH_MARK={mark}" in ce["data"]["argv"]:
                        return dict(ce["data"])
                return None

            wait_until(lambda: exec_record("docker") and exec_record("conmon"), "exec records")
            docker = exec_record("docker")
            assert docker is not None
            assert docker["cgroup"] == f"{parent}/{NAMES['docker']}"
            assert docker["container"] == {"id": H, "runtime": "docker", "pod": None}
            conmon = exec_record("conmon")
            assert conmon is not None and conmon["container"] is None
            assert conmon["cgroup"] == f"{parent}/{NAMES['conmon']}"
        finally:
            for proc in procs:
                proc.wait(30)
        stats = daemon.get_json("/v1/stats")
        assert stats["cgroups"]["by_handle"] >= 3
        assert "cgroups:snapshot" in stats["caches"]
        assert daemon.stop() == 0
