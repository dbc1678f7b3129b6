"""Ordinary arguments, paths and addresses pass through byte for byte.

Several are near misses on purpose: words like ``token`` and ``password``
without a value, ``-p`` meaning a port or ``mkdir -p``, ``KEY``-like
``ssh -o`` options, a docker image digest that looks like ``user:pass@``.
"""

from __future__ import annotations

import pytest

from agent.redact import Redactor

ORDINARY_ARGV: tuple[tuple[str, ...], ...] = (
    ("gcc", "-O2", "-Wall", "-Wextra", "-c", "main.c", "-o", "main.o"),
    ("make", "-j8", "all"),
    ("make", "CFLAGS=-O2 -g", "PREFIX=/usr/local", "install"),
    ("git", "commit", "-m", "fix: x"),
    ("git", "commit", "-m", "fix: handle an empty token list in the parser"),
    ("git", "commit", "-m", "docs: describe the --password flag"),
    ("git", "log", "--oneline", "-n", "20"),
    ("git", "clone", "git@github.com:org/repo.git"),
    ("git", "clone", "https://github.com/org/repo.git"),
    ("python", "-m", "pytest", "-k", "test_token_parser"),
    ("pytest", "tests/test_auth.py::test_password_reset", "-q"),
    ("python3", "-c", "print('hello')"),
    ("ls", "-la"),
    ("ls", "-la", "/home/alice/.ssh"),
    ("curl", "https://example.com/path?page=2"),
    ("curl", "-sSL", "-o", "out.tar.gz", "https://example.com/dl?version=1.2&arch=amd64"),
    ("curl", "--user-agent", "Mozilla/5.0", "https://example.com/"),
    ("curl", "-o", "/dev/null", "-w", "%{http_code}", "https://example.com/"),
    ("ssh", "user@host"),
    ("ssh", "-p", "2222", "-o", "StrictHostKeyChecking=no", "user@host"),
    ("ssh", "-o", "PasswordAuthentication=no", "-i", "/home/alice/.ssh/id_ed25519", "host", "uptime"),
    ("scp", "-P", "2222", "file.txt", "user@host:/tmp/"),
    ("mkdir", "-p", "/var/lib/app"),
    ("cp", "-p", "a", "b"),
    ("tar", "-xzpf", "archive.tar.gz", "-C", "/opt"),
    ("docker", "run", "--rm", "-p", "8080:80", "-e", "LOG_LEVEL=debug", "nginx:1.25@sha256:0123abcd"),
    ("docker", "build", "-t", "app:latest", "."),
    ("docker", "login", "--password-stdin", "-u", "bob", "registry.example.com"),
    ("kubectl", "get", "pods", "-n", "kube-system", "-o", "wide"),
    ("npm", "install", "--save-dev", "typescript"),
    ("pip", "install", "-r", "requirements.txt"),
    ("grep", "-rn", "password", "src/"),
    ("grep", "-r", "--include=*.py", "token", "."),
    ("grep", "-E", "Authorization", "access.log"),
    ("find", ".", "-name", "*.key", "-type", "f"),
    ("openssl", "x509", "-in", "cert.pem", "-noout", "-text"),
    ("ssh-keygen", "-t", "ed25519", "-f", "/home/alice/.ssh/id_ed25519"),
    ("rsync", "-avz", "--delete", "src/", "host:/dst/"),
    ("systemctl", "restart", "nginx.service"),
    ("journalctl", "-u", "sshd", "--since", "1 hour ago"),
    ("sort", "-k", "2", "-t", ",", "data.csv"),
    ("sort", "--key=2", "data.csv"),
    ("gh", "auth", "login", "--with-token"),
    ("app", "--no-auth", "--port", "8080"),
    ("mysql", "-p", "appdb"),
    ("mysql", "-h", "db", "-P", "3306", "-u", "app"),
    ("redis-cli", "-h", "cache", "-p", "6379", "ping"),
    ("mongosh", "--host", "db", "--port", "27017"),
    ("sqlcmd", "-S", "db", "-U", "sa", "-Q", "select 1"),
    ("sshpass", "-f", "/run/secrets/pw", "ssh", "host"),
    ("7z", "x", "archive.7z", "-oout"),
    ("unzip", "-q", "file.zip", "-d", "out"),
    ("bash", "-c", "echo hello && ls -la /tmp"),
    ("sh", "-c", "make -j4 && ./run --verbose --port 8080"),
    ("env", "LANG=C.UTF-8", "LC_ALL=C", "sort", "file"),
    ("ip", "addr", "show", "eth0"),
    ("ping", "-c", "3", "192.168.1.1"),
    ("java", "-Xmx2g", "-jar", "app.jar", "--server.port=8080"),
    ("node", "server.js", "--port", "3000"),
    ("cargo", "build", "--release"),
    ("go", "test", "./..."),
    ("uvicorn", "app:app", "--host", "0.0.0.0"),
    ("awk", "-F:", "{print $1}", "/etc/passwd"),
    ("passwd", "alice"),
    ("chmod", "600", "/home/alice/.ssh/id_rsa"),
    ("vim", "src/auth/token_parser.py"),
    ("http", "GET", "example.com/items", "page==2"),
    ("apt-get", "install", "-y", "libssl-dev"),
    ("/usr/bin/python3", "/usr/lib/python3/dist-packages/secretstorage/__init__.py"),
    ("sha256sum", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    ("git", "show", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("echo", "AKIA"),
    # near misses for the program-specific rules: same programs, no secret
    ("openssl", "enc", "-aes256", "-kfile", "/root/enc.key", "-in", "f", "-out", "f.enc"),
    ("openssl", "s_client", "-connect", "host:443", "-servername", "host"),
    ("ldapsearch", "-x", "-H", "ldap://ldap1", "-b", "dc=example,dc=org", "-s", "sub", "-a", "never", "(uid=bob)"),
    ("ldapsearch", "-x", "-W", "-D", "cn=admin", "-y", "/root/.ldappw", "-o", "ldif-wrap=no"),
    ("smbclient", "-L", "fs1", "-N"),
    ("smbclient", "//fs1/share", "-A", "/root/.smbcred", "-Ualice", "-c", "ls"),
    ("rpcclient", "--user=alice", "-c", "srvinfo", "dc1"),
    ("nmblookup", "-U", "10.0.0.1", "-R", "WORKGROUP"),
    ("mount.cifs", "//fs1/share", "/mnt", "-o", "credentials=/root/.cifs,vers=3.0,uid=1000"),
    ("lftp", "-p", "2121", "-e", "mirror -R ./out /in; quit", "ftp.example.com"),
    ("lftp", "-ualice", "ftp.example.com"),
    ("env", "-S", "python3 -u -X dev", "script.py"),
    ("env", "-i", "PATH=/usr/bin", "HOME=/root", "bash", "-l"),
    ("/usr/bin/env", "-S deno run --allow-net --port 8080", "./server.ts"),
    ("ansible-playbook", "-i", "hosts", "-e", "env=prod max_tokens=100 token_type=bearer bypass=1", "--ask-become-pass", "site.yml"),
    ("ansible-playbook", "--vault-password-file", "/root/.vault", "-e", '{"env": "prod", "tokens": "3"}', "site.yml"),
    ("curl", "-d", '{"bypass": "x", "compass": "n", "max_tokens": "100", "token_type": "bearer", "passes": "3", "password_policy": "strict", "secret_name": "db", "isPasswordSet": "no"}', "https://api.example.com"),
    ("sqlplus", "/nolog"),
    ("sqlplus", "-s", "/", "as", "sysdba", "@/opt/scripts/check.sql"),
    ("sqlplus", "scott@orcl", "@./report.sql"),
    ("expdp", "directory=DATA_PUMP_DIR", "dumpfile=x.dmp", "logfile=/tmp/x.log"),
    ("xfreerdp", "/u:alice", "/v:win1.example.com", "/size:1920x1080", "+clipboard", "/cert:ignore"),
    ("ipmitool", "-I", "lanplus", "-H", "bmc1", "-U", "admin", "-E", "-p", "623", "sensor", "list"),
    ("snmpwalk", "-v3", "-l", "authPriv", "-u", "mon", "-a", "SHA", "-x", "AES", "sw1", "IF-MIB::ifDescr"),
    ("ncftp", "-u", "alice", "-P", "2121", "ftp.example.com"),
    ("wget", "--ask-password", "--user=alice", "ftp://ftp.example.com/f"),
    ("plink", "-ssh", "-pwfile", "/root/.pw", "-P", "2222", "alice@host"),
    ("mosquitto_sub", "-h", "broker", "-p", "8883", "-u", "dev", "-t", "#"),
    ("useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "bob"),
    ("nmcli", "connection", "modify", "HomeNet", "wifi-sec.key-mgmt", "wpa-psk", "ipv4.method", "auto"),
    ("nmcli", "device", "wifi", "connect", "HomeNet", "--ask"),
    ("bash", "-c", "ldapsearch -x -LLL -b dc=x '(uid=bob)' && smbclient -L fs1 -N"),
    ("sh", "-c", "openssl enc -aes256 -kfile /root/k -in f -out f.enc; redis-cli -h cache ping"),
    # near misses for bundled short options: other letters, or a letter's value
    ("ldapsearch", "-xLLL", "-H", "ldap://ldap1", "-b", "dc=x", "-SwhenCreated", "(uid=bob)"),
    ("ldapsearch", "-ZZxW", "-D", "cn=admin,dc=x", "-b", "dc=x"),
    ("ldapmodify", "-axc", "-D", "cn=admin", "-y", "/root/.ldappw", "-f", "add.ldif"),
    ("ldappasswd", "-xAS", "-D", "cn=admin", "-W", "uid=bob,dc=x"),
    ("curl", "-fsSLo", "out.tar.gz", "https://example.com/x.tar.gz"),
    ("curl", "-sobody.json", "-w", "%{http_code}", "https://example.com/api"),
    ("curl", "-sSkv", "-XPUT", "https://example.com/"),
    ("sshpass", "-vf", "/run/secrets/pw", "ssh", "host"),
    ("sshpass", "-vP", "assword:", "-f", "/run/pw", "ssh", "host"),
    ("smbclient", "-gNL", "fs1"),
    ("smbclient", "//fs1/share", "-NUalice", "-kc", "ls"),
    ("lftp", "-d", "-e", "mirror; quit", "ftp.example.com"),
    ("lftp", "-dualice", "ftp.example.com"),
    ("mysql", "-Bse", "select 1", "appdb"),
    ("mysql", "-hprod-db", "-uapp", "-P3306", "-Bsp", "appdb"),
    ("mysqldump", "-Bq", "--single-transaction", "appdb"),
    ("zip", "-qr9", "out.zip", "dir"),
    ("unzip", "-qo", "a.zip", "-dProjects"),
    ("ssh-keygen", "-lvf", "/etc/ssh/ssh_host_ed25519_key.pub"),
    ("ssh-keygen", "-qt", "ed25519", "-f", "k", "-C", "Nightly key"),
    ("useradd", "-mrU", "-s", "/usr/sbin/nologin", "svc"),
    ("usermod", "-lpaul", "-aG", "docker", "paulo"),
    ("http", "-vf", "POST", "example.com/form", "name=x"),
    ("ipmitool", "-Ilanplus", "-H", "bmc1", "-U", "admin", "-E", "sdr"),
    ("sh", "-c", "ldapsearch -xLLL -b dc=x '(uid=bob)' | grep -v '^#'; curl -fsSLo out.tgz https://h/x.tgz"),
    ("bash", "-c", "smbclient -NL fs1 && lftp -d -e 'ls; quit' h && mysql -Bse 'select 1' && sshpass -vf /run/pw ssh h"),
    # near misses for secrets by position: no secret at that position, or no trigger
    ("htpasswd", "-c", "/etc/nginx/.htpasswd", "alice"),
    ("htpasswd", "-n", "alice"),
    ("htpasswd", "-nBC12", "alice"),
    ("htpasswd", "-D", "/etc/nginx/.htpasswd", "alice"),
    ("rabbitmqctl", "list_users"),
    ("rabbitmqctl", "add_user", "alice"),
    ("rabbitmqctl", "set_permissions", "-p", "/staging", "alice", ".*", ".*", ".*"),
    ("mc", "alias", "list"),
    ("mc", "alias", "set", "local", "http://localhost:9000"),
    ("mc", "cp", "-r", "./alias", "minio1/bucket/user"),
    ("mc", "admin", "user", "info", "minio1", "bob"),
    ("mc", "/home/alice", "/tmp"),
    ("vault", "login", "-method=oidc"),
    ("vault", "kv", "get", "-field=user", "secret/app"),
    # near misses for YAML and Python mappings
    ("ansible-playbook", "-e", "{env: prod, max_tokens: 100, token_type: bearer, bypass: 1}", "site.yml"),
    ("ansible", "all", "-e", "ansible_become: true", "-e", "{ansible_user: deploy, ansible_ssh_private_key_file: /root/.ssh/id}", "-m", "ping"),
    ("ansible-playbook", "-e", "---\nenv: prod\npasswords_rotated: yes", "site.yml"),
    ("git", "commit", "-m", "auth: fix token refresh\n\npassword: reset flow"),
    ("sh", "-c", "git commit -m 'auth: fix login' && git push"),
    ("bash", "-c", "ansible-playbook -e 'ansible_become: true' -e '{ansible_user: x}' site.yml"),
    ("python3", "-c", "print({'name': 'x', 'passes': 3, 'password_policy': 'strict'})"),
    ("",),
    (),
)  # fmt: skip

ORDINARY_PATHS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/home/alice/.ssh/id_rsa",
    "/home/alice/.aws/credentials",
    "/etc/ssl/private/server.key",
    "/etc/passwd",
    "/var/run/docker.sock",
    "/proc/self/fd/3",
    "/tmp/pytest-of-alice/pytest-7/test_token_refresh0/out.json",
    "/usr/share/doc/libpam-modules/examples/pam_password.conf",
    "/srv/app/static/js/main.3f2a9c1e.js",
    "",
)

ORDINARY_ADDRESSES: tuple[str, ...] = (
    "10.0.0.1:443",
    "[::1]:8080",
    "[2001:db8::1]:53",
    "unix:/run/systemd/journal/socket",
    "unix:@/tmp/.X11-unix/X0",
    "unix:",
    "https://example.com:8443/api?page=2",
    "ssh://git@github.com/org/repo.git",
    "postgresql://db.internal:5432/appdb",
)


@pytest.mark.parametrize("argv", ORDINARY_ARGV, ids=" ".join)
def test_ordinary_argv_is_unchanged(argv: tuple[str, ...]) -> None:
    redactor = Redactor.builtin()
    result = redactor.redact_argv(argv)
    assert result.argv == argv
    assert result.fired == ()
    stats = redactor.stats
    assert stats.fields_redacted == {}
    assert stats.failures == {}
    assert stats.fields == len(argv)


def test_there_are_at_least_thirty_ordinary_vectors() -> None:
    assert len(set(ORDINARY_ARGV)) >= 30


@pytest.mark.parametrize("value", ORDINARY_PATHS)
def test_ordinary_path_is_unchanged(value: str) -> None:
    detail = Redactor.builtin().redact_text_detail(value, "path")
    assert (detail.text, detail.fired) == (value, ())


@pytest.mark.parametrize("value", ORDINARY_ADDRESSES)
def test_ordinary_address_is_unchanged(value: str) -> None:
    detail = Redactor.builtin().redact_text_detail(value, "address")
    assert (detail.text, detail.fired) == (value, ())


def test_non_ascii_arguments_are_unchanged() -> None:
    argv = ("grep", "-r", "contraseña", "docs/", "Ünïcødé", "日本語", "\U0001f600")
    assert Redactor.builtin().redact_argv(argv).argv == argv


@pytest.mark.parametrize("argv", ORDINARY_ARGV, ids=" ".join)
def test_ordinary_argv_is_unchanged_when_cut(argv: tuple[str, ...]) -> None:
    """The cut-only rules need a token prefix at the end: ordinary entries have none."""
    result = Redactor.builtin().redact_argv(argv, cut=range(len(argv)))
    assert (result.argv, result.fired) == (argv, ())


def test_ordinary_text_is_unchanged_when_cut() -> None:
    redactor = Redactor.builtin()
    comms = ("systemd-journal", "kworker/u8:2-ev", "python3", "gnome-shell-cal", "sk_", "ghp")
    for value in (*ORDINARY_PATHS, *ORDINARY_ADDRESSES, *comms):
        assert redactor.redact_text_detail(value, "path", cut=True).text == value
    assert redactor.stats.fields_redacted == {}
