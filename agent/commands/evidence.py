"""``tracehound evidence keygen|stream|export|verify|reindex``: the sealed log, offline.

Exit status: 0 when all is well; 1 when ``verify`` finds a break; 2 for bad
input (a missing log, a non-JSON file, a truncated bundle, a malformed key).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from agent.commands.arguments import bounded_int, expect_head
from agent.commands.progress import byte_progress, total_size
from agent.commands.state_dir_args import add_state_dir_arguments, state_dir_value
from agent.errors import RunError, UsageError, shown
from agent.evidence.bundle import BundleError, export_bundle
from agent.evidence.chain import ChainRecord
from agent.evidence.keys import create_key
from agent.evidence.layout import segment_files
from agent.evidence.mapper import decode as decode_cloudevent
from agent.evidence.ocsf import OcsfError, to_ocsf
from agent.evidence.seal import KeyFormatError, decode_key
from agent.evidence.verify import (
    VerifyInputError,
    VerifyReport,
    verify_bundle,
    verify_store,
    verify_stream,
)
from agent.input_file import InputFileError, read_input_file
from agent.limits import MAX_SEQ
from agent.output_target import check_output, open_stream, replace_output
from agent.query.index_writer import reindex
from agent.safetext import terminal_safe_json
from agent.state_dir import StateDirError

_seq = bounded_int(0, MAX_SEQ, what="a sequence number")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evidence", help="the sealed evidence log: keygen, stream, export, verify"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    keygen = verbs.add_parser("keygen", help="create the sealing key; print the verification key")
    add_state_dir_arguments(keygen)
    keygen.set_defaults(handler=keygen_main)

    stream = verbs.add_parser("stream", help="the log as NDJSON")
    add_state_dir_arguments(stream)
    stream.add_argument("--from", dest="from_seq", type=_seq, default=0, metavar="SEQ",
                        help=f"start at this record, 0 (default) to {MAX_SEQ}")  # fmt: skip
    stream.add_argument("--follow", action="store_true", help="keep printing records as they come")
    stream.add_argument("--format", choices=("cloudevents", "ocsf"), default="cloudevents",
                        help="cloudevents: the chain records (verifiable, each body a"
                             " CloudEvent); ocsf: OCSF 1.3.0 events only")  # fmt: skip
    stream.add_argument("--output", "-o", metavar="FILE",
                        help="write here (default, or -: stdout); a FIFO or device is written"
                             " through, a file replaced, a symlink refused")  # fmt: skip
    stream.set_defaults(handler=stream_main)

    export = verbs.add_parser("export", help="a deterministic bundle of a range of the log")
    add_state_dir_arguments(export)
    export.add_argument("--output", "-o", required=True, metavar="BUNDLE",
                        help="the bundle's file (- for stdout); replaced whole or not at all")  # fmt: skip
    export.add_argument("--from", dest="from_seq", type=_seq, metavar="SEQ",
                        help=f"the first record, 0 to {MAX_SEQ} (default: the oldest kept)")  # fmt: skip
    export.add_argument("--to", dest="to_seq", type=_seq, metavar="SEQ",
                        help=f"the last record, --from to {MAX_SEQ} (default: the head)")  # fmt: skip
    export.set_defaults(handler=export_main)

    verify = verbs.add_parser("verify", help="check hashes, links, sequence and seals")
    add_state_dir_arguments(verify, metavar="TARGET",
                            what=", or a segment file, a bundle, or - for stdin")  # fmt: skip
    verify.add_argument(
        "--key", metavar="KEY", help="the verification key (thk1-...) or a file holding it"
    )
    verify.add_argument("--expect-head", type=expect_head, metavar="SEQ:HASH",
                        help="a head remembered from earlier: the log must reach it")  # fmt: skip
    verify.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: the summary line (default); json: the report as one object")  # fmt: skip
    verify.set_defaults(handler=verify_main)

    reindex = verbs.add_parser("reindex", help="rebuild the query index from the log")
    add_state_dir_arguments(reindex)
    reindex.set_defaults(handler=reindex_main)


def _print_key(key: str) -> None:
    sys.stdout.write(key + "\n")
    sys.stdout.flush()


def _state_dir(args: argparse.Namespace) -> Path:
    """The log's directory: STATE_DIR, ``--state-dir``, or ``--config``'s
    (see :mod:`agent.commands.state_dir_args`)."""
    return Path(state_dir_value(args, f"evidence {args.verb}"))


def keygen_main(args: argparse.Namespace) -> int:
    """Make the state directory if need be (as on a fresh host), the key, and
    print the verification key; a failure, printing included, leaves nothing
    behind (a key whose verification key nobody got is worse than none)."""
    state = _state_dir(args)
    try:
        create_key(state, publish=_print_key)
    except StateDirError as err:
        raise UsageError(f"--state-dir {shown(state)}: {err}") from err
    except FileExistsError as err:
        raise RunError(
            f"evidence keygen: {shown(state)} already has a sealing key; refusing to replace it"
        ) from err
    except BrokenPipeError as err:
        raise RunError(
            "evidence keygen: stdout was closed before the key was printed; no key was made"
        ) from err
    except OSError as err:
        raise RunError(f"evidence keygen: {shown(state)}: {err.strerror}; no key was made") from err
    print(
        "tracehound: this verification key is printed once: store it off this host;"
        " it verifies every seal, and the host keeps only later keys",
        file=sys.stderr,
    )
    return 0


def reindex_main(args: argparse.Namespace) -> int:
    """Rebuild the SQLite index beside the log; one line: records and rate."""
    state = _state_dir(args)
    _segments(state)
    try:
        done = reindex(state)
    except (OSError, sqlite3.Error) as err:
        raise RunError(f"evidence reindex: {shown(state)}: {shown(str(err))}") from err
    rate = done.records / done.seconds if done.seconds > 0 else 0.0
    print(f"indexed {done.records} records in {done.seconds:.2f} s ({rate:,.0f}/s)")
    return 0


def _segments(state: Path) -> list[Path]:
    segments = state / "segments"
    if not segments.is_dir():
        raise UsageError(
            f"--state-dir {shown(state)}: no evidence log there (no segments/ directory)"
        )
    return [path for _, path in segment_files(segments)]


def _lines(state: Path, follow: bool) -> Iterator[bytes]:
    """Complete lines of every segment in order; with ``follow``, then new
    lines as they are written (a half-written line waits for its newline)."""
    done: set[Path] = set()
    offsets: dict[Path, int] = {}
    while True:
        progressed = False
        listing = _segments(state)
        for path in listing:
            if path in done:
                continue
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    offsets[path] = offsets.get(path, 0) + len(line)
                    progressed = True
                    yield line
        if not follow:
            return
        # A segment was closed if a newer one existed before it was read to
        # its end; one that rotated during this pass is read again next pass.
        done.update(listing[:-1])
        if not progressed:
            time.sleep(0.25)


def stream_main(args: argparse.Namespace) -> int:
    state = _state_dir(args)
    target = check_output("--output", "-" if args.output is None else args.output)
    _segments(state)  # no log: the output is left as it was
    out = open_stream(target)
    # --follow ends with Ctrl-C or SIGTERM: both mean "stop", not "fail".
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    decoder = msgspec.json.Decoder(ChainRecord)
    # The chain's bytes are what verify checks: written as they are, unless
    # a person reads them on a terminal (then C1 and bidi controls become
    # \u escapes: the same JSON value, nothing the terminal acts on).
    on_terminal = target.kind == "stdout" and sys.stdout.isatty()
    try:
        for line in _lines(state, args.follow):
            record = decoder.decode(line)
            if record.seq < args.from_seq:
                continue
            if args.format == "cloudevents":
                out.write(terminal_safe_json(line) if on_terminal else line)
            elif record.type.startswith("dev.tracehound."):
                try:
                    projected = to_ocsf(decode_cloudevent(msgspec.json.encode(record.body)))
                except (OcsfError, ValueError, msgspec.ValidationError) as err:
                    raise RunError(
                        f"evidence stream: record {record.seq} has no OCSF form: {shown(str(err))}"
                    ) from err
                if projected is not None:
                    out.write(terminal_safe_json(msgspec.json.encode(projected)) + b"\n")
    except KeyboardInterrupt:
        pass
    except msgspec.DecodeError as err:
        raise RunError(
            f"evidence stream: {shown(state)}: a record does not parse: {shown(str(err))}"
        ) from err
    except BrokenPipeError:
        # The reader went away (``| head``): done. Python's own flush of
        # stdout at exit must not fail on it again.
        if target.kind == "stdout":
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        out.close()
    return 0


def export_main(args: argparse.Namespace) -> int:
    """The bundle, whole or not at all: a regular file is replaced only once
    the bundle is complete (a range error or a write error leaves it as it
    was); a FIFO or device gets nothing on a range error."""
    if args.from_seq is not None and args.to_seq is not None and args.from_seq > args.to_seq:
        raise UsageError(
            f"evidence export: --to: expected at least --from ({args.from_seq}), got {args.to_seq}"
        )
    state = _state_dir(args)
    target = check_output("--output", args.output)
    files = _segments(state)
    try:
        with (
            byte_progress(total_size(files), "export") as progress,
            replace_output(target) as out,
        ):
            manifest = export_bundle(
                state, out, from_seq=args.from_seq, to_seq=args.to_seq, progress=progress
            )
    except (BundleError, ValueError) as err:
        raise UsageError(f"evidence export: {shown(str(err))}") from err
    except BrokenPipeError:
        raise
    except OSError as err:  # reading the log: the output's errors are OutputError
        raise UsageError(f"evidence export: {shown(state)}: {err.strerror}") from err
    head = msgspec.to_builtins(manifest).get("head")
    text = f"{head[0]}:{head[1]}" if isinstance(head, list | tuple) and len(head) == 2 else head
    print(f"tracehound: bundle written to {target.description} (head {text})", file=sys.stderr)
    return 0


def key_argument(value: str | None) -> bytes | None:
    """``--key``: the key text or a file holding it; None if not given.
    UsageError (exit 2) for anything else, never echoing the value."""
    if value is None:
        return None
    text = value
    if not value.strip().lower().startswith("thk"):
        try:
            text = read_input_file(value).decode("utf-8")
        except (InputFileError, UnicodeDecodeError) as err:
            # Never echo the value: it may be the key itself, missing its prefix.
            problem = "not UTF-8" if isinstance(err, UnicodeDecodeError) else str(err)
            raise UsageError(f"--key: not a key (thk1-...) nor a usable file: {problem}") from None
    try:
        return decode_key(text)
    except KeyFormatError as err:
        raise UsageError(f"--key: {err}") from err


def _stdin_lines() -> tuple[Iterator[bytes], bool]:
    """Lines of stdin, and whether it starts mid-log (``stream --from``)."""
    stdin = sys.stdin.buffer
    first = stdin.readline()

    def lines() -> Iterator[bytes]:
        if first:
            yield first
        yield from stdin

    partial = False
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        # A bad first line is the verifier's to report, as the first break.
        partial = msgspec.json.decode(first, type=ChainRecord).seq > 0
    return lines(), partial


def verify_main(args: argparse.Namespace) -> int:
    key = key_argument(args.key)
    head: tuple[int, str] | None = args.expect_head  # parsed by expect_head
    report: VerifyReport
    args.target = state_dir_value(args, "evidence verify")
    where = shown(args.target)
    try:
        if args.target == "-":
            lines, partial = _stdin_lines()
            report = verify_stream(lines, key=key, expect_head=head, partial=partial)
        else:
            target = Path(args.target)
            if not target.exists():
                raise UsageError(f"evidence verify: {where}: no such file or directory")
            if not (target.is_dir() or target.is_file()):
                # A FIFO or a device is no log and no bundle, and reading one may
                # never end: refused unopened.
                raise UsageError(
                    f"evidence verify: {where}: expected a state directory, a segment"
                    " or bundle file, or - for stdin"
                )
            if target.is_file() and _is_tar(target):
                report = verify_bundle(target, key=key, expect_head=head)
            else:
                with byte_progress(_log_size(target), "verify") as progress:
                    report = verify_store(target, key=key, expect_head=head, progress=progress)
    except (BundleError, VerifyInputError) as err:
        # Their messages name the file already, and escape what they quote.
        raise UsageError(f"evidence verify: {shown(str(err))}") from err
    if report.records == 0 and (
        report.first_break is None or report.first_break.kind == "malformed"
    ):
        # Nothing that even looks like a chain record: bad input, not a log
        # that verified (or a log with a break).
        raise UsageError(f"evidence verify: {where}: not an evidence log (no chain records)")
    if args.format == "json":
        sys.stdout.buffer.write(terminal_safe_json(msgspec.json.encode(report)) + b"\n")
        sys.stdout.flush()
    else:
        print(report.summary())
    return 0 if report.first_break is None else 1


def _log_size(target: Path) -> int:
    """The bytes a progress bar counts for ``target``: its segments (0 for a
    single file, which gets no bar)."""
    if not target.is_dir():
        return 0
    segments = target / "segments" if (target / "segments").is_dir() else target
    return total_size([path for _, path in segment_files(segments)])


def _is_tar(path: Path) -> bool:
    if path.suffix == ".tar":
        return True
    with open(path, "rb") as f:
        f.seek(257)
        return f.read(5) == b"ustar"
