"""How the daemon starts a child that runs this very agent package.

The BPF compile child (:mod:`agent.capture.compile_child`) and the log
verifier (:mod:`agent.evidence.verify_child`) run in processes of their own:
the first so the daemon never maps bcc and LLVM, the second so a verify
never holds the daemon's GIL. Both must run exactly the code the daemon
runs, never an ``agent`` found on the working directory or through a
``PYTHON*`` variable: ``python -I`` ignores both, and the package's own root
goes first on the path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import agent

__all__ = ["child_command"]

#: The child's whole program: this package's root first on the path, then
#: ``main(argv)`` of the module named. A broken install says so in one
#: line, not a traceback.
_BOOT = """import importlib, sys
sys.path.insert(0, sys.argv[1])
try:
    main = importlib.import_module(sys.argv[2]).main
except Exception as err:
    sys.exit(f"tracehound {sys.argv[2]}: cannot import the agent: {err}")
sys.exit(main(sys.argv[3:]))
"""


def package_root() -> str:
    """The directory holding the ``agent`` package this process runs."""
    return str(Path(agent.__file__).resolve().parent.parent)


def child_command(module: str, *args: str) -> list[str]:
    """The argv that runs ``module.main(args)`` of this package in a child
    (its exit status is what ``main`` returns)."""
    return [sys.executable, "-I", "-c", _BOOT, package_root(), module, *args]
