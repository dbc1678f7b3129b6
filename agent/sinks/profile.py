"""The Profile: what a set of processes ran, touched and talked to.

Each type is defined once here, as a msgspec Struct; ``encode_profile``
gives deterministic JSON (the same events give byte-identical output), and
``render_text`` a human view of the same data.

Host text is attacker-chosen: JSON keeps bytes that are not UTF-8 in the
escape form of :mod:`agent.safetext` (each object names such fields in its
``escaped`` list, and :func:`decode_profile` restores them); the text view
escapes every field as ``ls -b`` does and shell-quotes argv, so no file name
or argument can draw a line of its own.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

import msgspec

from agent.capture.container_id import Container
from agent.capture.events import Endpoint
from agent.capture.kinds import LOGINUID_UNSET
from agent.capture.ledger import KindAccount
from agent.capture.loader import ProbeStatus
from agent.safetext import (
    ESCAPED_KEY,
    escape_fields,
    escape_text,
    restore_json,
    shell_join,
    terminal_safe_json,
    text_field,
)
from agent.wallclock import human_time

PROFILE_VERSION = 1


class ExecRecord(msgspec.Struct, frozen=True):
    """One exec attempt. ``error`` is the errno name of a failed one.

    ``argv_truncated`` if anything was cut: ``args_cut`` lists the entries
    cut short, ``filename_cut`` the filename, ``argv_more`` says there were
    more entries than were captured.

    What the kernel said about the exec (see
    :class:`agent.capture.events.ExecEvent`): ``ppid``, ``euid``, ``egid``,
    ``loginuid`` (None: not resolved; 4294967295: no login session);
    ``cwd`` and ``exe_path`` (the executable's absolute path), "" when not
    resolved, with how their walk ended in ``cwd_flags``/``exe_path_flags``
    (cut, unreadable, unreachable, no_layout, no_base; [] when whole);
    ``fileless`` when the executable has no link on any filesystem (memfd,
    O_TMPFILE, deleted), ``exe_memfd`` when it is a memfd; ``unresolved``
    names what could not be read (filename, argv, ids, cwd, exe).
    """

    ts_ns: int
    filename: str
    argv: list[str]
    argv_truncated: bool
    error: str = ""
    filename_cut: bool = False
    args_cut: list[int] = []
    argv_more: bool = False
    ppid: int | None = None
    euid: int | None = None
    egid: int | None = None
    loginuid: int | None = None
    cwd: str = ""
    cwd_flags: list[str] = []
    exe_path: str = ""
    exe_path_flags: list[str] = []
    fileless: bool = False
    exe_memfd: bool = False
    unresolved: list[str] = []


class FileRecord(msgspec.Struct, frozen=True):
    """Operations on one path, merged.

    ``op``: open, unlink, rmdir, rename, chmod, mkdir, link, symlink,
    truncate or chown. For open, ``access``
    lists what the flags asked for: read, write, create (O_CREAT: the file
    may have existed), exclusive-create (O_CREAT|O_EXCL: it did not),
    truncate, append, directory. ``path`` is the absolute path the kernel
    used when it was resolved (the file an open installed, else the cwd or
    dirfd joined with the name); ``passed`` is then the name as the process
    gave it, when that differs (the first such name, if several led to the
    same file). Unresolved, ``path`` is as the process gave it: a relative
    path is relative to the working directory, or ``fd:N/`` names the
    directory fd it was relative to, ``fd:N`` alone an operation on an open
    file (fchmod, ftruncate, fchown) not resolved. ``target``/``target_passed``:
    a rename's or link's new name, a symlink's new link (its ``path`` is then
    the link's text), the same way. ``owner``/``group``: the ids a chown asked
    for (-1: unchanged). ``path_cut``/``target_cut``: the path
    shown may have been cut short. ``path_flags``/``target_flags``: what
    was doubtful about resolving it (``cut``, ``lexical``: a ``..`` kept
    after a name, ``no_layout``, ``off``... see
    :data:`agent.capture.kinds.PATH_FLAG_NAMES`); empty when exact.
    """

    path: str
    op: str
    access: list[str]
    count: int
    first_ns: int
    target: str = ""
    mode: int | None = None
    error: str = ""
    path_cut: bool = False
    target_cut: bool = False
    passed: str = ""
    target_passed: str = ""
    path_flags: list[str] = []
    target_flags: list[str] = []
    owner: int | None = None
    group: int | None = None


def _file_path_text(path: str, cut: bool, passed: str, flags: list[str]) -> str:
    """A profile file path as text: the path, ``(as NAME)`` when the
    process named it otherwise, ``[flags]`` when resolving it was doubtful."""
    text = text_field(path, cut=cut)
    if passed:
        text += f" (as {text_field(passed)})"
    if flags:
        text += f" [{','.join(flags)}]"
    return text


class NetRecord(msgspec.Struct, frozen=True):
    """A network operation on one endpoint, merged.

    ``op``: connect and accept name the peer, bind the local address,
    listen the address bound earlier on that socket (None if not seen),
    ``send`` a UDP destination (sendto, sendmsg, sendmmsg, or a send on a
    connected UDP socket; ``count`` is in datagrams).
    ``result`` is ``ok``; for a non-blocking connect ``established`` once
    every one on the line was seen to be (``in-progress`` while one was
    not). Failed attempts are kept apart, with ``error``; a non-blocking
    connect that failed later is moved to one, with result ``refused``
    (ECONNREFUSED) or ``failed`` (``error`` ``unknown`` when the kernel's
    error could not be read).
    ``proto``: ``tcp``, ``udp``, ``udplite``; ``""`` when not known (no
    struct enrichment: a send then may not even be UDP's).
    """

    op: str
    endpoint: Endpoint | None
    count: int
    first_ns: int
    result: str = "ok"
    error: str = ""
    proto: str = ""


class CallRecord(msgspec.Struct, frozen=True):
    """One security-relevant call (agent.capture.calls), repeats merged.

    ``op`` is the call (``setresuid``, ``ptrace``, ``mount``, ``kill``,
    ``memfd_create``...), ``family`` its family (credentials, ptrace, mount,
    module, bpf, namespace, signal, memfd). ``args`` and ``text`` are its
    arguments and strings by name; calls that differ in any of them, in
    their result or in the caller's ids are kept apart. ``ids_before`` /
    ``ids_after``: the caller's uid, euid, suid, gid, egid, sgid before and
    (credential changes only) after; ``caps_*`` the capability masks; None
    when not resolved. ``error``: the errno name of a failed call.
    ``text_cut`` names the strings the capture may have cut short.
    """

    op: str
    family: str
    args: dict[str, int]
    text: dict[str, str]
    count: int
    first_ns: int
    error: str = ""
    ids_before: dict[str, int] | None = None
    ids_after: dict[str, int] | None = None
    caps_before: dict[str, int] | None = None
    caps_after: dict[str, int] | None = None
    text_cut: list[str] = []


class ProcessProfile(msgspec.Struct, frozen=True):
    """One process. ``cgroup_id`` is the cgroup v2 id its events carried
    (0: none seen); ``cgroup`` that cgroup's path from the hierarchy's root,
    None when it could not be resolved (removed before it was looked up, or
    no cgroup2 mount: counted in ``/v1/stats`` ``cgroups``), never guessed;
    ``container`` what the path names (:mod:`agent.capture.container_id`),
    None when it names none."""

    pid: int
    ppid: int | None
    comm: str
    exe: str
    argv: list[str]
    uid: int
    gid: int
    cgroup_id: int
    started_ns: int | None
    exited_ns: int | None
    exit_code: int | None
    exit_signal: int | None
    preexisting: bool
    execs: list[ExecRecord]
    files: list[FileRecord]
    failed_files: list[FileRecord]
    network: list[NetRecord]
    failed_network: list[NetRecord]
    syscalls: dict[str, int]
    evicted: dict[str, int]
    argv_cut: list[int] = []
    argv_more: bool = False
    cgroup: str | None = None
    container: Container | None = None
    #: io_uring completions per op (openat, connect, read...): the ops that
    #: are file or socket facts are in files/network too.
    uring: dict[str, int] = {}
    calls: list[CallRecord] = []
    cwd: str = ""
    exe_path: str = ""
    euid: int | None = None
    egid: int | None = None
    loginuid: int | None = None
    fileless: bool = False
    #: ``exit_signal``'s name (``SIGSEGV``), for a reader of the JSON.
    exit_signal_name: str | None = None


Redaction: TypeAlias = Literal["applied", "off"]
"""Whether the profile's text went through redaction. ``off`` only with
``tracehound profile --no-redact``, and the profile says so."""


class Profile(msgspec.Struct, frozen=True):
    """``complete`` is true only when every probe attached, every kind's
    books balance with no loss, and nothing was evicted. ``redaction``
    says whether secrets were redacted (always, unless ``--no-redact``).

    ``boot_offset_ns`` is CLOCK_REALTIME - CLOCK_BOOTTIME as measured when
    capture started: every ``*_ns`` time here is CLOCK_BOOTTIME, and
    ``ns + boot_offset_ns`` is its wall-clock time (ns since the epoch;
    :mod:`agent.wallclock`). None in a profile made without one (older
    files, tests): the text view then shows no times rather than guess.
    """

    version: int
    command: list[str]
    root_pid: int | None
    exit_status: int | None
    processes: list[ProcessProfile]
    evictions: dict[str, int]
    probes: list[ProbeStatus]
    accounting: dict[str, KindAccount]
    notes: list[str]
    complete: bool
    redaction: Redaction = "applied"
    boot_offset_ns: int | None = None


def is_complete(profile: Profile) -> bool:
    return (
        all(p.attached for p in profile.probes)
        and all(a.balanced and a.lost == 0 for a in profile.accounting.values())
        and not any(profile.evictions.values())
    )  # fmt: skip


_encoder: Final = msgspec.json.Encoder(order="deterministic")
_plain_encoder: Final = msgspec.json.Encoder()
_ESCAPED_MARK: Final = f'"{ESCAPED_KEY}":'.encode()


def encode_profile(profile: Profile) -> bytes:
    """Deterministic JSON: struct fields in definition order, dict keys sorted.

    Text holding bytes that are not UTF-8 is written in escape form and named
    in its object's ``escaped`` list (agent.safetext); the output is
    terminal-safe. Never raises for any text the capture can hold.
    """
    try:
        data = _encoder.encode(profile)
    except UnicodeEncodeError:
        # to_builtins keeps struct fields in order and sorts dict keys, as
        # the encoder above does; escape_fields appends the escaped lists.
        plain = msgspec.to_builtins(profile, order="deterministic")
        data = _plain_encoder.encode(escape_fields(plain))
    return terminal_safe_json(data) + b"\n"


def decode_profile(data: bytes) -> Profile:
    """Read a profile back, escaped fields restored to their original text.

    Raises msgspec.DecodeError (not JSON) or msgspec.ValidationError (not a
    profile).
    """
    if _ESCAPED_MARK not in data:
        return msgspec.json.decode(data, type=Profile)
    return msgspec.convert(restore_json(msgspec.json.decode(data)), Profile)


def parent_indexes(processes: Sequence[ProcessProfile]) -> list[int | None]:
    """Each process's parent, as an index into ``processes`` (None: not in
    the profile). Pure.

    Processes are in start order, and a process's parent is the latest
    earlier process with its ppid: pids are reused, so a pid alone is
    ambiguous. What can go wrong: a parent evicted from the profile leaves
    its children rootless (None), never attached to a wrong process.
    """
    latest: dict[int, int] = {}
    parents: list[int | None] = []
    for index, proc in enumerate(processes):
        parents.append(latest.get(proc.ppid) if proc.ppid is not None else None)
        latest[proc.pid] = index
    return parents


def subtree_indexes(processes: Sequence[ProcessProfile], pid: int) -> set[int]:
    """The indexes of every process with ``pid`` (a reused pid: each of
    them) and of all their descendants, by :func:`parent_indexes`. Pure."""
    keep: set[int] = set()
    for index, parent in enumerate(parent_indexes(processes)):
        # A parent's index is always below its child's: one pass suffices.
        if processes[index].pid == pid or (parent is not None and parent in keep):
            keep.add(index)
    return keep


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11: the name a person knows; ``signal N`` for a
    number this system has no name for (a real-time signal, garbage)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_outcome(proc: ProcessProfile) -> str | None:
    """How a process ended, as one token: ``exit N``, a signal's name
    (``SIGSEGV``), ``exited`` (code not read); None while it runs."""
    if proc.exit_signal:
        return signal_name(proc.exit_signal)
    if proc.exit_code is not None:
        return f"exit {proc.exit_code}"
    if proc.exited_ns is not None:
        return "exited"
    return None


def _exit_text(proc: ProcessProfile) -> str:
    if proc.exit_signal:
        return f"killed by {signal_name(proc.exit_signal)}"
    if proc.exit_code is not None:
        return f"exit {proc.exit_code}"
    if proc.exited_ns is not None:
        return "exited"
    return "running"


def _resolved_path(path: str, flags: list[str]) -> str:
    if not path:
        return "?" + (f"[{','.join(flags)}]" if flags else "")
    return escape_text(path) + (f"[{','.join(flags)}]" if flags else "")


def _id_text(value: int | None) -> str:
    if value is None:
        return "?"
    return "unset" if value == LOGINUID_UNSET else str(value)


def exec_text(ex: ExecRecord) -> str:
    """A successful exec as one line: the executable's absolute path (the
    filename when it differs), cwd, the ids that are not plain, and what is
    fileless or unresolved. Paths escaped; an unresolved one is ``?``."""
    parts = ["exec", _resolved_path(ex.exe_path, ex.exe_path_flags)]
    if ex.filename != ex.exe_path:
        parts.append(f"(as {text_field(ex.filename, cut=ex.filename_cut)})")
    parts.append(f"cwd {_resolved_path(ex.cwd, ex.cwd_flags)}")
    if ex.ppid is not None:
        parts.append(f"ppid {ex.ppid}")
    parts.append(f"euid {_id_text(ex.euid)} egid {_id_text(ex.egid)}")
    parts.append(f"loginuid {_id_text(ex.loginuid)}")
    if ex.fileless:
        parts.append("FILELESS" + (" (memfd)" if ex.exe_memfd else ""))
    if ex.unresolved:
        parts.append(f"unresolved: {','.join(ex.unresolved)}")
    return " ".join(parts)


def endpoint_text(endpoint: Endpoint | None) -> str:
    """An endpoint as one text token: a UNIX path escaped like any host text."""
    if endpoint is None:
        return "?"
    if endpoint.family in ("ipv4", "ipv6"):
        return endpoint.render()
    if endpoint.family == "unix":
        return f"unix:{escape_text(endpoint.address)}"
    return f"{endpoint.family}:{escape_text(endpoint.address)}"


def cgroup_text(proc: ProcessProfile) -> str:
    """``cgroup PATH`` (escaped), the container if the path names one; an
    unresolved cgroup says so, with its id."""
    if proc.cgroup is None:
        return f"cgroup {proc.cgroup_id} (unresolved)"
    text = f"cgroup {escape_text(proc.cgroup)}"
    container = proc.container
    if container is not None:
        text += f"  container {container.runtime} {container.id}"
        if container.pod is not None:
            text += f" pod {container.pod}"
    return text


def _ids_text(ids: dict[str, int] | None) -> str:
    if ids is None:
        return "?"
    return "uid={uid},{euid},{suid} gid={gid},{egid},{sgid}".format(**ids)


def call_text(call: CallRecord) -> str:
    """A call as one line: its name, arguments, strings (escaped, ``[cut]``
    marked), id change, result."""
    parts = [call.op, *(f"{k}={v}" for k, v in call.args.items())]
    parts += [f"{k}={text_field(v, cut=k in call.text_cut)}" for k, v in call.text.items()]
    if call.ids_after is not None or call.family == "credentials":
        parts.append(f"[{_ids_text(call.ids_before)} -> {_ids_text(call.ids_after)}]")
    if call.count > 1:
        parts.append(f"x{call.count}")
    if call.error:
        parts.append(f"FAILED: {call.error}")
    return " ".join(parts)


#: The errors of a PATH lookup's misses: execvp(3) goes on to the next
#: directory after these (and a shell's search does the same).
PATH_MISS_ERRORS: Final = frozenset({"ENOENT", "EACCES", "ENOTDIR"})


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _dirname(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def _next_dir(ex: ExecRecord, nxt: ExecRecord, dirs: set[str]) -> bool:
    """Whether ``nxt`` tries ``ex``'s basename in a directory not tried yet."""
    return _basename(nxt.filename) == _basename(ex.filename) and _dirname(nxt.filename) not in dirs


def path_searches(execs: Sequence[ExecRecord]) -> list[tuple[list[ExecRecord], bool]]:
    """``execs`` (in time order) in runs, each with whether it is a failed
    PATH search (then one line) or a single exec. Pure.

    A PATH search is consecutive failed execs (ENOENT, EACCES, ENOTDIR) of
    one basename in different directories, ending where the next exec
    succeeds (the found one, not in the run) or is something else; one
    miss alone is a search only when the found one follows it. A name with
    no ``/`` was not a search.
    """
    out: list[tuple[list[ExecRecord], bool]] = []
    index = 0
    while index < len(execs):
        ex = execs[index]
        run = [ex]
        if ex.error in PATH_MISS_ERRORS and "/" in ex.filename:
            dirs = {_dirname(ex.filename)}
            while index + len(run) < len(execs):
                nxt = execs[index + len(run)]
                if nxt.error not in PATH_MISS_ERRORS or not _next_dir(ex, nxt, dirs):
                    break
                run.append(nxt)
                dirs.add(_dirname(nxt.filename))
            after = index + len(run)
            found = after < len(execs) and not execs[after].error
            search = len(run) > 1 or (found and _next_dir(ex, execs[after], dirs))
        else:
            search = False
        out.append((run, search))
        index += len(run)
    return out


def path_search_text(run: Sequence[ExecRecord]) -> str:
    """A failed PATH search as one line: the name, the directories tried,
    why each failed (once, when all failed alike). Names escaped."""
    name = text_field(_basename(run[0].filename), cut=any(ex.filename_cut for ex in run))
    errors = {ex.error for ex in run}
    if len(errors) == 1:
        dirs = ", ".join(escape_text(_dirname(ex.filename)) for ex in run)
        return f"exec FAILED {name} (PATH search) in {dirs}: {run[0].error}"
    tried = ", ".join(f"{escape_text(_dirname(ex.filename))}: {ex.error}" for ex in run)
    return f"exec FAILED {name} (PATH search) in {tried}"


def _net_text(n: NetRecord) -> str:
    ep = endpoint_text(n.endpoint)
    if n.error:
        result = "" if n.result == "ok" else f" ({n.result})"
        return f"net {n.op} FAILED {ep}: {n.error}{result}"
    notes = [n.proto] if n.proto else []
    if n.op == "send":
        notes.append(f"{n.count} datagram" + ("" if n.count == 1 else "s"))
    if n.result != "ok":
        notes.append(n.result)
    noted = f" ({', '.join(notes)})" if notes else ""
    return f"net {n.op} {ep}{noted}"


def _file_text(f: FileRecord) -> str:
    path = _file_path_text(f.path, f.path_cut, f.passed, f.path_flags)
    if f.error:
        return f"file {f.op} FAILED {path}: {f.error}"
    what = f.op + (f"({','.join(f.access)})" if f.access else "")
    target = (
        " -> " + _file_path_text(f.target, f.target_cut, f.target_passed, f.target_flags)
        if f.target
        else ""
    )
    return f"file {what} {path}{target}"


def activity(proc: ProcessProfile) -> list[tuple[int, str, int]]:
    """What a process did, in time order: (when, the line, how many times).

    Execs (a failed PATH search as one line, at its first miss), file and
    network records, calls. A record folds repeats: its time is the first
    one's and its count says how many. Ties keep this order: execs, files,
    network, calls, each as the profile lists them. Pure."""
    items: list[tuple[int, int, int, str, int]] = []
    execs = sorted(proc.execs, key=lambda e: e.ts_ns)
    for run, search in path_searches(execs):
        ex = run[0]
        if search:
            line = path_search_text(run)
        elif ex.error:
            line = f"exec FAILED {text_field(ex.filename, cut=ex.filename_cut)}: {ex.error}"
        else:
            line = exec_text(ex)
        items.append((ex.ts_ns, 0, len(items), line, 1))
    for f in [*proc.files, *proc.failed_files]:
        items.append((f.first_ns, 1, len(items), _file_text(f), f.count))
    for n in [*proc.network, *proc.failed_network]:
        items.append((n.first_ns, 2, len(items), _net_text(n), n.count))
    for c in proc.calls:
        items.append((c.first_ns, 3, len(items), f"call {call_text(c)}", 1))
    items.sort()
    return [(ts, line, count) for ts, _, _, line, count in items]


def render_text(profile: Profile) -> str:
    """A readable report: the process tree, each process with what it did
    in time order.

    Every field from the host is one escaped token (agent.safetext): argv
    shell-quoted, paths and names escaped as ``ls -b`` does, text the
    capture cut followed by ``[cut]``. Times are wall-clock, RFC 3339 UTC
    to the millisecond (:func:`agent.wallclock.human_time`): when a process
    started and exited, and before each line of its activity (for a record
    of repeats, the first; ``N times`` after it). Failed PATH-search execs
    of one lookup are one line. A profile without ``boot_offset_ns`` shows
    no times (still in time order).
    """
    offset = profile.boot_offset_ns

    def when(word: str, ns: int | None) -> str:
        if offset is None or ns is None:
            return ""
        return f"  {word} {human_time(ns, offset)}"

    lines: list[str] = []
    if profile.redaction == "off":
        lines.append("redaction: OFF (--no-redact): secrets are shown as captured")
    if profile.command:
        lines.append(f"command: {shell_join(profile.command)}")
    if profile.exit_status is not None:
        lines.append(f"exit status: {profile.exit_status}")
    children: dict[int | None, list[int]] = {}
    parent_of = parent_indexes(profile.processes)
    for index, parent in enumerate(parent_of):
        children.setdefault(parent, []).append(index)
    lines.append(f"processes: {len(profile.processes)}")

    def walk(index: int, depth: int) -> None:
        proc = profile.processes[index]
        pad = "  " * depth
        if proc.argv:
            argv = shell_join(proc.argv, cut=proc.argv_cut, more=proc.argv_more)
        else:
            argv = escape_text(proc.comm)
        span = when("started", proc.started_ns) + when("exited", proc.exited_ns)
        lines.append(f"{pad}- [{proc.pid}] {argv}  ({_exit_text(proc)}){span}")
        parent = parent_of[index]
        if proc.cgroup_id and (
            parent is None or profile.processes[parent].cgroup_id != proc.cgroup_id
        ):  # said where it changes, not on every process of a tree
            lines.append(f"{pad}    {cgroup_text(proc)}")
        for ts, line, count in activity(proc):
            stamp = "" if offset is None else f"{human_time(ts, offset)}  "
            times = f"  {count} times" if count > 1 else ""
            lines.append(f"{pad}    {stamp}{line}{times}")
        if proc.syscalls:
            top = sorted(proc.syscalls.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
            lines.append(f"{pad}    syscalls: " + ", ".join(f"{k}={v}" for k, v in top))
        if proc.uring:
            ops = sorted(proc.uring.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append(f"{pad}    io_uring: " + ", ".join(f"{k}={v}" for k, v in ops))

    def walk_tree(index: int, depth: int) -> None:
        walk(index, depth)
        for child in children.get(index, []):
            walk_tree(child, depth + 1)

    for root in children.get(None, []):
        walk_tree(root, 0)
    lines.append("capture:")
    for probe in profile.probes:
        if not probe.attached:
            lines.append(f"  probe {probe.name} MISSING: {probe.reason}")
    for kind, acct in profile.accounting.items():
        lines.append(
            f"  {kind}: generated={acct.generated} delivered={acct.delivered}"
            f" lost={acct.lost}"
            f"{'' if acct.balanced else ' UNBALANCED'}"
        )
    for what, count in sorted(profile.evictions.items()):
        if count:
            lines.append(f"  evicted {what}: {count}")
    for note in profile.notes:
        lines.append(f"  note: {note}")  # our own words, not host text
    lines.append(f"complete: {'yes' if profile.complete else 'no'}")
    return "\n".join(lines) + "\n"
