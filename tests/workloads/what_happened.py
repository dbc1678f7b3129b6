"""The issue-10 workload: file facts by every kind of name, then a relative exec.

Run as ``python3 what_happened.py ROOT``, with ROOT an empty directory. It
chdirs into ROOT and, by relative names only: opens a file, opens one
through a directory fd (openat), opens one through a symlinked directory,
makes a directory tree about 3,000 bytes deep and a file at its bottom,
renames, unlinks, mkdirs, rmdirs, then execs ``./bin/tool`` (a copy of
/bin/true) from ROOT. It prints nothing: the test knows the names.
"""

from __future__ import annotations

import os
import shutil
import sys


def main(root: str) -> None:
    os.chdir(root)
    os.makedirs("real/dir")
    with open("plain.txt", "w") as f:  # relative to the cwd
        f.write("x")
    dirfd = os.open("real", os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open("dir/by-dirfd.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dirfd)
    os.close(fd)
    os.close(dirfd)
    os.symlink("real/dir", "link")
    with open("link/through-link.txt", "w") as f:  # lands in real/dir
        f.write("y")
    deep = "/".join(["d" * 200] * 15)  # 15 x 201 bytes: ~3,000 bytes below root
    os.makedirs(deep)
    with open(f"{deep}/bottom.txt", "w") as f:
        f.write("z")
    os.rename("plain.txt", "renamed.txt")
    os.unlink("renamed.txt")
    os.mkdir("made")
    os.rmdir("made")
    os.makedirs("bin")
    shutil.copy("/bin/true", "bin/tool")
    os.chmod("bin/tool", 0o755)
    os.execv("./bin/tool", ["./bin/tool", "relative-exec"])


if __name__ == "__main__":
    main(sys.argv[1])
