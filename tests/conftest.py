"""Shared fixtures.

Kernel tests need root, bcc and tracefs. Outside CI they skip when those are
missing; with CI=true a kernel test that would skip fails instead, so a CI
run can never go green by testing nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRACEHOUND = [sys.executable, "-m", "agent"]


def _kernel_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/tracing/events").is_dir():
        return "tracefs is not mounted"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc (python3-bpfcc) is not importable"
    return None


def require_kernel() -> None:
    """Skip (fail under CI=true) unless BPF programs can load here; for
    fixtures of wider scope than the ``kernel`` fixture's."""
    problem = _kernel_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"kernel test cannot run in CI: {problem}")
    pytest.skip(problem)


@pytest.fixture
def kernel() -> None:
    """Depend on this in every test that loads BPF programs."""
    require_kernel()


@pytest.fixture
def system_python() -> str:
    """Debian's python3: workloads run under it, not the venv's wrapper."""
    path = shutil.which("python3", path="/usr/bin")
    assert path, "/usr/bin/python3 is missing"
    return path
