"""The scripted workload run under `tracehound profile` by test_profile_cli.

It does one of each thing the profile must show, and writes down the facts
(pids, ports, paths) the test then looks for. Run with Debian's python3:
    python3 scripted.py FACTS_JSON WORKDIR
"""

import contextlib
import json
import os
import socket
import subprocess
import sys

facts_path, workdir = sys.argv[1], sys.argv[2]
facts: dict[str, object] = {"pid": os.getpid(), "ppid": os.getppid()}

# A known binary with arguments, and an exit code.
echo = subprocess.Popen(["/bin/echo", "tracehound-arg", "second arg"], stdout=subprocess.DEVNULL)
echo.wait()
facts["echo_pid"] = echo.pid
sh = subprocess.Popen(["/bin/sh", "-c", "exit 7"])
sh.wait()
facts["sh_pid"] = sh.pid

# A failing exec.
try:
    subprocess.Popen(["/nonexistent/tracehound-missing-binary", "x"])
except FileNotFoundError:
    facts["failed_exec"] = "/nonexistent/tracehound-missing-binary"

# Files: mkdir, create + write, rename, chmod, unlink; an open that fails.
work = os.path.join(workdir, "work")
os.mkdir(work)
created = os.path.join(work, "created.txt")
with open(created, "w") as fh:
    fh.write("data")
renamed = os.path.join(work, "renamed.txt")
os.rename(created, renamed)
os.chmod(renamed, 0o600)
os.unlink(renamed)
missing = os.path.join(workdir, "missing-file")
with contextlib.suppress(FileNotFoundError):
    open(missing).close()
facts.update(work=work, created=created, renamed=renamed, missing=missing)


def tcp(family: int, host: str) -> dict[str, int]:
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection((host, port))
    conn, _ = server.accept()
    out = {"port": port, "client_port": client.getsockname()[1]}
    for s in (conn, client, server):
        s.close()
    return out


facts["v4"] = tcp(socket.AF_INET, "127.0.0.1")
facts["v6"] = tcp(socket.AF_INET6, "::1")

unix_path = os.path.join(workdir, "unix.sock")
userver = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
userver.bind(unix_path)
userver.listen()
uclient = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
uclient.connect(unix_path)
uconn, _ = userver.accept()
for s in (uconn, uclient, userver):
    s.close()
facts["unix"] = unix_path

with open(facts_path, "w") as out:
    json.dump(facts, out)
