"""Start a command held at the door: forked, but not yet exec'd.

``tracehound profile`` must have the child in its BPF scope before the
child's first instruction of the new program, or its exec would be missed.
So: fork; the child waits on a pipe; the parent puts the child's pid in
scope, then opens the door. An exec that fails in the child is reported back
through a close-on-exec pipe (EOF means the exec succeeded), as subprocess
does.
"""

from __future__ import annotations

import os
import signal


class Launched:
    def __init__(self, pid: int, go_fd: int, err_fd: int) -> None:
        self.pid = pid
        self._go_fd = go_fd
        self._err_fd = err_fd

    def release(self) -> OSError | None:
        """Let the child exec. Returns the child's exec error, if any."""
        try:
            os.write(self._go_fd, b"x")
        except BrokenPipeError:
            pass  # the child died before its release: the error pipe says why
        finally:
            os.close(self._go_fd)
        data = b""
        try:
            while chunk := os.read(self._err_fd, 64):
                data += chunk
        finally:
            os.close(self._err_fd)
        if not data:
            return None
        errno_text, _, message = data.decode(errors="replace").partition(":")
        return OSError(int(errno_text), message)


def launch(argv: list[str], executable: str | None = None) -> Launched:
    """Fork a child that will exec ``argv`` once released.

    ``executable`` is the resolved program (``shutil.which``); without it the
    child searches PATH, and every miss is a real failed execve that a
    profile would show. Returns once the child has finished its own setup,
    so what it does before the door opens is not the command's doing.
    """
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, ever
        try:
            os.close(go_w)
            os.close(err_r)
            os.close(ready_r)
            # Python ignores SIGPIPE and SIGXFSZ; the command must not inherit that.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            os.write(ready_w, b"r")
            if os.read(go_r, 1) == b"x":
                if executable is None:
                    os.execvp(argv[0], argv)
                else:
                    os.execv(executable, argv)
        except OSError as err:
            os.write(err_w, f"{err.errno}:{err.strerror}".encode())
        except BaseException:
            os.write(err_w, b"0:could not start")
        finally:
            os._exit(127)
    os.close(go_r)
    os.close(err_w)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # EOF instead if the child died first: release() says why
    finally:
        os.close(ready_r)
    return Launched(pid, go_w, err_r)


def exit_status(wait_status: int) -> int:
    """A shell's view of a wait status: the code, or 128 + the signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)
