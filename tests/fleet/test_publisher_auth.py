"""NATS auth and TLS from the settings: a token file against a real nats-server, bad files in one line."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from agent.config.fleet import FleetConfig
from agent.fleet.nats_options import NatsSetupError, connect_options
from tests.fleet.pubtools import (
    PublisherProcess,
    expected,
    fleet_config,
    log_lines,
    make_stream,
    stream_messages,
    wait_for,
    write_log,
)
from tests.fleet.servers import NATS_SERVER, NatsServer, _wait_for_port, require_servers

TOKEN = "s3cret-token-for-the-test"


class TokenNats(NatsServer):
    """A nats-server that wants a token (``--auth``)."""

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.store_dir), "--auth", TOKEN],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, 10.0, "nats-server", self.process)

    @property
    def token_url(self) -> str:
        return f"nats://{TOKEN}@127.0.0.1:{self.port}"


def test_token_file_is_read_and_used(tmp_path: Path) -> None:
    require_servers()
    server = TokenNats(tmp_path / "nats")
    server.start()
    try:
        make_stream(server.token_url)
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        state = tmp_path / "state"
        write_log(state, 50)
        config = fleet_config(
            tmp_path / "tracehound.toml", server.url, extra=f'token_file = "{token}"'
        )
        pub = PublisherProcess(config, state, tmp_path / "pub.stderr")
        pub.start()
        try:
            total = len(log_lines(state))
            wait_for(lambda: pub.last().get("cursor") == total - 1, "publishing with the token")
            assert stream_messages(server.token_url) == expected(state)
            assert TOKEN not in pub.stderr()  # secrets never leave
        finally:
            pub.kill()
        # without the token the server refuses, and the publisher retries, saying so once
        plain = fleet_config(tmp_path / "plain.toml", server.url)
        refused = PublisherProcess(plain, state, tmp_path / "refused.stderr")
        refused.start()
        try:
            wait_for(lambda: "cannot reach NATS" in refused.stderr(), "the refusal said")
            assert refused.proc is not None and refused.proc.poll() is None
        finally:
            refused.kill()
    finally:
        server.stop()


def _fleet(**settings: str) -> FleetConfig:
    return FleetConfig(enabled=True, nats_url="nats://127.0.0.1:4222", **settings)  # type: ignore[arg-type]


def test_connect_options_from_the_settings(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  abc  \n")
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    options = connect_options(_fleet(token_file=str(token)), "fleet")
    assert options == {"servers": ["nats://127.0.0.1:4222"], "token": "abc"}
    options = connect_options(_fleet(credentials_file=str(creds)), "fleet")
    assert options["user_credentials"] == str(creds)
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    options = connect_options(_fleet(tls_ca_file=str(ca)), "fleet")
    assert isinstance(options["tls"], ssl.SSLContext)
    assert options["tls"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"token_file": "/nonexistent/token"}, "fleet.token_file"),
        ({"credentials_file": "/nonexistent/user.creds"}, "fleet.credentials_file"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "fleet.tls_ca_file"),
        ({"tls_cert_file": "/nonexistent/c.pem", "tls_key_file": "/nonexistent/k.pem"},
         "fleet.tls_cert_file"),
    ],
)  # fmt: skip
def test_unusable_files_are_one_line_naming_the_key(settings: dict[str, str], key: str) -> None:
    with pytest.raises(NatsSetupError) as caught:
        connect_options(_fleet(**settings), "fleet")
    message = str(caught.value)
    assert message.startswith(key + ":") and "\n" not in message


def test_a_token_file_of_two_lines_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\ntwo\n")
    with pytest.raises(NatsSetupError, match="expected one line"):
        connect_options(_fleet(token_file=str(token)), "fleet")
