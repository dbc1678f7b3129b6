"""Capture options shared by ``run`` and ``profile``: argparse in, LoadOptions out."""

from __future__ import annotations

import argparse

from agent.capture.fold import FoldSettings
from agent.capture.loader import LoadOptions
from agent.capture.probes import PROBES, Probe, with_tracepoint_overrides
from agent.commands.arguments import bounded_int, power_of_two
from agent.config.schema import CaptureConfig
from agent.errors import UsageError
from agent.limits import MAX_ARGV, MAX_FOLD_CAPACITY, MAX_FOLD_WINDOW_MS, MAX_RINGBUF_PAGES

_CAPTURE_DEFAULTS = CaptureConfig()


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    """The capture options. Each defaults to ``None`` (not given), filled
    from the configuration by :func:`agent.config.apply_defaults`: the
    schema holds the defaults, the help only quotes them."""
    builtin = CaptureConfig()
    pages = builtin.ringbuf_pages
    group = parser.add_argument_group("capture")
    group.add_argument(
        "--ringbuf-pages", type=power_of_two(MAX_RINGBUF_PAGES), metavar="N",
        help=f"ring buffer size in 4 KiB pages, a power of two up to {MAX_RINGBUF_PAGES}"
             f" (1 GiB; default {pages}: {pages * 4096 // 2**20} MiB)",
    )  # fmt: skip
    group.add_argument(
        "--argv-max", type=bounded_int(1, MAX_ARGV), metavar="N",
        help=f"argv entries captured per exec, 1 to {MAX_ARGV} (default {builtin.argv_max})",
    )  # fmt: skip
    group.add_argument(
        "--disable-probe", action="append", metavar="NAME",
        help="do not attach this probe (e.g. syscalls.count); repeatable",
    )  # fmt: skip
    group.add_argument(
        "--fold-window-ms", type=bounded_int(0, MAX_FOLD_WINDOW_MS), metavar="MS",
        help="identical file/network events of a thread within MS milliseconds become one"
             f" record with their count, 0 to {MAX_FOLD_WINDOW_MS}; 0: no folding"
             f" (default {_CAPTURE_DEFAULTS.fold_window_ms})",
    )  # fmt: skip
    group.add_argument(
        "--fold-capacity", type=bounded_int(1, MAX_FOLD_CAPACITY), metavar="N",
        help=f"distinct events held for folding, 1 to {MAX_FOLD_CAPACITY}; past it events pass"
             f" unfolded, counted (default {_CAPTURE_DEFAULTS.fold_capacity})",
    )  # fmt: skip
    group.add_argument(
        "--resolve-paths", action=argparse.BooleanOptionalAction, default=None,
        help="resolve each file event's absolute path in the kernel"
             f" (default {'on' if _CAPTURE_DEFAULTS.resolve_paths else 'off'})",
    )  # fmt: skip
    group.add_argument(
        "--probe-tracepoint", action="append", metavar="NAME=CATEGORY:EVENT",
        help="attach probe NAME's first handler to another tracepoint; repeatable",
    )  # fmt: skip


def probes_from_args(args: argparse.Namespace) -> tuple[Probe, ...]:
    known = {p.name for p in PROBES}
    overrides: dict[str, str] = {}
    for item in args.probe_tracepoint:
        name, sep, tracepoint = item.partition("=")
        if not sep or ":" not in tracepoint:
            raise UsageError(
                f"--probe-tracepoint {item!r}: expected NAME=CATEGORY:EVENT,"
                " e.g. file.openat=syscalls:sys_enter_openat"
            )
        if name not in known:
            raise UsageError(
                f"--probe-tracepoint: unknown probe {name!r}; known: {', '.join(sorted(known))}"
            )
        overrides[name] = tracepoint
    for name in args.disable_probe:
        if name not in known:
            raise UsageError(
                f"--disable-probe: unknown probe {name!r}; known: {', '.join(sorted(known))}"
            )
    probes = with_tracepoint_overrides(overrides)
    disabled = set(args.disable_probe)
    # A probe that extends a disabled one goes too: switched off, not missing.
    while True:
        kept = [p for p in probes if p.name not in disabled]
        names = {p.name for p in kept}
        dependents = {p.name for p in kept if any(r not in names for r in p.requires)}
        if not dependents:
            return tuple(kept)
        disabled |= dependents


def load_options_from_args(args: argparse.Namespace, *, scoped: bool) -> LoadOptions:
    """The capture's options; ``--ringbuf-pages`` and ``--argv-max`` were
    range-checked by their argparse types (a config file's, by its schema)."""
    return LoadOptions(
        probes=probes_from_args(args),
        argv_max=args.argv_max,
        ringbuf_pages=args.ringbuf_pages,
        scoped=scoped,
        resolve_paths=bool(args.resolve_paths),
    )


def fold_from_args(args: argparse.Namespace) -> FoldSettings:
    """The drain's folding, from ``--fold-window-ms``/``--fold-capacity`` (or
    the configuration's ``[capture]`` keys, applied to ``args`` by ``run``)."""
    return FoldSettings(window_ms=args.fold_window_ms, capacity=args.fold_capacity)
