"""Redaction bench: microseconds per field, plain vs prefiltered vs prefiltered + memo.

Three ways to redact the same fields, side by side in one run:

* **plain**: every applicable rule tried on every field, one after another
  (the engine without its prefilter: ``_PlainRedactor``, what redaction
  cost before the prefilter);
* **prefiltered**: :class:`~agent.redact.Redactor` as shipped: one scan for
  the rules' necessary literals, then only the rules that could match;
* **memo**: the prefiltered redactor behind a
  :class:`~agent.redact.events.RedactionMemo` (default capacity), fed a
  stream in which each distinct value comes back ``--repeat`` times, as
  library paths and comm names do; its hit rate is printed. The memo row
  labelled *distinct* feeds every value once, so every call misses: what
  the memo costs when it cannot help.

Workloads (deterministic, built in): library paths
(``/usr/lib/x86_64-linux-gnu/libc.so.6`` and kin), long paths (150 to 250
characters, many components, cut flags as the capture sets them), comm
values (cut at 15 bytes where the kernel would have), argv without secrets
and argv with secrets (password flags, ``user:pw@`` URLs, tokens, program
flags like ``mysql -pPW``). Text fields are timed per field; argv per entry
(an argv's total divided by its entries), so the columns compare.

Before timing, every workload is run through all three and the outputs and
counters (:class:`~agent.redact.RedactionStats`) must be equal; the bench
fails (exit 1) if they are not. Each figure is the median of ``--rounds``
rounds of ``--loops`` passes over the workload.

Run it from the repository root::

    .venv/bin/python bench/redact_bench.py [--rounds R] [--loops L] [--repeat K] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_args import positive_int

from agent.redact import Redactor
from agent.redact.engine import _PlainRedactor
from agent.redact.events import RedactionMemo, comm_is_cut

GHP = "ghp_R4nd0mFakeT0kenForTests0123456789abcd"

LIBRARY_PATHS = tuple(
    [
        f"/usr/lib/x86_64-linux-gnu/{name}"
        for name in (
            "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libstdc++.so.6",
            "libgcc_s.so.1", "libz.so.1", "libssl.so.3", "libcrypto.so.3", "libselinux.so.1",
            "libpcre2-8.so.0", "libsystemd.so.0", "liblzma.so.5", "libzstd.so.1",
            "libcap.so.2", "libffi.so.8", "libexpat.so.1", "libuuid.so.1",
        )
    ]
    + [
        "/lib64/ld-linux-x86-64.so.2", "/etc/ld.so.cache", "/usr/lib/locale/locale-archive",
        "/usr/lib/locale/C.utf8/LC_CTYPE", "/usr/share/locale/de/LC_MESSAGES/coreutils.mo",
        "/usr/lib/python3.11/os.py", "/usr/lib/python3.11/encodings/__init__.py",
        "/usr/lib/python3.11/__pycache__/re.cpython-311.pyc", "/etc/nsswitch.conf",
        "/etc/passwd", "/proc/self/status", "/dev/null", "/dev/urandom",
        "/sys/fs/cgroup/unified/system.slice/cron.service/cgroup.procs",
    ]
)  # fmt: skip


def _long_paths() -> tuple[tuple[str, bool], ...]:
    """(path, cut): 150 to 250 characters, a few cut at 255 as the capture does."""
    base = "/home/builder/src/github.com/example-org/monorepo/services/payments-api"
    tails = (
        "build/CMakeFiles/payments.dir/src/handlers/refund_handler.cpp.o",
        "node_modules/@babel/runtime/helpers/esm/objectWithoutPropertiesLoose.js",
        "target/debug/deps/libserde_derive-7f3a9c1b2d4e5f60.so",
        "vendor/bundle/ruby/3.2.0/gems/activesupport-7.1.2/lib/active_support/core_ext.rb",
        ".venv/lib/python3.11/site-packages/botocore/data/ec2/2016-11-15/service-2.json",
        "tests/fixtures/recorded/2026-01-01/customer_export_with_many_columns.csv",
    )
    out = [(f"{base}/{tail}", False) for tail in tails]
    out += [((f"{base}/{tail}/" * 3)[:255], True) for tail in tails[:3]]
    return tuple(out)


COMMS = (
    "bash", "python3", "git", "node", "nginx", "postgres", "sshd", "cron", "make", "cc1",
    "systemd-journal", "systemd-udevd", "kworker/u4:2", "gnome-shell-cal", "containerd-shim",
    "dockerd", "Xorg", "pulseaudio", "NetworkManager", "ModemManager",
)  # fmt: skip

ARGV_PLAIN: tuple[tuple[str, ...], ...] = (
    ("ls", "-la", "/tmp"),
    ("gcc", "-O2", "-Wall", "-c", "src/main.c", "-o", "build/main.o"),
    ("git", "log", "--oneline", "-n", "20", "--color=auto"),
    ("python3", "-m", "pytest", "-q", "tests/test_api.py", "-k", "not slow"),
    ("/usr/bin/make", "-j4", "all"),
    ("grep", "-rn", "--include=*.py", "TODO", "."),
    ("ssh", "-p", "2222", "deploy@build.example.com"),
    ("docker", "run", "--rm", "-v", "/srv/data:/data", "alpine:3.19", "sh", "-c", "ls /data"),
    ("curl", "-sS", "-o", "/tmp/out.json", "https://api.example.com/v1/items?page=2"),
    ("tar", "-czf", "/backup/etc-2026-01-01.tar.gz", "/etc"),
)

ARGV_SECRET: tuple[tuple[str, ...], ...] = (
    ("mysql", "-u", "root", "-pS3cr3tPw", "appdb"),
    ("curl", "-u", "admin:hunter2", "https://api.example.com/v1/items"),
    ("app", "--password", "hunter2", "--verbose"),
    ("env", "GITHUB_TOKEN=" + GHP, "gh", "repo", "list"),
    ("psql", "postgresql://app:dbPw123@db.internal:5432/app"),
    ("git", "clone", f"https://x-access-token:{GHP}@github.com/org/repo.git"),
    ("sh", "-c", "mysql -uroot -pS3cr3t -e 'select 1'"),
    ("rabbitmqctl", "add_user", "bob", "bobsPassword"),
    ("aws", "configure", "set", "aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"),
    ("deploy", "--api-key=k3yv4lue", "--region", "eu-west-1"),
)


@dataclass(frozen=True)
class Workload:
    """A named list of calls; ``units`` is fields (text) or entries (argv)."""

    name: str
    text: tuple[tuple[str, str, bool], ...] = ()  # (value, field, cut)
    argv: tuple[tuple[str, ...], ...] = ()

    @property
    def units(self) -> int:
        return len(self.text) + sum(len(a) for a in self.argv)

    def distinct(self, round_: int) -> Workload:
        """The same shapes, every value new (a suffix that no rule looks at)."""
        tag = f"~{round_}"
        return Workload(
            self.name,
            tuple((v + tag, f, c) for v, f, c in self.text),
            tuple((*a[:-1], a[-1] + tag) for a in self.argv),
        )


WORKLOADS: tuple[Workload, ...] = (
    Workload("library paths", text=tuple((p, "path", False) for p in LIBRARY_PATHS)),
    Workload("long paths", text=tuple((p, "path", cut) for p, cut in _long_paths())),
    Workload("comm", text=tuple((c, "comm", comm_is_cut(c)) for c in COMMS)),
    Workload("argv, no secret", argv=ARGV_PLAIN),
    Workload("argv, secrets", argv=ARGV_SECRET),
)

Target = Redactor | RedactionMemo


def run(target: Target, workload: Workload) -> list[object]:
    out: list[object] = []
    for value, field, cut in workload.text:
        out.append(target.redact_text_detail(value, field, cut=cut))
    for argv in workload.argv:
        out.append(target.redact_argv(argv))
    return out


def check_agreement() -> None:
    """Plain, prefiltered and memo give the same outputs and counters."""
    plain, fast = _PlainRedactor.builtin(), Redactor.builtin()
    memo = RedactionMemo(Redactor.builtin())
    for workload in WORKLOADS:
        for _ in range(2):  # the second pass is answered by the memo
            expected = run(plain, workload)
            if run(fast, workload) != expected or run(memo, workload) != expected:
                raise SystemExit(f"redact_bench: outputs differ on {workload.name!r}")
    if not plain.stats == fast.stats == memo.redactor.stats:
        raise SystemExit("redact_bench: counters differ between plain, prefiltered and memo")


def _time(call: Callable[[], object], loops: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(loops):
        call()
    return (time.perf_counter_ns() - start) / loops


def measure(workload: Workload, rounds: int, loops: int, repeat: int) -> dict[str, float]:
    """Microseconds per unit for each way, medians over ``rounds``."""
    plain, fast = _PlainRedactor.builtin(), Redactor.builtin()
    run(plain, workload)  # warm: plans for the programs seen, compiled once
    run(fast, workload)
    run(RedactionMemo(Redactor.builtin()), workload.distinct(-1))
    figures: dict[str, list[float]] = {"plain": [], "prefiltered": [], "memo": [], "distinct": []}
    hits = misses = 0
    for round_ in range(rounds):
        gc.collect()
        figures["plain"].append(_time(lambda: run(plain, workload), loops))
        figures["prefiltered"].append(_time(lambda: run(fast, workload), loops))
        memo = RedactionMemo(Redactor.builtin())
        # Each distinct value comes back `repeat` times: the first is a miss.
        figures["memo"].append(_time(lambda m=memo: run(m, workload), repeat))
        hits, misses = hits + memo.hits, misses + memo.misses
        fresh = RedactionMemo(Redactor.builtin())
        distinct = [workload.distinct(round_ * loops + i) for i in range(loops)]
        it = iter(distinct)
        figures["distinct"].append(_time(lambda m=fresh, i=it: run(m, next(i)), loops))
    out = {k: statistics.median(v) / 1000 / workload.units for k, v in figures.items()}
    out["hit_rate"] = hits / (hits + misses) if hits + misses else 0.0
    return out


def table(results: Sequence[tuple[Workload, dict[str, float]]], repeat: int) -> str:
    lines = [
        f"| workload | units | plain µs | prefiltered µs | memo µs (x{repeat}, hit rate) "
        "| memo, all distinct µs | plain/prefiltered | plain/memo |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workload, f in results:
        lines.append(
            f"| {workload.name} | {workload.units} | {f['plain']:.2f} | {f['prefiltered']:.2f} "
            f"| {f['memo']:.2f} ({f['hit_rate']:.0%}) | {f['distinct']:.2f} "
            f"| {f['plain'] / f['prefiltered']:.1f}x | {f['plain'] / f['memo']:.1f}x |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=5, help="rounds (median taken)")
    parser.add_argument("--loops", type=positive_int, default=20, help="passes per round")
    parser.add_argument(
        "--repeat", type=positive_int, default=20, help="times each value comes back (memo)"
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the figures here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_agreement()
    results = [(w, measure(w, args.rounds, args.loops, args.repeat)) for w in WORKLOADS]
    rules = len(Redactor.builtin().rules)
    print(f"redact_bench: {rules} built-in rules, Python {platform.python_version()}, "
          f"median of {args.rounds} rounds; µs per field (argv: per entry)")  # fmt: skip
    print(table(results, args.repeat))
    if args.json is not None:
        payload = {w.name: f for w, f in results}
        try:
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        except OSError as err:
            print(f"redact_bench: cannot write {args.json}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
