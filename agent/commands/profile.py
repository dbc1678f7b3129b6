"""``tracehound profile -- CMD``: what one command's process tree really did."""

from __future__ import annotations

import argparse
import errno
import os
import pwd
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import msgspec
import trio

from agent import failpoints
from agent.capture.cgroups import CgroupResolver, resolve_periodically
from agent.capture.events import ProcessSeen
from agent.capture.loader import LoadedCapture, check_privileges, load
from agent.capture.session import CaptureSession
from agent.commands.evidence_wiring import (
    add_evidence_arguments,
    check_evidence_arguments,
    evidence_directory,
    evidence_source,
    open_evidence,
    redactor_from_args,
    require_sealing_key,
)
from agent.commands.launcher import Launched, exit_status, launch
from agent.commands.options import add_capture_arguments, fold_from_args, load_options_from_args
from agent.config import Config, EvidenceConfig, StreamConfig, apply_defaults
from agent.errors import RunError, UsageError, shown
from agent.evidence.worker import EvidenceWorker, WorkerProcess
from agent.evidence.worker import spawn as spawn_worker
from agent.input_file import InputFileError, read_input_file
from agent.limits import MAX_PROFILE_BYTES
from agent.output_target import check_output, write_output
from agent.redact import Redactor
from agent.redact.events import RedactionMemo, same_rules
from agent.runtime import Runtime
from agent.safetext import terminal_safe_json
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import Profile, decode_profile, encode_profile, is_complete, render_text
from agent.sinks.profile_diff import diff, render_drift
from agent.sinks.redacted_profile import redact_profile
from agent.sinks.streaming import StreamingSink
from agent.wallclock import measure_boot_offset

#: Exit statuses, as a shell gives them for a command it could not run.
NOT_FOUND_STATUS = 127
NOT_EXECUTABLE_STATUS = 126

_PROFILE_EPILOG = """\
exit status: CMD's own (128+N when a signal N killed it); 127 when CMD is not
found, 126 when it cannot be executed (as a shell does); 2 for bad arguments;
1 when tracehound itself cannot capture (not root, probes refused).
tracehound profile diff A B compares two profiles: see
tracehound profile diff --help."""

_DIFF_EPILOG = """\
Facts are keyed by program, operation, path and access mode: a file read in A
and written in B is drift (read -> read,write); so are exit code and signal
changes per program, new and vanished programs (with who ran them), and
network endpoints. Temporary names are made the same before comparing: below
/tmp, /var/tmp, /dev/shm, /run/user/UID or a directory named tmp, temp or
.tmp, the random part of gcc's ccXXXXXX, Python's tmpXXXXXXXX, mktemp's
tmp.XXXXXXXXXX and mkstemp's NAME-XXXXXX (6+ letters and digits) becomes
XXXXXX; anywhere, /proc/PID and a number of 3+ digits standing alone in a
name (conftest.12345, out-0042.o) become <N>.

exit status: 0 no drift, 1 drift, 2 bad input (a file that is not a profile,
a bad option)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="run a command and profile its process tree",
        description="Run CMD, trace only its process tree, and write what it did.",
        epilog=_PROFILE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE",
        help="write the profile here (default, or -: stdout); a FIFO or device is written"
             " through, a file replaced, a symlink refused",
    )  # fmt: skip
    parser.add_argument("--format", choices=("json", "text"), default=None,
                        help="json (default for a profile) or text (default for diff)")  # fmt: skip
    parser.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                        help="profile diff only: leave out what matches GLOB (see"
                             " tracehound profile diff --help)")  # fmt: skip
    parser.add_argument("--no-redact", action="store_true",
                        help="show secrets in argv and paths as captured in this profile (it says"
                             " so itself); the evidence log is redacted all the same")  # fmt: skip
    add_capture_arguments(parser)
    add_evidence_arguments(parser, what="the run's evidence")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]  or  diff A B")
    parser.set_defaults(handler=main)


def _command(args: argparse.Namespace) -> list[str]:
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(
            "profile: no command given; usage: tracehound profile [OPTIONS] -- CMD [ARG...]"
        )
    if shutil.which(command[0]) is None:
        # As a shell says it, and with its status: a script's "command not
        # found" branch (127) works the same with tracehound in front.
        raise RunError(
            f"profile: command not found: {shown(command[0])}"
            " (not an executable on PATH or a path)",
            NOT_FOUND_STATUS,
        )
    return command


def main(args: argparse.Namespace) -> int:
    if args.command and args.command[0] == "diff":
        return diff_main(args.command[1:], args.format, args.ignore)
    if args.ignore:
        raise UsageError("profile: --ignore is for tracehound profile diff A B, not a run")
    command = _command(args)
    # No configuration file: the schema's defaults, but the evidence log
    # only when asked for (--evidence DIR, which then needs a sealing key).
    apply_defaults(args, Config(evidence=EvidenceConfig(enabled=False)))
    output = check_output("--output", "-" if args.output is None else args.output)
    check_evidence_arguments(args)
    if args.evidence and not Path(args.evidence).is_symlink():
        # Before the directory is made: a refused run leaves nothing behind.
        # (A symlink is refused by evidence_directory, naming its target.)
        require_sealing_key(Path(args.evidence), "profile")
    redactor = redactor_from_args(args)
    options = load_options_from_args(args, scoped=True)
    failpoints.from_environment()  # a malformed TRACEHOUND_FAILPOINTS is refused here, at start
    source = evidence_source(args.evidence, None) if args.evidence else ""
    evidence_dir = evidence_directory(args.evidence, source)
    check_privileges()
    # Started before the BPF compile, so its interpreter start overlaps it.
    worker = spawn_worker() if evidence_dir is not None else None
    try:
        capture = load(options)
    except BaseException:
        if worker is not None:
            worker.close()
        raise
    try:
        child = launch(command, shutil.which(command[0]))
        capture.add_to_scope(child.pid)
        profile, status = trio.run(
            _profile, capture, child, command, args, evidence_dir, worker, source, redactor
        )
        if args.no_redact:
            profile = msgspec.structs.replace(profile, redaction="off")
        else:
            profile = redact_profile(profile, RedactionMemo(same_rules(redactor)))
        text = args.format == "text"
        data = render_text(profile).encode() if text else encode_profile(profile)
        write_output(output, data)
    finally:
        if worker is not None:
            worker.close()
        capture.close()  # waits for the detach the drain started: after the profile is out
    if output.kind != "stdout":
        state = "complete" if profile.complete else "INCOMPLETE (see capture section)"
        print(
            f"tracehound: profile of {len(profile.processes)} processes written to"
            f" {output.description} ({state})",
            file=sys.stderr,
        )
    return status


async def _profile(
    capture: LoadedCapture,
    child: Launched,
    command: list[str],
    args: argparse.Namespace,
    evidence_dir: Path | None,
    worker: WorkerProcess | None,
    source: str,
    redactor: Redactor,
) -> tuple[Profile, int]:
    aggregate = AggregatingSink(boot_offset_ns=measure_boot_offset(), cgroups=CgroupResolver())

    def open_log(stream: StreamingSink, session: CaptureSession) -> EvidenceWorker:
        assert evidence_dir is not None and worker is not None
        return open_evidence(
            evidence_dir, stream, session, capture, args, redactor, worker, source=source
        )

    # The streams block: a profile run waits for its evidence rather than lose it.
    runtime = Runtime(
        capture,
        aggregate,
        stream_capacity=StreamConfig().capacity,
        stream_policy="block",
        evidence=open_log if evidence_dir is not None else None,
        fold=fold_from_args(args),
    )
    sink, pipeline = runtime.sink, runtime.pipeline
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    await sink.record(
        ProcessSeen(
            pid=child.pid, ppid=os.getpid(), comm=Path(command[0]).name[:15],
            exe=shutil.which(command[0]) or command[0], cmdline=tuple(command),
            uid=uid, user=user, start_time=time.time(), preexisting=False,
        )
    )  # fmt: skip
    async with runtime.running():
        error = child.release()
        async with trio.open_nursery() as waiting:
            waiting.start_soon(_forward_signals, child.pid)
            waiting.start_soon(resolve_periodically, aggregate.resolve_cgroups)
            wait_status = await _wait_child(child.pid)
            waiting.cancel_scope.cancel()
        survivors = capture.scope_size()
    # The runtime delivered everything in flight and let the evidence
    # pipeline finish: what it lost at the very end is in these books too.
    stats = runtime.stats()
    if error is not None:
        status = NOT_FOUND_STATUS if error.errno == errno.ENOENT else NOT_EXECUTABLE_STATUS
        raise RunError(f"profile: could not run {shown(command[0])}: {error.strerror}", status)
    if pipeline is not None and pipeline.died is not None:
        sink.note(
            f"the evidence log is incomplete: {pipeline.died}; {pipeline.lost_to_worker}"
            " events never reached it (counted in the capture section)"
        )
    if pipeline is not None and pipeline.lost_to_store:
        sink.note(
            f"the evidence log could not be written ({pipeline.failing or 'recovered'}):"
            f" {pipeline.lost_to_store} events and records are missing from it, counted"
            " in its capture.loss records"
        )
    if survivors:
        sink.note(
            f"{survivors} processes of the tree were still running when the command exited;"
            " what they did afterwards is not in this profile"
        )
    if stats.errors.get("scope_full"):
        sink.note(
            f"{stats.errors['scope_full']} child processes could not be added to the"
            " scope (map full): they and their subtrees were not traced"
        )
    profile = aggregate.finish()
    status = exit_status(wait_status)
    profile = msgspec.structs.replace(
        profile,
        command=command,
        root_pid=child.pid,
        exit_status=status,
        probes=stats.probes,
        accounting=stats.kinds,
    )
    complete = is_complete(profile) and not survivors and not stats.errors.get("scope_full")
    profile = msgspec.structs.replace(profile, complete=complete)
    return profile, status


async def _wait_child(pid: int) -> int:
    """Wait for the child without a thread: a pidfd is readable once it exits."""
    pidfd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
    _, wait_status = os.waitpid(pid, 0)
    return wait_status


async def _forward_signals(pid: int) -> None:
    """SIGTERM, SIGHUP and SIGQUIT go on to the command. SIGINT from a
    terminal reaches the command's process group directly, so tracehound
    only ignores it and keeps capturing until the command is done."""
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT
    ) as sigs:
        async for sig in sigs:
            if sig != signal.SIGINT:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    return


def _read_profile(path: str) -> Profile:
    try:
        data = read_input_file(path, MAX_PROFILE_BYTES)
    except InputFileError as err:
        raise UsageError(f"profile diff: {shown(path)}: {err}") from None
    try:
        return decode_profile(data)
    except msgspec.ValidationError as err:
        raise UsageError(f"profile diff: {shown(path)}: not a tracehound profile: {err}") from err
    except msgspec.DecodeError as err:
        raise UsageError(f"profile diff: {shown(path)}: not JSON: {err}") from err


def _diff_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracehound profile diff",
        description="Compare profile B (a new run) with profile A (the baseline).",
        epilog=_DIFF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("profiles", nargs="*", metavar="A B", help="two profile files (JSON)")
    parser.add_argument("--format", choices=("text", "json"), default=None,
                        help="text (default): one line per change; json: the Drift structure")  # fmt: skip
    parser.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                        help="leave out facts whose path (or program) matches GLOB, as captured"
                             " or normalised; * matches across /; repeatable")  # fmt: skip

    def error(message: str) -> NoReturn:
        raise UsageError(f"profile diff: {message}")

    parser.error = error  # type: ignore[method-assign]
    return parser


def diff_main(argv: list[str], output_format: str | None = None, ignore: Sequence[str] = ()) -> int:
    """``tracehound profile diff A B``: 0 when B did nothing A did not and
    vice versa, 1 when there is drift (for CI), 2 on bad input.

    Options go anywhere on the line: after ``diff`` here, before it through
    the profile parser (``output_format``, ``ignore``); a ``--format`` after
    ``diff`` wins, ``--ignore`` globs add up."""
    args = _diff_parser().parse_intermixed_args(argv)
    if len(args.profiles) != 2:
        raise UsageError(
            "profile diff: expected two profile files: tracehound profile diff A B"
            f" (got {len(args.profiles)})"
        )
    drift = diff(
        _read_profile(args.profiles[0]),
        _read_profile(args.profiles[1]),
        ignore=[*ignore, *args.ignore],
    )
    if (args.format or output_format or "text") == "json":
        sys.stdout.buffer.write(terminal_safe_json(msgspec.json.encode(drift)) + b"\n")
    else:
        sys.stdout.write(render_drift(drift))
    sys.stdout.flush()
    return 1 if drift.any else 0
