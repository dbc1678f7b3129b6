"""The path workload of test_paths_kernel: file operations by every kind of
name, each written down with the absolute path the kernel must report.

    python3 paths.py FACTS_JSON ROOT

ROOT is a directory of its own (a tmpfs mounted by the test: the walk must
cross into it). Every fact is [operation, path as passed, path2 as passed,
expected absolute path, expected absolute path2]; a ".." after a name
component is expected as it was passed (flagged lexical, never guessed).
"""

import ctypes
import json
import os
import sys

facts_path, root = sys.argv[1], os.path.realpath(sys.argv[2])
facts: list[list[str]] = []
out: dict[str, object] = {"pid": os.getpid(), "root": root, "facts": facts}


def fact(op: str, path: str, want: str, path2: str = "", want2: str = "") -> None:
    facts.append([op, path, path2, want, want2])


os.chdir(root)
os.mkdir("real")  # mkdir by relative name
fact("mkdir", "real", f"{root}/real")
os.symlink("real", "link")
fd1 = os.open("link/f1", os.O_CREAT | os.O_WRONLY, 0o644)  # through a symlinked directory
fact("open", "link/f1", f"{root}/real/f1")
dfd = os.open("real", os.O_RDONLY | os.O_DIRECTORY)
fact("open", "real", f"{root}/real")
fd2 = os.open("f2", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd)  # openat with a dirfd
fact("open", "f2", f"{root}/real/f2")
try:
    os.open("missing", os.O_RDONLY, dir_fd=dfd)  # a failed open: base + name
except FileNotFoundError:
    fact("open", "missing", f"{root}/real/missing")
os.chdir("link")  # the cwd through a symlink is the real directory
os.mkdir("sub")
fact("mkdir", "sub", f"{root}/real/sub")
os.rename("f1", "sub/f1b")
fact("rename", "f1", f"{root}/real/f1", "sub/f1b", f"{root}/real/sub/f1b")
os.rename("f2", "../f2moved", src_dir_fd=dfd, dst_dir_fd=dfd)  # ".." right after the base: exact
fact("rename", "f2", f"{root}/real/f2", "../f2moved", f"{root}/f2moved")
os.fchmod(fd2, 0o600)  # fd-only: the file the fd holds, wherever it went
fact("chmod", "", f"{root}/f2moved")
os.unlink("sub/f1b")
fact("unlink", "sub/f1b", f"{root}/real/sub/f1b")
os.rmdir("sub")
fact("rmdir", "sub", f"{root}/real/sub")
os.chdir(root)
os.chmod("link/../real", 0o755)  # a ".." after a name: kept, flagged
fact("chmod", "link/../real", f"{root}/link/../real")
with open("/proc/self/status", "rb"):  # a symlink and another mount (proc)
    fact("open", "/proc/self/status", f"/proc/{os.getpid()}/status")
os.close(fd1)
os.close(fd2)
os.close(dfd)
# Names that cannot be read (NULL pointers: EFAULT): no absolute path, flagged.
libc = ctypes.CDLL(None, use_errno=True)
libc.unlink(None)
libc.rename(b"efault-source", None)
out["efault"] = True

# A path of ~3000 bytes: 15 directories of 200-byte names, made one by one
# by relative name.
deep = root
for i in range(15):
    name = f"{i:02d}" + "d" * 198
    os.mkdir(name)
    os.chdir(name)
    deep += "/" + name
os.close(os.open("deep.txt", os.O_CREAT | os.O_WRONLY, 0o644))
fact("open", "deep.txt", f"{deep}/deep.txt")
out["deep"] = f"{deep}/deep.txt"
# Beyond 4096 bytes: the kernel's walk must cut it and say so.
for i in range(6):
    name = f"{i:02d}" + "e" * 198
    os.mkdir(name)
    os.chdir(name)
    deep += "/" + name
os.close(os.open("deeper.txt", os.O_CREAT | os.O_WRONLY, 0o644))
out["deeper"] = f"{deep}/deeper.txt"
os.chdir(root)

with open(facts_path, "w") as f:
    json.dump(out, f)
