"""Issue 10's workload, end to end on the real kernel: after a chdir it
opens relative paths, opens through a directory fd and through a symlinked
directory, makes a ~3,000-byte path, renames, unlinks and mkdirs by relative
name and execs a relative program, inside a cgroup named like a docker
container. Every fact appears with its absolute path, the exec with its cwd
and executable, the process with its container id."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.cgroup_dirs import H, make_cgroups
from tests.conftest import TRACEHOUND

WORKLOAD = Path(__file__).parent / "workloads" / "what_happened.py"


def _profile(root: Path, cgroup_dir: Path) -> dict[str, Any]:
    script = f'echo $$ > "{cgroup_dir}/cgroup.procs" && exec /usr/bin/python3 "{WORKLOAD}" "{root}"'
    done = subprocess.run(
        [*TRACEHOUND, "profile", "--format", "json", "--", "/bin/sh", "-c", script],
        capture_output=True,
        timeout=180,
        check=True,
    )
    profile: dict[str, Any] = json.loads(done.stdout)
    return profile


def test_every_fact_has_its_absolute_path_cwd_and_container(kernel: None, tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    real_root = os.path.realpath(root)
    with make_cgroups(f"docker-{H}.scope") as (_, _parent, (cgroup_dir,)):
        profile = _profile(root, cgroup_dir)
    (proc,) = [
        p for p in profile["processes"] if any(e["argv"][:1] == ["./bin/tool"] for e in p["execs"])
    ]
    files = {(f["op"], f["path"]): f for f in proc["files"]}
    deep = "/".join(["d" * 200] * 15)
    expected = {
        ("open", f"{real_root}/plain.txt"),
        ("open", f"{real_root}/real/dir/by-dirfd.txt"),
        ("open", f"{real_root}/real/dir/through-link.txt"),  # the symlink resolved
        ("open", f"{real_root}/{deep}/bottom.txt"),
        ("rename", f"{real_root}/plain.txt"),
        ("unlink", f"{real_root}/renamed.txt"),
        ("mkdir", f"{real_root}/made"),
    }
    missing = expected - set(files)
    assert not missing, (missing, sorted(files))
    assert len(f"{real_root}/{deep}/bottom.txt") > 3000
    bottom = files[("open", f"{real_root}/{deep}/bottom.txt")]
    assert not bottom["path_cut"] and not bottom["path_flags"]
    assert files[("rename", f"{real_root}/plain.txt")]["target"] == f"{real_root}/renamed.txt"
    # The names as the process passed them stay beside the absolute ones.
    assert files[("open", f"{real_root}/real/dir/through-link.txt")]["passed"] == (
        "link/through-link.txt"
    )
    assert files[("open", f"{real_root}/plain.txt")]["passed"] == "plain.txt"
    # The relative exec: its cwd and the executable's absolute path.
    (tool,) = [e for e in proc["execs"] if e["argv"][:1] == ["./bin/tool"]]
    assert tool["argv"] == ["./bin/tool", "relative-exec"]
    assert tool["filename"] == "./bin/tool"
    assert tool["cwd"] == real_root
    assert tool["exe_path"] == f"{real_root}/bin/tool"
    # The container the shell moved itself into, inherited by the workload.
    assert proc["container"] == {"id": H, "runtime": "docker", "pod": None}
    assert proc["cgroup"].endswith(f"/docker-{H}.scope")
