"""The configuration file: defaults, a full example, and one clear line per mistake."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agent.config import (
    ApiConfig,
    CaptureConfig,
    Config,
    ConfigError,
    EvidenceConfig,
    MetricsConfig,
    StreamConfig,
    apply_defaults,
    cli_defaults,
    dump_config,
    example_config_text,
    load_config,
    parse_config,
    parse_listen,
    parse_mode,
)
from agent.config.schema import DEFAULT_EVIDENCE_DIR, EVIDENCE_DIR_ENV
from agent.errors import UsageError
from agent.redact import Rule

FULL = """\
[capture]
ringbuf_pages = 256
argv_max = 32
disable_probes = ["syscalls.count"]
probe_tracepoints = { "file.openat" = "syscalls:sys_enter_openat" }
stats_interval = 0

[stream]
capacity = 100
policy = "drop"

[evidence]
enabled = true
state_dir = "/srv/evidence"
fsync = "always"
segment_mb = 8
segment_hours = 1.5
retain_mb = 64
checkpoint_every = 10
redact_rules = [
  { name = "corp-token", privacy = "forbidden", pattern = 'corp_[A-Za-z0-9]{20}' },
  { name = "db-pass", privacy = "sensitive", pattern = '--db-pass(?:=(\\S+))?', group = 1, next_arg = true, programs = ["dbtool"] },
]

[api]
enabled = false
socket = "/tmp/th/api.sock"
mode = 0o640
group = "adm"
allow_uids = [1000, 1001]
allow_gids = [4]
max_request_bytes = 4096
max_headers = 32
max_clients = 8
idle_timeout_s = 5
sse_buffer = 16

[metrics]
enabled = false
listen = "[::1]:9100"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tracehound.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message.removeprefix(f"{path}: ")


# --- defaults and full files -------------------------------------------------


def test_no_file_gives_the_builtin_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EVIDENCE_DIR_ENV, raising=False)
    config = load_config(None, default=tmp_path / "absent.toml")
    assert config == Config()
    assert config.capture.ringbuf_pages == 1024
    assert config.stream.policy == "block"
    assert config.evidence.state_dir == "/var/lib/tracehound/evidence"
    assert config.api.socket == "/run/tracehound/api.sock"
    assert config.api.mode_bits == 0o660
    assert config.metrics.address == ("127.0.0.1", 9464)


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_the_default_path_is_read_when_it_exists(tmp_path: Path) -> None:
    path = write(tmp_path, "[stream]\ncapacity = 5\n")
    assert load_config(None, default=path).stream.capacity == 5


def test_a_full_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.capture == CaptureConfig(
        ringbuf_pages=256,
        argv_max=32,
        disable_probes=("syscalls.count",),
        probe_tracepoints={"file.openat": "syscalls:sys_enter_openat"},
        stats_interval=0.0,
    )
    assert config.stream == StreamConfig(capacity=100, policy="drop")
    evidence = config.evidence
    assert (evidence.enabled, evidence.fsync, evidence.segment_mb) == (True, "always", 8.0)
    assert isinstance(evidence.segment_mb, float)
    assert evidence.redact_rules[1] == Rule(
        name="db-pass",
        privacy="sensitive",
        pattern=r"--db-pass(?:=(\S+))?",
        group=1,
        next_arg=True,
        programs=("dbtool",),
    )
    redactor = evidence.redactor()
    assert redactor.redact_text("x corp_abcdefghijklmnopqrst y", "path") == "[REDACTED:corp-token]"
    assert config.api.mode == "0640"
    assert config.api.mode_bits == 0o640
    assert config.api.allow_uids == (1000, 1001)
    assert config.metrics.address == ("::1", 9100)


def test_the_example_states_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `config example` shows is what runs with no file: every value
    in it equals the schema's default (evidence on, in /var/lib)."""
    monkeypatch.delenv(EVIDENCE_DIR_ENV, raising=False)
    config = parse_config(example_config_text(), "example")
    assert config == Config()
    assert config.evidence.enabled
    assert config.evidence.state_dir == DEFAULT_EVIDENCE_DIR == "/var/lib/tracehound/evidence"
    # The environment moves the default, never the example.
    monkeypatch.setenv(EVIDENCE_DIR_ENV, "/tmp/elsewhere")
    assert Config().evidence.state_dir == "/tmp/elsewhere"
    assert f'state_dir = "{DEFAULT_EVIDENCE_DIR}"' in example_config_text()


def test_the_environment_moves_only_the_default_evidence_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EVIDENCE_DIR_ENV, str(tmp_path / "ev"))
    assert load_config(None, default=tmp_path / "absent.toml").evidence.state_dir == str(
        tmp_path / "ev"
    )
    named = write(tmp_path, "[evidence]\nstate_dir = '/srv/log'\n")
    assert load_config(named).evidence.state_dir == "/srv/log"  # the file wins
    for bad in ("", "relative/dir"):
        monkeypatch.setenv(EVIDENCE_DIR_ENV, bad)
        with pytest.raises(ConfigError) as caught:
            load_config(named)
        # Named alone: the file is not what is wrong.
        assert str(caught.value) == (
            f"{EVIDENCE_DIR_ENV}: expected an absolute directory path, got {bad!r}"
        )


def test_the_example_loads_and_shows_every_key() -> None:
    text = example_config_text()
    # The commented-out rule shows a working form.
    rule = text.replace("# redact_rules = [\n#", "redact_rules = [\n").replace("\n# ]", "\n]")
    rule = rule.replace("redact_rules = []\n", "")
    config = parse_config(rule, "example")
    assert [r.name for r in config.evidence.redact_rules] == ["internal-token"]
    for section in Config.__struct_fields__:
        table = getattr(config, section)
        assert f"[{section}]" in text
        for name in table.__struct_fields__:
            assert f"\n{name} = " in text, f"{section}.{name} missing from the example"


# --- round trip ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["", FULL, example_config_text()], ids=["default", "full", "ex"])
def test_dump_then_load_gives_the_same_config(text: str) -> None:
    config = parse_config(text, "in")
    dumped = dump_config(config)
    assert parse_config(dumped, "dumped") == config
    assert dump_config(parse_config(dumped, "dumped")) == dumped  # deterministic


def test_dump_escapes_awkward_strings() -> None:
    awkward = 'a"b\\\\c\td\x01e\x7f\u00e9'
    rule = Rule(name="odd", privacy="forbidden", pattern=awkward)
    config = Config(
        evidence=EvidenceConfig(state_dir=awkward, redact_rules=(rule,)),
        api=ApiConfig(group="", socket="/run/x y.sock"),
    )
    assert parse_config(dump_config(config), "dumped") == config


# --- one line per mistake -------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "[captur]\nargv_max = 3\n")
    assert (
        message == "captur: unknown key; expected one of:"
        " api, capture, collect, evidence, fleet, metrics, stream"
    )


def test_unknown_nested_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "[capture]\nringbuf_page = 64\n")
    assert message.startswith("capture.ringbuf_page: unknown key; expected one of: argv_max,")
    assert "ringbuf_pages" in message


def test_unknown_key_in_a_redaction_rule(tmp_path: Path) -> None:
    text = "[evidence]\nredact_rules = [{name = 'a', privacy = 'forbidden', pattern = 'x', gruop = 1}]\n"
    message = refused(tmp_path, text)
    assert message.startswith("evidence.redact_rules[0].gruop: unknown key; expected one of:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[capture]\nargv_max = '16'\n", "capture.argv_max: expected an integer, got a string"),
        (
            "[capture]\nargv_max = true\n",
            "capture.argv_max: expected an integer, got true or false",
        ),
        ("capture = 3\n", "capture: expected a table, got an integer"),
        ("[capture]\ndisable_probes = 'exec.fork'\n", "capture.disable_probes: expected an array"),
        (
            "[api]\nallow_uids = [1, 'root']\n",
            "api.allow_uids[1]: expected an integer, got a string",
        ),
        ("[api]\nmode = 6.6\n", "api.mode: expected an integer or a string, got a decimal number"),
        (
            "[capture]\nprobe_tracepoints = { 'file.open' = 1 }\n",
            "capture.probe_tracepoints: expected a string",
        ),
        (
            "[evidence]\nsegment_mb = 'big'\n",
            "evidence.segment_mb: expected a number, got a string",
        ),
    ],
)
def test_wrong_type(tmp_path: Path, text: str, expected: str) -> None:
    assert refused(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[capture]\nringbuf_pages = 1000\n",
            "capture.ringbuf_pages: expected a power of two from 1 to 262144, got 1000",
        ),
        ("[capture]\nringbuf_pages = 0\n", "capture.ringbuf_pages: expected a power of two"),
        ("[capture]\nargv_max = 65\n", "capture.argv_max: expected 1 to 64, got 65"),
        (
            "[capture]\nstats_interval = -1\n",
            "capture.stats_interval: expected 0 (never) to 86400 seconds, got -1.0",
        ),
        (
            "[capture]\ndisable_probes = ['exec.frok']\n",
            "capture.disable_probes: unknown probe 'exec.frok'; expected one of: ",
        ),
        (
            "[capture]\nprobe_tracepoints = { 'nope' = 'a:b' }\n",
            "capture.probe_tracepoints: unknown probe 'nope'",
        ),
        (
            "[capture]\nprobe_tracepoints = { 'file.open' = 'openat' }\n",
            'capture.probe_tracepoints."file.open": expected "CATEGORY:EVENT"',
        ),
        ("[stream]\ncapacity = 0\n", "stream.capacity: expected 1 to 16777216, got 0"),
        (
            "[evidence]\nsegment_mb = 0\n",
            "evidence.segment_mb: expected a number above 0, at most 1024, got 0.0",
        ),
        (
            "[evidence]\nsegment_mb = 2048\n",
            "evidence.segment_mb: expected a number above 0, at most 1024, got 2048.0",
        ),
        (
            "[evidence]\nsegment_hours = nan\n",
            "evidence.segment_hours: expected a number above 0, at most 8784, got nan",
        ),
        (
            "[evidence]\nsegment_hours = inf\n",
            "evidence.segment_hours: expected a number above 0, at most 8784, got inf",
        ),
        (
            "[evidence]\nretain_mb = nan\n",
            "evidence.retain_mb: expected a number above 0, at most 1048576, got nan",
        ),
        (
            "[evidence]\nretain_mb = 1e7\n",
            "evidence.retain_mb: expected a number above 0, at most 1048576, got 10000000.0",
        ),
        (
            "[capture]\nstats_interval = nan\n",
            "capture.stats_interval: expected 0 (never) to 86400 seconds, got nan",
        ),
        (
            "[capture]\nstats_interval = inf\n",
            "capture.stats_interval: expected 0 (never) to 86400 seconds, got inf",
        ),
        (
            "[capture]\nringbuf_pages = 524288\n",
            "capture.ringbuf_pages: expected a power of two from 1 to 262144, got 524288",
        ),
        ("[stream]\ncapacity = 16777217\n", "stream.capacity: expected 1 to 16777216, got"),
        (
            "[api]\nidle_timeout_s = nan\n",
            "api.idle_timeout_s: expected a number of seconds above 0, at most 3600, got nan",
        ),
        (
            "[api]\nidle_timeout_s = -inf\n",
            "api.idle_timeout_s: expected a number of seconds above 0, at most 3600, got -inf",
        ),
        (
            "[evidence]\nretain_mb = 10\nsegment_mb = 20\n",
            "evidence.retain_mb: expected at least evidence.segment_mb (20.0), got 10.0",
        ),
        (
            "[evidence]\ncheckpoint_every = -1\n",
            "evidence.checkpoint_every: expected 0 to 1048576, got -1",
        ),
        (
            "[evidence]\ncheckpoint_every = 1048577\n",
            "evidence.checkpoint_every: expected 0 to 1048576, got 1048577",
        ),
        ("[evidence]\nstate_dir = ''\n", "evidence.state_dir: expected a directory path"),
        ("[api]\nmode = '0999'\n", "api.mode: expected an octal mode such as \"0660\", got '0999'"),
        ("[api]\nmode = 0o1777\n", "api.mode: expected a mode from 0 to 0777, got 1023"),
        ("[api]\nmode = 660\n", "api.mode: expected a mode from 0 to 0777, got 660"),
        ("[api]\nsocket = 'api.sock'\n", "api.socket: expected an absolute path"),
        (
            "[api]\nsocket = '/" + "x" * 120 + "'\n",
            "api.socket: expected an absolute path of at most 107 bytes",
        ),
        ("[api]\ngroup = 'two words'\n", "api.group: expected a group name or number"),
        ("[api]\nallow_gids = [-1]\n", "api.allow_gids: expected 0 to 4294967294, got -1"),
        (
            "[api]\nmax_request_bytes = 10\n",
            "api.max_request_bytes: expected 1024 to 1048576, got 10",
        ),
        ("[api]\nmax_headers = 0\n", "api.max_headers: expected 1 to 1000, got 0"),
        ("[api]\nmax_clients = 0\n", "api.max_clients: expected 1 to 65536, got 0"),
        ("[api]\nidle_timeout_s = 0\n", "api.idle_timeout_s: expected a number of seconds above 0"),
        ("[api]\nsse_buffer = 0\n", "api.sse_buffer: expected 1 to 1048576, got 0"),
        ("[metrics]\nlisten = '127.0.0.1'\n", "metrics.listen: expected HOST:PORT"),
        ("[metrics]\nlisten = '127.0.0.1:70000'\n", "metrics.listen: expected HOST:PORT"),
        ("[metrics]\nlisten = '::1:9464'\n", "metrics.listen: expected HOST:PORT"),
        ("[metrics]\nlisten = '[nope]:9464'\n", "metrics.listen: expected HOST:PORT"),
        ("[metrics]\nlisten = 'localhost:\u00b2'\n", "metrics.listen: expected HOST:PORT"),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, expected: str) -> None:
    assert refused(tmp_path, text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[stream]\npolicy = 'fast'\n",
            "stream.policy: expected one of 'block', 'drop', got 'fast'",
        ),
        (
            "[evidence]\nfsync = 'sometimes'\n",
            "evidence.fsync: expected one of 'always', 'batch', 'never', got 'sometimes'",
        ),
        (
            "[evidence]\nredact_rules = [{name = 'a', privacy = 'secret', pattern = 'x'}]\n",
            "evidence.redact_rules[0].privacy: expected one of 'forbidden', 'sensitive', got 'secret'",
        ),
    ],
)
def test_bad_enum(tmp_path: Path, text: str, expected: str) -> None:
    assert refused(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "{name = 'a', privacy = 'sensitive', pattern = '(' }",
            "evidence.redact_rules[1]: rule 'a': pattern does not compile",
        ),
        (
            "{name = 'a', privacy = 'forbidden', pattern = 'x*' }",
            "evidence.redact_rules[1]: rule 'a': pattern matches the empty string",
        ),
        (
            "{name = 'jwt', privacy = 'forbidden', pattern = 'x' }",
            "evidence.redact_rules[1]: rule 'jwt': the name is already used by a built-in rule",
        ),
        (
            "{name = 'Bad Name', privacy = 'forbidden', pattern = 'x' }",
            "evidence.redact_rules[1]: rule 'Bad Name': name must match",
        ),
        (
            "{name = 'a', privacy = 'sensitive', pattern = 'x(y)', group = 5 }",
            "evidence.redact_rules[1]: rule 'a': ",
        ),
        (
            "{privacy = 'forbidden', pattern = 'x' }",
            "evidence.redact_rules[1]: missing required key 'name'",
        ),
    ],
)
def test_bad_redaction_rule(tmp_path: Path, rule: str, expected: str) -> None:
    """The bad rule comes second, after a good one, so its index is 1."""
    good = "{name = 'ok', privacy = 'forbidden', pattern = 'ok_[0-9]+' }"
    text = f"[evidence]\nredact_rules = [{good}, {rule}]\n"
    assert refused(tmp_path, text).startswith(expected)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = refused(tmp_path, "[capture]\nargv_max = 16\nringbuf_pages = = 3\n")
    assert message.startswith("line 3: not valid TOML: ")
    assert "(column " in message


def test_duplicate_key_is_a_toml_error(tmp_path: Path) -> None:
    message = refused(tmp_path, "[stream]\ncapacity = 1\ncapacity = 2\n")
    assert message.startswith("line 3: not valid TOML: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[api]\ngroup = '\xff'\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML: not UTF-8 at byte 15$"):
        load_config(path)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file$"):
        load_config(path)


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": not a regular file \(a directory\)$"):
        load_config(tmp_path)


def test_a_file_over_1_mib_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "# padding\n" * 120_000)
    with pytest.raises(
        ConfigError, match=r"tracehound\.toml: larger than 1 MiB \(1200000 bytes\)$"
    ):
        load_config(path)


def test_every_bounded_key_documents_its_maximum_in_the_example() -> None:
    """`tracehound config example` tells the operator each bound, from agent.limits."""
    from agent import limits

    documented = {
        "ringbuf_pages": limits.MAX_RINGBUF_PAGES,
        "argv_max": limits.MAX_ARGV,
        "stats_interval": limits.MAX_STATS_INTERVAL_S,
        "capacity": limits.MAX_STREAM_CAPACITY,
        "segment_mb": limits.MAX_SEGMENT_MB,
        "segment_hours": limits.MAX_SEGMENT_HOURS,
        "retain_mb": limits.MAX_RETAIN_MB,
        "checkpoint_every": limits.MAX_CHECKPOINT_EVERY,
        "max_request_bytes": limits.MAX_REQUEST_BYTES,
        "max_headers": limits.MAX_HEADERS,
        "max_clients": limits.MAX_CLIENTS,
        "idle_timeout_s": limits.MAX_IDLE_TIMEOUT_S,
        "sse_buffer": limits.MAX_SSE_BUFFER,
    }
    lines = example_config_text().splitlines()
    for key, maximum in documented.items():
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        comment = []
        for line in reversed(lines[:at]):
            if not line.startswith("#"):
                if comment:
                    break
                continue  # keys sharing one comment block above them
            comment.append(line)
        assert f"{maximum}" in " ".join(comment), (key, maximum, comment)


def test_the_schema_refuses_one_past_each_maximum() -> None:
    """The limits the example documents are the ones the schema enforces."""
    from agent import limits

    for section, key, value in (
        (CaptureConfig, "argv_max", limits.MAX_ARGV + 1),
        (CaptureConfig, "stats_interval", limits.MAX_STATS_INTERVAL_S + 0.5),
        (StreamConfig, "capacity", limits.MAX_STREAM_CAPACITY + 1),
        (EvidenceConfig, "segment_mb", limits.MAX_SEGMENT_MB + 0.5),
        (EvidenceConfig, "segment_hours", limits.MAX_SEGMENT_HOURS + 0.5),
        (EvidenceConfig, "checkpoint_every", limits.MAX_CHECKPOINT_EVERY + 1),
        (ApiConfig, "max_request_bytes", limits.MAX_REQUEST_BYTES + 1),
        (ApiConfig, "max_headers", limits.MAX_HEADERS + 1),
        (ApiConfig, "max_clients", limits.MAX_CLIENTS + 1),
        (ApiConfig, "idle_timeout_s", limits.MAX_IDLE_TIMEOUT_S + 0.5),
        (ApiConfig, "sse_buffer", limits.MAX_SSE_BUFFER + 1),
    ):
        section(**{key: value - (1 if isinstance(value, int) else 0.5)})  # the maximum: fine
        with pytest.raises(ConfigError, match=rf"\.{key}: expected "):
            section(**{key: value})
    EvidenceConfig(retain_mb=limits.MAX_RETAIN_MB)
    with pytest.raises(ConfigError, match=r"^evidence\.retain_mb: "):
        EvidenceConfig(retain_mb=limits.MAX_RETAIN_MB + 1)


def test_config_error_is_a_usage_error() -> None:
    assert issubclass(ConfigError, UsageError)
    assert ConfigError("x").exit_status == 2


# --- built in code, not read ------------------------------------------------------


def test_sections_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^capture\.argv_max: expected 1 to 64, got 0$"):
        CaptureConfig(argv_max=0)
    with pytest.raises(ConfigError, match=r"^metrics\.listen: "):
        MetricsConfig(listen="nowhere")


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().stream.capacity = 3  # type: ignore[misc]


def test_parse_mode_and_listen() -> None:
    assert parse_mode("0660") == parse_mode("660") == parse_mode("0o660") == parse_mode(0o660)
    assert parse_mode(0) == 0
    for bad in ("", "8", "0o", "-1", "0x1ff", "07777"):
        with pytest.raises(ValueError):
            parse_mode(bad)
    assert parse_listen("localhost:1") == ("localhost", 1)
    assert parse_listen("0.0.0.0:9464") == ("0.0.0.0", 9464)
    for bad in ("", ":9464", "host:", "host:0", "host:x", "a b:1"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# --- the bridge to today's command-line options -------------------------------------


def _run_parser() -> argparse.ArgumentParser:
    from agent.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["run"]
    raise AssertionError("no run subcommand")


def test_every_option_with_a_config_key_defaults_to_not_given() -> None:
    """The schema holds the defaults; the parser only says "not given"
    (None), so apply_defaults can tell a flag given from one left out."""
    parser = _run_parser()
    for dest in cli_defaults(Config()):
        assert parser.get_default(dest) is None, dest
    args = parser.parse_args([])
    apply_defaults(args, Config())
    assert {dest: getattr(args, dest) for dest in cli_defaults(Config())} == cli_defaults(Config())


def test_apply_defaults_lets_the_command_line_win(tmp_path: Path) -> None:
    parser = _run_parser()
    config = load_config(write(tmp_path, FULL))
    args = parser.parse_args(["--argv-max", "8"])
    apply_defaults(args, config)
    assert args.argv_max == 8  # given: wins
    assert args.ringbuf_pages == 256  # not given: from the file
    assert args.disable_probe == ["syscalls.count"]
    assert args.probe_tracepoint == ["file.openat=syscalls:sys_enter_openat"]
    assert args.stream_policy == "drop"
    assert args.evidence == "/srv/evidence"
    assert args.evidence_fsync == "always"
    assert args.evidence_checkpoint_every == 10
    assert msgspec.to_builtins(args.stats_interval) == 0.0


def test_an_explicit_value_wins_even_when_it_is_the_builtin_default(tmp_path: Path) -> None:
    """--stats-interval 5 (the schema's default) over the file's 0: given
    wins; and the file's 0 over the schema's 5 when not given."""
    parser = _run_parser()
    config = load_config(write(tmp_path, FULL))
    builtin = Config()
    given = [
        "--stats-interval", str(builtin.capture.stats_interval),
        "--ringbuf-pages", str(builtin.capture.ringbuf_pages),
        "--stream-policy", builtin.stream.policy,
        "--evidence-fsync", builtin.evidence.fsync,
    ]  # fmt: skip
    args = parser.parse_args(given)
    decided = apply_defaults(args, config)
    assert args.stats_interval == builtin.capture.stats_interval != config.capture.stats_interval
    assert args.ringbuf_pages == builtin.capture.ringbuf_pages != config.capture.ringbuf_pages
    assert args.stream_policy == builtin.stream.policy != config.stream.policy
    assert args.evidence_fsync == builtin.evidence.fsync != config.evidence.fsync
    assert not {"stats_interval", "ringbuf_pages", "stream_policy", "evidence_fsync"} & decided
    left_out = parser.parse_args([])
    assert "stats_interval" in apply_defaults(left_out, config)
    assert left_out.stats_interval == config.capture.stats_interval == 0


def test_no_evidence_wins_over_the_file_and_the_default(tmp_path: Path) -> None:
    parser = _run_parser()
    for config in (Config(), load_config(write(tmp_path, FULL))):
        assert config.evidence.enabled
        on = parser.parse_args([])
        apply_defaults(on, config)
        assert on.evidence == config.evidence.state_dir
        off = parser.parse_args(["--no-evidence"])
        apply_defaults(off, config)
        assert off.evidence is None
    assert parser.parse_args(["--evidence", "/x"]).evidence == "/x"
    with pytest.raises(UsageError, match="--no-evidence: not allowed with argument --evidence"):
        parser.parse_args(["--evidence", "/x", "--no-evidence"])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
    )


def test_config_cli_check_show_example(tmp_path: Path) -> None:
    example = _cli("config", "example")
    assert example.returncode == 0
    path = tmp_path / "tracehound.toml"
    path.write_text(example.stdout)
    ok = _cli("config", "check", str(path))
    assert ok.returncode == 0 and ok.stdout.strip() == f"{path}: ok"
    shown = _cli("config", "show", "--config", str(path))
    assert shown.returncode == 0 and "[capture]" in shown.stdout
    assert parse_config(shown.stdout, "shown") == load_config(path)


def test_config_cli_and_run_refuse_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[capture]\nringbuf_pagez = 1\n")
    for args in (("config", "check", str(bad)), ("run", "--config", str(bad))):
        result = _cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "capture.ringbuf_pagez" in lines[0] and str(bad) in lines[0]
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["c\x1b[31mFAKE\nOK.toml", "c\udcff.toml"])
def test_config_check_echoes_a_hostile_path_escaped(tmp_path: Path, name: str) -> None:
    """The path is the user's bytes: printed as the errors print it, one
    line with no escape sequence (``shown``)."""
    path = tmp_path / name
    path.write_text("[capture]\n")
    ok = _cli("config", "check", str(path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{str(path)!r}: ok\n"
    assert ok.stdout.rstrip("\n").isprintable()
    # And an error about it, on stderr, is one escaped line too.
    path.write_text("[capture]\nringbuf_pages = 3\n")
    bad = _cli("config", "check", str(path))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.rstrip("\n").isprintable() and "capture.ringbuf_pages" in bad.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[collect]\nstream_replicas = 0", "collect.stream_replicas: expected 1 to 5, got 0"),
        ("[collect]\nstream_replicas = 6", "collect.stream_replicas: expected 1 to 5, got 6"),
        ("[collect]\nack_wait_s = 0.5", "collect.ack_wait_s: expected 1 to 3600, got 0.5"),
        ("[fleet]\nenabled = true", "fleet.nats_url: expected a nats:// or tls:// URL"
         " (several: comma-separated)"),
        ('[fleet]\nnats_url = "http://x:1"', "fleet.nats_url: expected a nats://HOST:PORT or"
         " tls://HOST:PORT URL, got 'http://x:1'"),
        ('[fleet]\nsubject_prefix = "a b"', "fleet.subject_prefix: expected 1 to 8 dot-separated"
         " tokens of A-Z, a-z, 0-9, _ and -, got 'a b'"),
    ],
)  # fmt: skip
def test_fleet_and_collect_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert refused(tmp_path, text) == expected
