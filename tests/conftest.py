"""Shared fixtures.

Kernel tests need root, bcc and tracefs. Outside CI they skip when those are
missing; with CI=true a kernel test that would skip fails instead, so a CI
run can never go green by testing nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.cache_store import CACHE_DIR_ENV
from agent.config.schema import EVIDENCE_DIR_ENV

REPO = Path(__file__).resolve().parent.parent
TRACEHOUND = [sys.executable, "-m", "agent"]

# `tracehound run` writes its evidence log by default, to /var/lib/tracehound:
# no test may (two daemons would fight over the store's lock, and a host's
# real log is not the tests' to write). Every process the tests start
# inherits a default of their own: one per session here, one per test below.
_SESSION_EVIDENCE = tempfile.mkdtemp(prefix="tracehound-test-evidence-")
os.environ[EVIDENCE_DIR_ENV] = os.path.join(_SESSION_EVIDENCE, "evidence")
# The program cache likewise (/var/lib/tracehound/cache by default): one for
# the whole session, so the tests' many starts compile each program set once.
os.environ[CACHE_DIR_ENV] = os.path.join(_SESSION_EVIDENCE, "program-cache")


@pytest.fixture(autouse=True)
def _own_default_evidence_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test's daemons write their default log in a directory of its own."""
    monkeypatch.setenv(
        EVIDENCE_DIR_ENV, str(tmp_path_factory.mktemp("default-evidence") / "evidence")
    )
    yield


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_SESSION_EVIDENCE, ignore_errors=True)


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


@pytest.fixture(scope="session")
def skewed_program_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The program cache for the session's starts with a layout skew
    (``TRACEHOUND_TEST_LAYOUT_SKEW``), apart from the session's own cache.

    The skew is in the cache key (kernel_layout.spec_digest), so the same
    skewed program set is compiled once for the session, not once per test
    that uses it (a compile costs seconds), and no skewed set takes one of
    the main cache's places (KEEP_ENTRIES) from the common ones. A
    start that replays a skewed entry runs the same layout self-check as
    the compile did (loader._replayed_layout_check, and
    test_kernel_layout's compiled-and-replayed test), so a test sees the
    same refusal whichever start came first. Made by the agent itself (a
    state directory, 0700) at the first start that uses it."""
    return str(tmp_path_factory.mktemp("skewed-program-cache") / "cache")


@pytest.fixture
def system_python() -> str:
    """Debian's python3: workloads run under it, not the venv's wrapper."""
    path = shutil.which("python3", path="/usr/bin")
    assert path, "/usr/bin/python3 is missing"
    return path
