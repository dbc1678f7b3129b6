"""The kernel struct offsets tracehound's BPF programs read, from BTF.

Every kernel struct the programs look into (the task, its parent, cwd, open
files, mm, credentials, cgroup; dentries and mounts for path walks) is
listed once in :data:`FIELDS`. At compile time :func:`resolve` finds each in
the running kernel's BTF (:mod:`agent.capture.btf`) and :meth:`Layout.flags`
hands bcc one ``-DTH_OFF_<STRUCT>_<MEMBER>=<byte offset>`` per field: the C
code never includes a kernel header, so it cannot read through a layout of
another kernel version.

If BTF is missing, or a required field is absent or not the size the C code
reads, the layout is refused whole (``-DTH_LAYOUT=0``): the programs then
compile without any struct read, and every field they would have filled is
marked unresolved. Wrong offsets that BTF cannot reveal (a bug here) are
caught at start by the self-check (:mod:`agent.capture.layout_check`).

Test hook: ``TRACEHOUND_TEST_LAYOUT_SKEW="task_struct.real_parent=8"`` adds
8 bytes to that offset, so a test can show that the self-check refuses a
wrong layout and capture goes on without enrichment. Only whoever starts
the agent sets its environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import blake3

from agent.capture import btf

SKEW_ENV: Final = "TRACEHOUND_TEST_LAYOUT_SKEW"


@dataclass(frozen=True)
class Field:
    """``struct.path`` (``path`` may go through embedded structs, dotted).

    ``alternatives``: other names the member has had (``kernfs_node.parent``
    is ``__parent`` from 6.15), tried in order. ``size``: the size the C code
    reads, checked against BTF (None: any). ``required``: without it the
    whole layout is refused; an optional field's absence only leaves
    ``TH_HAVE_<macro>`` undefined, for the C code that can do without it.
    """

    struct: str
    path: str
    size: int | None = None
    alternatives: tuple[str, ...] = ()
    required: bool = True

    @property
    def name(self) -> str:
        return f"{self.struct}.{self.path}"

    @property
    def macro(self) -> str:
        return f"TH_OFF_{self.struct}_{self.path}".upper().replace(".", "_")


_PTR: Final = 8


def _uring(struct: str, path: str, size: int | None) -> Field:
    return Field(struct, path, size, required=False)


#: io_uring's request (struct io_kiocb) and the per-opcode structs that live
#: in its first 64 bytes (``io_kiocb_to_cmd``), read at submission (bpf/
#: uring.bpf.c). io_uring's internals change between kernel versions, so
#: every one is optional: an absent one (or one of another size) leaves its
#: TH_HAVE_ undefined and only that part of the io_uring record unread,
#: never the whole layout refused.
URING_FIELDS: tuple[Field, ...] = (
    _uring("io_kiocb", "cmd", None),
    _uring("io_kiocb", "opcode", 1),
    _uring("io_kiocb", "cqe.fd", 4),
    _uring("io_kiocb", "async_data", _PTR),
    _uring("filename", "name", _PTR),
    _uring("io_open", "dfd", 4),
    _uring("io_open", "file_slot", 4),
    _uring("io_open", "filename", _PTR),
    _uring("io_open", "how.flags", 8),
    _uring("io_open", "how.mode", 8),
    _uring("io_unlink", "dfd", 4),
    _uring("io_unlink", "flags", 4),
    _uring("io_unlink", "filename", _PTR),
    _uring("io_mkdir", "dfd", 4),
    _uring("io_mkdir", "mode", 2),
    _uring("io_mkdir", "filename", _PTR),
    _uring("io_rename", "old_dfd", 4),
    _uring("io_rename", "new_dfd", 4),
    _uring("io_rename", "oldpath", _PTR),
    _uring("io_rename", "newpath", _PTR),
    _uring("io_rename", "flags", 4),
    _uring("io_link", "old_dfd", 4),
    _uring("io_link", "new_dfd", 4),
    _uring("io_link", "oldpath", _PTR),
    _uring("io_link", "newpath", _PTR),
    _uring("io_link", "flags", 4),
    _uring("io_connect", "addr", _PTR),
    _uring("io_connect", "addr_len", 4),
    _uring("io_async_msghdr", "addr", None),
    _uring("io_async_msghdr", "msg.msg_name", _PTR),
    _uring("io_async_msghdr", "msg.msg_namelen", 4),
)

#: Every kernel struct member the BPF programs read, and nothing else.
FIELDS: tuple[Field, ...] = (
    # the task: who it is, who its parent is, what it can reach
    Field("task_struct", "tgid", 4),
    Field("task_struct", "real_parent", _PTR),
    Field("task_struct", "fs", _PTR),
    Field("task_struct", "files", _PTR),
    Field("task_struct", "mm", _PTR),
    Field("task_struct", "real_cred", _PTR),
    Field("task_struct", "loginuid", 4),
    Field("task_struct", "cgroups", _PTR),
    Field("css_set", "dfl_cgrp", _PTR),
    Field("cgroup", "kn", _PTR),
    Field("kernfs_node", "id", 8),
    # credentials (kuid_t / kgid_t: one u32 each)
    *(Field("cred", name, 4) for name in ("uid", "gid", "suid", "sgid", "euid", "egid")),
    *(Field("cred", name, 4) for name in ("fsuid", "fsgid")),
    # capability sets (kernel_cap_t: a u64 from 6.3, two u32 before: 8 bytes
    # either way); only call records read them, and say when they cannot
    *(
        Field("cred", name, 8, required=False)
        for name in ("cap_effective", "cap_permitted", "cap_inheritable")
    ),
    # working directory and root; open files
    Field("fs_struct", "root", 16),
    Field("fs_struct", "pwd", 16),
    Field("path", "mnt", _PTR),
    Field("path", "dentry", _PTR),
    Field("files_struct", "fdt", _PTR),
    Field("fdtable", "max_fds", 4),
    Field("fdtable", "fd", _PTR),
    Field("file", "f_path", 16),
    Field("file", "f_inode", _PTR),
    Field("file", "private_data", _PTR),
    # path walks: dentries up to the mount root, mounts up to the root
    Field("dentry", "d_parent", _PTR),
    Field("dentry", "d_name.name", _PTR),
    Field("dentry", "d_name.len", 4),
    Field("dentry", "d_inode", _PTR),
    Field("inode", "i_ino", 8),
    # an executable with no link left (memfd, O_TMPFILE, deleted): fileless
    Field("inode", "i_nlink", 4, required=False),
    Field("vfsmount", "mnt_root", _PTR),
    Field("mount", "mnt", None),  # embedded struct vfsmount: its offset is container_of's
    Field("mount", "mnt_parent", _PTR),
    Field("mount", "mnt_mountpoint", _PTR),
    # sockets (net.bpf.c): fd -> file -> private_data (struct socket) -> sk.
    # Optional: without one, the UDP check and the connected peer are not
    # applied (TH_NETF_UNCHECKED), the rest of the layout stays usable.
    Field("socket", "type", 2, required=False),
    Field("socket", "file", _PTR, required=False),
    Field("socket", "sk", _PTR, required=False),
    Field("sock", "__sk_common.skc_daddr", 4, required=False),
    Field("sock", "__sk_common.skc_dport", 2, required=False),
    Field("sock", "__sk_common.skc_family", 2, required=False),
    Field("sock", "__sk_common.skc_v6_daddr", 16, required=False),  # CONFIG_IPV6 only
    Field("sock", "sk_protocol", 2, required=False),  # a bitfield before 5.6
    Field("sock", "sk_err", 4, required=False),
    # the executable and the argument area of the new image
    Field("mm_struct", "exe_file", _PTR),
    Field("mm_struct", "arg_start", 8),
    Field("mm_struct", "arg_end", 8),
    *URING_FIELDS,
)


@dataclass(frozen=True)
class Layout:
    """What :func:`resolve` found: the offset of every field it could place
    (by macro), and why the layout is refused, if it is ("" when usable)."""

    offsets: Mapping[str, int] = field(default_factory=dict)
    problem: str = ""
    #: The offsets are BTF's own, so the verifier (which checks a typed load
    #: against the same BTF) accepts typed loads at them: False only under
    #: the test skew, whose wrong offsets are the self-check's to catch.
    typed: bool = True

    @property
    def usable(self) -> bool:
        return not self.problem

    def flags(self) -> list[str]:
        """bcc's -D flags for this layout."""
        if not self.usable:
            return ["-DTH_LAYOUT=0"]
        flags = ["-DTH_LAYOUT=1", f"-DTH_TYPED={int(self.typed)}"]
        for macro, offset in sorted(self.offsets.items()):
            flags.append(f"-D{macro}={offset}")
            flags.append(f"-DTH_HAVE_{macro.removeprefix('TH_OFF_')}=1")
        return flags


def parse_skew(text: str) -> dict[str, int]:
    """``"task_struct.real_parent=8,cred.uid=-4"`` -> {field name: bytes}.
    Raises ValueError naming the entry that does not parse."""
    skew: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, amount = entry.partition("=")
        try:
            if not sep or "." not in name:
                raise ValueError
            skew[name] = int(amount)
        except ValueError:
            raise ValueError(f"{SKEW_ENV}: {entry!r} is not <struct>.<member>=<bytes>") from None
    return skew


def skew_setting(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    return parse_skew(environ.get(SKEW_ENV, ""))


def resolve(
    types: btf.Btf | None,
    fields: Iterable[Field] = FIELDS,
    skew: Mapping[str, int] | None = None,
) -> Layout:
    """Place every field in ``types`` (None: the kernel has no BTF). Pure."""
    if types is None:
        return Layout(problem="the kernel publishes no BTF (/sys/kernel/btf/vmlinux)")
    skew = skew or {}
    offsets: dict[str, int] = {}
    for wanted in fields:
        found = None
        for path in (wanted.path, *wanted.alternatives):
            found = types.member(wanted.struct, path)
            if found is not None:
                break
        if found is None:
            if wanted.required:
                return Layout(offsets, f"BTF has no {wanted.name}")
            continue
        if wanted.size is not None and found.size != wanted.size:
            if not wanted.required:
                continue  # not what the C code reads: as good as absent
            return Layout(
                offsets,
                f"BTF says {wanted.name} is {found.size} bytes, the programs read {wanted.size}",
            )
        offsets[wanted.macro] = found.offset + skew.get(wanted.name, 0)
    return Layout(offsets, typed=not skew)


def running_kernel_layout(environ: Mapping[str, str] = os.environ) -> Layout:
    """The layout of the running kernel (about 0.25 s: the BTF parse)."""
    try:
        types = btf.load()
    except OSError:
        return resolve(None)
    except btf.BtfError as err:
        return Layout(problem=f"the kernel's BTF could not be read: {err}")
    return resolve(types, FIELDS, skew_setting(environ))


def spec_digest(environ: Mapping[str, str] = os.environ) -> str:
    """What the layout flags depend on besides the kernel's BTF (which the
    program cache key holds already): the field table and the test skew.
    The cache key carries this instead of the offsets, so a start that
    finds its compile in the cache does not parse BTF at all."""
    text = repr((FIELDS, sorted(skew_setting(environ).items())))
    return blake3.blake3(text.encode()).hexdigest()[:16]
