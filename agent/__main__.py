"""``python -m agent`` is ``tracehound``."""

from agent.cli import main

raise SystemExit(main())
