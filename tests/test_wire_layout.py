"""The wire format has one definition: bpf/tracehound.h. Prove wire.py agrees.

gcc compiles a program that includes the header (without TH_BCC, so only the
record layouts and constants are seen) and prints, for every field of every
record struct, its offset, size and signedness, plus every TH_* constant.
The struct definitions are parsed from the header itself, so a field added
on the C side without its Python counterpart fails here too.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.capture import calls, events, kinds, layout_check, loader, wire
from agent.capture.loader import LoadOptions

REPO = Path(__file__).resolve().parent.parent
BPF = REPO / "bpf"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


#: Each record struct and the Python format that mirrors the part after the header.
BODY_OF: dict[str, struct.Struct] = {
    "th_exec_event": wire.EXEC_BODY,
    "th_fork_event": wire.FORK_BODY,
    "th_exit_event": wire.EXIT_BODY,
    "th_file_event": wire.FILE_BODY,
    "th_net_event": wire.NET_BODY,
    "th_uring_event": wire.URING_BODY,
    "th_call_event": wire.CALL_BODY,
}
KIND_OF: dict[str, int] = {
    "th_exec_event": kinds.KIND_EXEC,
    "th_fork_event": kinds.KIND_FORK,
    "th_exit_event": kinds.KIND_EXIT,
    "th_file_event": kinds.KIND_FILE,
    "th_net_event": kinds.KIND_NET,
    "th_uring_event": kinds.KIND_URING,
    "th_call_event": kinds.KIND_CALL,
}


@dataclass(frozen=True)
class CField:
    name: str
    is_array: bool
    type: str = ""


def _preprocess(*extra: str) -> str:
    """The header as the C compiler sees it without TH_BCC."""
    return subprocess.run(
        ["gcc", *extra, f"-I{BPF}", "-x", "c", "-"],
        input='#include <linux/types.h>\n#include "tracehound.h"\n',
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def parse_structs(text: str) -> dict[str, list[CField]]:
    """``struct th_x { ... };`` blocks of the preprocessed header, fields in order."""
    structs: dict[str, list[CField]] = {}
    for name, body in re.findall(r"struct\s+(th_\w+)\s*\{(.*?)\};", text, flags=re.S):
        fields = []
        for decl in body.split(";"):
            decl = decl.strip()
            if not decl:
                continue
            m = re.fullmatch(r"(?:struct\s+)?(\w+)\s+(\w+)((?:\[[^\]]+\])*)", decl)
            assert m, f"cannot parse field {decl!r} of struct {name}"
            fields.append(CField(m.group(2), bool(m.group(3)), m.group(1)))
        structs[name] = fields
    return structs


def constant_names(macros: str) -> list[str]:
    """Object-like TH_* macros the header defines (gcc -dM)."""
    names = re.findall(r"^#define (TH_\w+) ", macros, flags=re.M)
    return sorted(n for n in names if n != "TH_BCC")


HAVE_GCC = shutil.which("gcc") is not None
STRUCTS = parse_structs(_preprocess("-E", "-P")) if HAVE_GCC else {}
#: th_control is no record, but user space writes it (loader.CONTROL): laid out here too.
#: th_layout_check neither: user space reads it (layout_check.CHECK).
RECORD_STRUCTS = [
    "th_header",
    "th_control",
    "th_layout_check",
    *sorted(n for n in STRUCTS if n.endswith("_event")),
]
CONSTANT_NAMES = constant_names(_preprocess("-dM", "-E")) if HAVE_GCC else []


def c_program() -> str:
    lines = [
        "#include <linux/types.h>",
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <sys/un.h>",
        "#include <netinet/in.h>",
        '#include "tracehound.h"',
        '#define FIELD(T, f) printf("field %s %s %zu %zu %d\\n", #T, #f, offsetof(struct T, f),'
        " sizeof(((struct T *)0)->f), (int)((__typeof__(((struct T *)0)->f))-1 < 0))",
        '#define ARRAY(T, f) printf("field %s %s %zu %zu -1\\n", #T, #f, offsetof(struct T, f),'
        " sizeof(((struct T *)0)->f))",
        # An array of integers: one entry per element, as a format has one item each.
        "#define ELEMS(T, f) for (size_t i = 0; i < sizeof(((struct T *)0)->f) /"
        ' sizeof(((struct T *)0)->f[0]); i++) printf("field %s %s %zu %zu %d\\n", #T, #f,'
        " offsetof(struct T, f) + i * sizeof(((struct T *)0)->f[0]), sizeof(((struct T *)0)->f[0]),"
        " (int)((__typeof__(((struct T *)0)->f[0]))-1 < 0))",
        "int main(void) {",
    ]
    for sname in RECORD_STRUCTS:
        lines.append(f'    printf("sizeof {sname} %zu\\n", sizeof(struct {sname}));')
        for f in STRUCTS[sname]:
            if f.name == "h":
                lines.append(f"    ARRAY({sname}, h);")
            elif f.is_array and f.type not in ("char", "__u8"):
                lines.append(f"    ELEMS({sname}, {f.name});")
            elif f.is_array:
                lines.append(f"    ARRAY({sname}, {f.name});")
            else:
                lines.append(f"    FIELD({sname}, {f.name});")
    lines.append('    printf("sizeof sockaddr_un %zu\\n", sizeof(struct sockaddr_un));')
    lines.append('    printf("sizeof sockaddr_in6 %zu\\n", sizeof(struct sockaddr_in6));')
    for name in CONSTANT_NAMES:
        lines.append(f'    printf("const {name} %lld\\n", (long long)({name}));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


@dataclass
class Layout:
    sizes: dict[str, int]
    fields: dict[str, list[tuple[str, int, int, int]]]  # name, offset, size, signed (-1 array)
    constants: dict[str, int]


_cache: dict[tuple[str, ...], Layout] = {}


def compile_layout(tmp_dir: Path, defines: tuple[str, ...]) -> Layout:
    if defines in _cache:
        return _cache[defines]
    src = tmp_dir / "layout.c"
    exe = tmp_dir / ("layout" + "".join(d.replace("=", "_") for d in defines))
    src.write_text(c_program())
    subprocess.run(
        ["gcc", "-std=gnu11", "-Wall", "-Werror", f"-I{BPF}", *defines, "-o", str(exe), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    layout = Layout({}, {}, {})
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "sizeof":
            layout.sizes[parts[1]] = int(parts[2])
        elif parts[0] == "field":
            layout.fields.setdefault(parts[1], []).append(
                (parts[2], int(parts[3]), int(parts[4]), int(parts[5]))
            )
        elif parts[0] == "const":
            layout.constants[parts[1]] = int(parts[2])
    _cache[defines] = layout
    return layout


def py_items(fmt: struct.Struct) -> list[tuple[int, int, int]]:
    """(offset, size, signed) of every item of a little-endian struct format;
    signed is -1 for byte strings."""
    assert fmt.format[0] == "<", "wire formats must be explicit little-endian, no padding"
    items: list[tuple[int, int, int]] = []
    prefix = "<"
    for count, code in re.findall(r"(\d*)([xcbB?hHiIlLqQnNefdsp])", fmt.format[1:]):
        reps = [f"{count}{code}"] if code == "s" else [code] * int(count or 1)
        for rep in reps:
            offset = struct.calcsize(prefix)
            size = struct.calcsize("<" + rep)
            signed = -1 if code == "s" else int(code.islower())
            items.append((offset, size, signed))
            prefix += rep
    # Counted items ("4Q") come back one by one: the sizes must still agree.
    assert struct.calcsize(prefix) == fmt.size, "format tokenizer missed part of the format"
    return items


CONFIGS = [
    pytest.param((), wire.DEFAULT_ARGV_MAX, wire.DEFAULT_ARG_LEN, id="default"),
    pytest.param(("-DTH_ARGV_MAX=4", "-DTH_ARG_LEN=32"), 4, 32, id="argv4x32"),
    pytest.param(("-DTH_ARGV_MAX=64", "-DTH_ARG_LEN=256"), 64, 256, id="argv64x256"),
]


@pytest.fixture(scope="module")
def layout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layout")


def test_header_parses_into_the_expected_records() -> None:
    # Every record struct in the header must have a Python decoder format.
    event_structs = {n for n in STRUCTS if n.endswith("_event")}
    assert event_structs == set(BODY_OF)
    assert set(KIND_OF.values()) == set(wire.WireDecoder().sizes)


@pytest.mark.parametrize(("defines", "argv_max", "arg_len"), CONFIGS)
def test_header_fields_match_wire_header(
    layout_dir: Path, defines: tuple[str, ...], argv_max: int, arg_len: int
) -> None:
    layout = compile_layout(layout_dir, defines)
    c_fields = layout.fields["th_header"]
    py = py_items(wire.HEADER)
    assert len(c_fields) == len(py), [f[0] for f in c_fields]
    for (name, c_off, c_size, c_signed), (p_off, p_size, p_signed) in zip(
        c_fields, py, strict=True
    ):
        assert (c_off, c_size, c_signed) == (p_off, p_size, p_signed), f"th_header.{name}"
    assert layout.sizes["th_header"] == wire.HEADER.size
    assert dict((f[0], f[2]) for f in c_fields)["comm"] == wire.COMM_LEN


@pytest.mark.parametrize(("defines", "argv_max", "arg_len"), CONFIGS)
@pytest.mark.parametrize("sname", sorted(BODY_OF))
def test_record_fields_match_wire_body(
    layout_dir: Path, defines: tuple[str, ...], argv_max: int, arg_len: int, sname: str
) -> None:
    layout = compile_layout(layout_dir, defines)
    c_fields = layout.fields[sname]
    # The header comes first, whole.
    assert c_fields[0][0] == "h"
    assert c_fields[0][1] == 0
    assert c_fields[0][2] == wire.HEADER.size
    body = [f for f in c_fields[1:] if not (sname == "th_exec_event" and f[0] == "data")]
    py = [(off + wire.HEADER.size, size, signed) for off, size, signed in py_items(BODY_OF[sname])]
    assert len(body) == len(py), f"{sname}: C fields {[f[0] for f in body]} vs {len(py)} items"
    for (name, c_off, c_size, c_signed), p in zip(body, py, strict=True):
        assert (c_off, c_size, c_signed) == p, f"{sname}.{name}"


@pytest.mark.parametrize(("defines", "argv_max", "arg_len"), CONFIGS)
def test_exec_data_layout(
    layout_dir: Path, defines: tuple[str, ...], argv_max: int, arg_len: int
) -> None:
    layout = compile_layout(layout_dir, defines)
    fields = {f[0]: f for f in layout.fields["th_exec_event"]}
    _, data_off, data_size, _ = fields["data"]
    decoder = wire.WireDecoder(argv_max, arg_len)
    assert data_off == wire.HEADER.size + wire.EXEC_BODY.size == decoder.exec_fixed
    assert data_size == wire.exec_data_size(argv_max, arg_len)
    assert decoder.exec_size == layout.sizes["th_exec_event"]
    assert layout.constants["TH_ARGV_BYTES"] == wire.argv_bytes(argv_max, arg_len)
    assert layout.constants["TH_ARGV_BYTES_MAX"] == wire.ARGV_BYTES_MAX
    assert layout.constants["TH_PATH_MAX"] == wire.PATH_MAX
    assert layout.constants["TH_ARGV_MAX"] == argv_max
    assert layout.constants["TH_ARG_LEN"] == arg_len


@pytest.mark.parametrize(("defines", "argv_max", "arg_len"), CONFIGS)
def test_record_sizes_match_decoder(
    layout_dir: Path, defines: tuple[str, ...], argv_max: int, arg_len: int
) -> None:
    layout = compile_layout(layout_dir, defines)
    sizes = wire.WireDecoder(argv_max, arg_len).sizes
    for sname, kind in KIND_OF.items():
        if sname == "th_exec_event":  # variable-length: sizes has its fixed part
            assert sizes[kind] == layout.sizes[sname] - wire.exec_data_size(argv_max, arg_len)
            continue
        assert sizes[kind] == layout.sizes[sname], sname
        assert wire.HEADER.size + BODY_OF[sname].size <= layout.sizes[sname]


def test_control_value_matches_what_the_loader_writes(layout_dir: Path) -> None:
    """th_enabled's value: the loader packs (enabled, agent_pid) as CONTROL."""
    layout = compile_layout(layout_dir, ())
    c_fields = layout.fields["th_control"]
    assert [f[0] for f in c_fields] == ["enabled", "agent_pid", "enriched", "_pad0"]
    assert [(off, size, signed) for _, off, size, signed in c_fields] == py_items(loader.CONTROL)
    assert layout.sizes["th_control"] == loader.CONTROL.size


def test_layout_check_matches_what_user_space_reads(layout_dir: Path) -> None:
    """The self-check's result: layout_check.CHECK decodes struct th_layout_check."""
    layout = compile_layout(layout_dir, ())
    c_fields = layout.fields["th_layout_check"]
    assert [(off, size, signed) for _, off, size, signed in c_fields] == py_items(
        layout_check.CHECK
    )
    assert layout.sizes["th_layout_check"] == layout_check.CHECK.size


def test_exec_size_matches_sizeof_for_unaligned_argv_bounds(layout_dir: Path) -> None:
    # argv_max=3, arg_len=17 pass LoadOptions.validate().
    LoadOptions(argv_max=3, arg_len=17).validate()
    layout = compile_layout(layout_dir, ("-DTH_ARGV_MAX=3", "-DTH_ARG_LEN=17"))
    assert wire.WireDecoder(3, 17).exec_size == layout.sizes["th_exec_event"]


@pytest.fixture(scope="module")
def constants(layout_dir: Path) -> dict[str, int]:
    return compile_layout(layout_dir, ()).constants


def _group(constants: dict[str, int], prefix: str, exclude: tuple[str, ...] = ()) -> dict[int, str]:
    out = {
        value: name[len(prefix) :].lower()
        for name, value in constants.items()
        if name.startswith(prefix) and name not in exclude
    }
    assert len(out) == len([n for n in constants if n.startswith(prefix) and n not in exclude])
    return out


def test_constants_were_all_printed(constants: dict[str, int]) -> None:
    assert set(constants) == set(CONSTANT_NAMES)
    assert "TH_KIND_EXEC" in constants and "TH_FILE_OPEN" in constants


def test_kind_numbers_match(constants: dict[str, int]) -> None:
    numbered = _group(constants, "TH_KIND_")
    assert numbered == kinds.KIND_NAMES
    for value, name in numbered.items():
        assert getattr(kinds, f"KIND_{name.upper()}") == value
    assert constants["TH_NR_KINDS"] == kinds.NR_KINDS == max(numbered) + 1
    # The ledger's kinds are the kernel's, in the kernel's order.
    assert tuple(numbered[k] for k in sorted(numbered)) == kinds.KINDS == events.KINDS


#: TH_CALL_* constants that are not operation numbers.
CALL_NON_OPS = (
    "TH_CALL_LAST_CREDS", "TH_CALL_IDS_UNRESOLVED", "TH_CALL_CAPS_UNRESOLVED",
    "TH_CALL_PEEK_UNREADABLE", "TH_CALL_STR0_UNREADABLE", "TH_CALL_STR1_UNREADABLE",
    "TH_CALL_STR2_UNREADABLE", "TH_CALL_ARGS", "TH_CALL_IDS", "TH_CALL_CAPS",
    "TH_CALL_SHORT_LEN", "TH_CALL_BPF_CMDS",
)  # fmt: skip


def test_call_ops_flags_and_sizes_match(constants: dict[str, int]) -> None:
    ops = _group(constants, "TH_CALL_", CALL_NON_OPS)
    assert {n: op for n, op in ops.items() if op != "umount"} == {
        n: op for n, op in kinds.CALL_OPS.items() if op != "umount"
    }
    assert constants["TH_CALL_UMOUNT"] == next(
        n for n, o in kinds.CALL_OPS.items() if o == "umount"
    )
    creds = {kinds.CALL_OPS[n] for n in range(1, constants["TH_CALL_LAST_CREDS"] + 1)}
    assert creds == kinds.CALL_CREDS_OPS
    assert constants["TH_CALL_IDS_UNRESOLVED"] == kinds.CALL_IDS_UNRESOLVED
    assert constants["TH_CALL_CAPS_UNRESOLVED"] == kinds.CALL_CAPS_UNRESOLVED
    assert constants["TH_CALL_PEEK_UNREADABLE"] == kinds.CALL_PEEK_UNREADABLE
    unreadable = tuple(constants[f"TH_CALL_STR{i}_UNREADABLE"] for i in range(3))
    assert unreadable == kinds.CALL_STR_UNREADABLE
    assert constants["TH_CALL_SHORT_LEN"] == wire.CALL_SHORT_LEN
    assert constants["TH_CALL_IDS"] == len(calls.ID_NAMES)
    assert constants["TH_CALL_CAPS"] == len(calls.CAP_NAMES)
    assert set(calls.CALL_SPECS) == set(kinds.CALL_OPS.values())
    recorded = {cmd for cmd in range(64) if constants["TH_CALL_BPF_CMDS"] >> cmd & 1}
    assert recorded == calls.BPF_RECORDED_CMDS
    # Every argument a spec names is one the record carries.
    assert all(
        i < constants["TH_CALL_ARGS"] for s in calls.CALL_SPECS.values() for _, i, _ in s.args
    )


def test_file_and_net_ops_match(constants: dict[str, int]) -> None:
    assert _group(constants, "TH_FILE_") == kinds.FILE_OPS
    assert _group(constants, "TH_NET_") == kinds.NET_OPS
    # The operations records name: the kernel's, plus rmdir (an unlink of a
    # directory); the evidence's types and the profile's words are these.
    assert set(kinds.FILE_OPERATIONS) == {*kinds.FILE_OPS.values(), "rmdir"}
    assert tuple(kinds.NET_OPS[n] for n in sorted(kinds.NET_OPS)) == kinds.NET_OPERATIONS
    netf = {v: k for k, v in _group(constants, "TH_NETF_").items()}
    assert netf == {
        "peer": kinds.NETF_PEER,
        "unchecked": kinds.NETF_UNCHECKED,
        "more": kinds.NETF_MORE,
        "failed": kinds.NETF_FAILED,
    }
    sends = {kinds.NET_OPS[constants[f"TH_NET_{op}"]] for op in ("SENDTO", "SENDMSG", "SENDMMSG")}
    assert sends == kinds.SEND_OPS
    unlink = next(n for n, op in kinds.FILE_OPS.items() if op == "unlink")
    assert kinds.file_operation(kinds.FILE_OPS[unlink], kinds.AT_REMOVEDIR) == "rmdir"
    assert kinds.file_operation("unlink", 0) == "unlink"


def test_the_probes_pass_the_kernels_at_removedir_for_rmdir() -> None:
    """file.bpf.c sets AT_REMOVEDIR in rmdir()'s record: file_operation
    relies on it, with the value the kernel's unlinkat(2) uses."""
    source = (BPF / "file.bpf.c").read_text()
    found = re.search(r"^#define AT_REMOVEDIR (0x[0-9a-fA-F]+|\d+)$", source, flags=re.M)
    assert found is not None and int(found.group(1), 0) == kinds.AT_REMOVEDIR
    rmdir = re.search(r"^TH_FILE_SYSCALL\(rmdir, TH_FILE_UNLINK,.*AT_REMOVEDIR", source, re.M)
    assert rmdir is not None, "rmdir() no longer records AT_REMOVEDIR"


def test_open_flags_match_the_kernel_abi(layout_dir: Path) -> None:
    """The open(2)/*at(2) values the records carry, from <fcntl.h> (the
    profile's access words and the evidence's flags are read with these)."""
    names = ["O_ACCMODE", "O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND", "O_DIRECTORY",
             "AT_FDCWD", "AT_REMOVEDIR"]  # fmt: skip
    src = layout_dir / "fcntl.c"
    src.write_text(
        "#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stdio.h>\nint main(void) {\n"
        + "".join(f'    printf("{n} %lld\\n", (long long)({n}));\n' for n in names)
        + "    return 0;\n}\n"
    )
    exe = layout_dir / "fcntl"
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    printed = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    values = {name: int(value) for name, value in (line.split() for line in printed.splitlines())}
    assert values == {name: getattr(kinds, name) for name in names}


def test_flag_constants_match(constants: dict[str, int]) -> None:
    assert constants["TH_EXEC_ARGV_TRUNCATED"] == kinds.EXEC_ARGV_TRUNCATED
    assert constants["TH_EXEC_ARG_TRUNCATED"] == kinds.EXEC_ARG_TRUNCATED
    assert constants["TH_EXIT_HAVE_CODE"] == kinds.EXIT_HAVE_CODE
    assert constants["TH_EXIT_HAVE_SIGNAL"] == kinds.EXIT_HAVE_SIGNAL
    # Every TH_EXEC_* flag has its kinds.EXEC_* twin, and nothing else is one.
    exec_flags = {n[3:]: v for n, v in constants.items() if n.startswith("TH_EXEC_")}
    assert exec_flags.pop("EXEC_DATA") == wire.exec_data_size(16, 128)  # a size, no flag
    assert exec_flags == {n: getattr(kinds, n) for n in dir(kinds) if n.startswith("EXEC_")}
    assert all(v & (v - 1) == 0 for v in exec_flags.values())
    assert len(set(exec_flags.values())) == len(exec_flags)
    # TH_PATH_* against kinds.PATH_FLAG_NAMES: test_path_flags_and_sources_match.
    exit_flags = {v for n, v in constants.items() if n.startswith("TH_EXIT_")}
    assert exit_flags == {kinds.EXIT_HAVE_CODE, kinds.EXIT_HAVE_SIGNAL}


def test_lengths_and_defaults_match(layout_dir: Path, constants: dict[str, int]) -> None:
    assert constants["TH_COMM_LEN"] == wire.COMM_LEN
    assert constants["TH_PATH_LEN"] == wire.PATH_LEN
    assert constants["TH_SOCKADDR_LEN"] == wire.SOCKADDR_LEN
    assert constants["TH_ARGV_MAX"] == wire.DEFAULT_ARGV_MAX
    assert constants["TH_ARG_LEN"] == wire.DEFAULT_ARG_LEN
    assert constants["TH_AT_FDCWD"] == kinds.AT_FDCWD
    opts = LoadOptions()
    assert constants["TH_ARGV_MAX"] == opts.argv_max
    assert constants["TH_ARG_LEN"] == opts.arg_len
    assert constants["TH_RINGBUF_PAGES"] == opts.ringbuf_pages
    assert constants["TH_PENDING_MAX"] == opts.pending_max
    assert constants["TH_SCOPE_MAX"] == opts.scope_max
    assert constants["TH_SYSCALL_KEYS_MAX"] == opts.syscall_keys_max
    # A variable-length record counts against the wakeup budget in units of
    # an exec record with its whole argument area and 256-byte paths.
    exec_fields = {f[0]: f for f in compile_layout(layout_dir, ()).fields["th_exec_event"]}
    unit = exec_fields["data"][1] + wire.argv_bytes(opts.argv_max, opts.arg_len)
    assert constants["TH_WAKEUP_UNIT"] == loader.wakeup_unit(opts) == unit + 3 * wire.PATH_LEN
    sizes = compile_layout(layout_dir, ()).sizes
    # The sockaddr buffer holds any sockaddr the decoder understands.
    assert sizes["sockaddr_un"] <= wire.SOCKADDR_LEN
    assert sizes["sockaddr_in6"] <= wire.SOCKADDR_LEN


def sizes_exec(layout_dir: Path) -> int:
    return compile_layout(layout_dir, ()).sizes["th_exec_event"]


def test_hot_path_prefixes_match(layout_dir: Path) -> None:
    """The decoder's string-free shortcuts (numeric prefixes and string offsets)."""
    layout = compile_layout(layout_dir, ())
    header = {f[0]: f for f in layout.fields["th_header"]}
    file_ = {f[0]: f for f in layout.fields["th_file_event"]}
    assert wire.HEADER.format.startswith(wire.HEADER_NUMS.format)
    assert wire.HEADER_NUMS.size == header["comm"][1] == wire.COMM_OFFSET
    # A file record's paths follow its fixed part: the decoder slices them there.
    assert layout.sizes["th_file_event"] == wire.FILE_DATA_OFFSET
    assert list(file_)[-10:] == [
        "path_len", "path2_len", "abs_len", "abs2_len", "path_flags", "path2_flags",
        "abs_flags", "abs2_flags", "abs_from", "abs2_from",
    ]  # fmt: skip
    assert layout.constants["TH_PATH_MAX"] == wire.PATH_MAX


def test_path_flags_and_sources_match(constants: dict[str, int]) -> None:
    """TH_PATH_* (how a walk ended), TH_PASSED_* (how a name was read),
    TH_FROM_* (what was resolved): the kernel's bits are kinds.py's, and
    user space's own start above them."""
    kernel = {v: n for n, v in constants.items() if n.startswith("TH_PATH_") and n not in
              ("TH_PATH_LEN", "TH_PATH_MAX", "TH_PATH_DEPTH")}  # fmt: skip
    assert {v: n.removeprefix("TH_PATH_").lower() for v, n in kernel.items()} == {
        v: n for v, n in kinds.PATH_FLAG_NAMES.items() if v in kernel
    }
    assert min(set(kinds.PATH_FLAG_NAMES) - set(kernel)) > max(kernel)
    for name in ("CUT", "UNREADABLE", "UNREACHABLE", "NO_LAYOUT", "NO_BASE", "OFF"):
        assert constants[f"TH_PATH_{name}"] == getattr(kinds, f"PATH_{name}")
    for name in ("CUT", "UNREADABLE"):
        assert constants[f"TH_PASSED_{name}"] == getattr(kinds, f"PASSED_{name}")
    for name in ("NONE", "FILE", "BASE", "NAME"):
        assert constants[f"TH_FROM_{name}"] == getattr(kinds, f"FROM_{name}")


def test_uring_flags_and_opcodes_match(constants: dict[str, int]) -> None:
    """th_uring_event.flags bits, and the opcodes the C code looks into."""
    for name in ("UNPAIRED", "SQPOLL", "FIXED_FILE", "DIRECT", "NO_LAYOUT"):
        assert constants[f"TH_URING_{name}"] == getattr(kinds, f"URING_{name}"), name
    opcodes = {
        value: name.removeprefix("TH_IORING_OP_").lower()
        for name, value in constants.items()
        if name.startswith("TH_IORING_OP_")
    }
    assert len(opcodes) >= 12
    for value, name in opcodes.items():
        assert kinds.URING_OPS[value] == name
