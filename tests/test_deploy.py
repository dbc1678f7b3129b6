"""Deployment files: they parse, say what they must, and pass their own checkers.

External checkers: ``promtool`` (Debian's prometheus package) and
``systemd-analyze`` (systemd). A missing checker skips its test, and fails it
when CI=true. PyYAML comes from Debian's python3-yaml (the venv sees system
site-packages).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = ROOT / "systemd" / "tracehound.service"

CAPABILITIES = {"BPF", "PERFMON", "SYS_PTRACE"}

#: The metric-name contract documented at the top of alerts.yml.
METRICS = {
    "tracehound_events_total",
    "tracehound_events_lost_total",
    "tracehound_queue_depth",
    "tracehound_queue_capacity",
    "tracehound_probe_attached",
    "tracehound_evidence_verify_ok",
    "tracehound_evidence_checkpoint_age_seconds",
    "tracehound_evidence_records_total",
    "tracehound_build_info",
}
#: The fleet's metrics (issue 12), in the same header: the collector's and the publisher's.
FLEET_METRICS = {
    "tracehound_collect_chain_events_total",
    "tracehound_fleet_lag_records",
    "tracehound_fleet_lag_seconds",
}

ALERTS = {
    "TracehoundEventsLost": {"tracehound_events_lost_total"},
    "TracehoundQueueNearlyFull": {"tracehound_queue_depth", "tracehound_queue_capacity"},
    "TracehoundEvidenceVerifyFailing": {"tracehound_evidence_verify_ok"},
    "TracehoundProbeMissing": {"tracehound_probe_attached"},
    "TracehoundCheckpointStale": {"tracehound_evidence_checkpoint_age_seconds"},
    "TracehoundFleetChainBreak": {"tracehound_collect_chain_events_total"},
    "TracehoundFleetLagging": {"tracehound_fleet_lag_seconds", "tracehound_fleet_lag_records"},
}


def _tool(name: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/bin", "/usr/sbin", "/bin") if (p := Path(d) / name).exists()),
        None,
    )
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (CI=true): scripts/setup.sh must install it")
        pytest.skip(f"{name} is not installed")
    return path


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\btracehound_[a-z_]+\b", text))


def _daemonset() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()))
    sets = [d for d in docs if d and d.get("kind") == "DaemonSet"]
    assert len(sets) == 1
    daemonset: dict[str, Any] = sets[0]
    return daemonset


def test_yaml_files_parse() -> None:
    for name in ("daemonset.yaml", "prometheus.yml", "alerts.yml", "collector.yaml"):
        docs = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
        assert docs, name


def test_daemonset_is_host_wide_with_least_capabilities() -> None:
    daemonset = _daemonset()
    assert daemonset["apiVersion"] == "apps/v1"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == CAPABILITIES
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_daemonset_mounts() -> None:
    pod = _daemonset()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for path in ("/sys/kernel/tracing", "/sys/kernel/btf", "/sys/fs/cgroup", "/lib/modules", "/usr/src"):  # fmt: skip
        assert mounts[path].get("readOnly") is True, path
        assert host_paths[mounts[path]["name"]] == path
    for path in ("/var/lib/tracehound", "/run/tracehound"):
        assert not mounts[path].get("readOnly"), path
        assert host_paths[mounts[path]["name"]] == path


def test_daemonset_probes_use_the_unix_socket() -> None:
    (container,) = _daemonset()["spec"]["template"]["spec"]["containers"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        command = container[probe]["exec"]["command"]
        assert command[0] == "curl"
        assert "--unix-socket" in command
        assert command[command.index("--unix-socket") + 1] == "/run/tracehound/api.sock"
        assert command[-1].endswith(path)


def test_unit_and_daemonset_agree_on_capabilities() -> None:
    text = UNIT.read_text()
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{key}=")]
        caps = {c.removeprefix("CAP_") for c in line.split("=", 1)[1].split()}
        assert caps == CAPABILITIES, key


def test_prometheus_scrape_config() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tracehound"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_alerts_have_the_rules_on_the_documented_metrics() -> None:
    text = (DEPLOY / "alerts.yml").read_text()
    header = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
    assert _metric_names(header) == METRICS | FLEET_METRICS
    rules = {
        r["alert"]: r["expr"]
        for group in yaml.safe_load(text)["groups"]
        for r in group["rules"]
        if "alert" in r
    }
    assert set(rules) == set(ALERTS)
    for alert, metrics in ALERTS.items():
        assert _metric_names(rules[alert]) == metrics, alert
    assert "increase(tracehound_events_lost_total[5m]) > 0" in rules["TracehoundEventsLost"]
    assert "> 0.8" in rules["TracehoundQueueNearlyFull"]
    assert "== 0" in rules["TracehoundEvidenceVerifyFailing"]
    assert "== 0" in rules["TracehoundProbeMissing"]
    assert "> 1800" in rules["TracehoundCheckpointStale"]
    assert (
        "increase(tracehound_collect_chain_events_total[10m]) > 0"
        in rules["TracehoundFleetChainBreak"]
    )
    assert "tracehound_fleet_lag_seconds > 300" in rules["TracehoundFleetLagging"]
    severities = {
        r["alert"]: r["labels"]["severity"]
        for group in yaml.safe_load(text)["groups"]
        for r in group["rules"]
    }
    assert severities["TracehoundFleetChainBreak"] == severities["TracehoundFleetLagging"] == "page"


def test_promtool_checks_rules_and_config() -> None:
    promtool = _tool("promtool")
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run(
            [promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_dashboard_parses_and_shows_the_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["uid"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    shown = set().union(*(_metric_names(e) for e in exprs))
    assert shown >= METRICS - {"tracehound_build_info"}


def test_containerfile() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^FROM debian:12\b", text, re.M)
    assert "python3-bpfcc" in text and "libbpfcc" in text
    assert "--system-site-packages" in text
    assert re.search(r'^ENTRYPOINT \[.*/tracehound", "run"\]', text, re.M)


def test_unit_file_settings() -> None:
    text = UNIT.read_text()
    settings = dict(
        ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "30"
    # Evidence on by default, in the StateDirectory: no flag that the file
    # could not override.
    assert settings["ExecStart"] == "/opt/tracehound/.venv/bin/tracehound run --stats-interval 60"
    # SIGHUP reloads (agent/commands/run.py), so systemctl reload works.
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["RuntimeDirectoryMode"] == "0755"  # API group members reach the socket
    for key, value in {
        "Restart": "on-failure",
        "RuntimeDirectory": "tracehound",
        "StateDirectory": "tracehound",
        "LogsDirectory": "tracehound",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
    }.items():
        assert settings[key] == value, key


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as shipped, except ExecStart: verify wants the binary to exist,
    and /opt/tracehound is where it is installed, not where tests run. So a
    copy points at this venv's tracehound (or, failing that, this Python)."""
    analyze = _tool("systemd-analyze")
    here = Path(sys.executable).parent / "tracehound"
    binary = here if here.exists() else Path(sys.executable)
    text = UNIT.read_text().replace("/opt/tracehound/.venv/bin/tracehound", str(binary))
    assert str(binary) in text
    unit = tmp_path / "tracehound.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # verify warns (exit 0) about unknown keys and bad values: none allowed.
    assert "Unknown key" not in done.stderr, done.stderr
    assert "Failed to parse" not in done.stderr, done.stderr


# --- the fleet (issue 12) ------------------------------------------------------------

COLLECTOR_UNIT = ROOT / "systemd" / "tracehound-collector.service"
NATS_CONF = DEPLOY / "nats-cluster.conf"


def _docs(name: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d and d["kind"] == kind]


def _config_map_file(name: str, key: str, tmp_path: Path) -> Any:
    """The ConfigMap's file, loaded by the real configuration loader."""
    from agent.config import load_config

    (config_map,) = _docs(name, "ConfigMap")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / key
    path.write_text(config_map["data"][key])
    return load_config(path)


def _mounts(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    (container,) = pod["containers"]
    return {m["mountPath"]: m for m in container["volumeMounts"]}, {
        v["name"]: v for v in pod["volumes"]
    }


def test_collector_deployment(tmp_path: Path) -> None:
    (deployment,) = _docs("collector.yaml", "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][1:3] == ["collect", "--config"]
    mounts, volumes = _mounts(pod)
    config_path = container["command"][3]
    assert volumes[mounts[config_path]["name"]]["configMap"]["name"] == "tracehound-collector"
    config = _config_map_file("collector.yaml", mounts[config_path]["subPath"], tmp_path).collect
    # One config for every replica: one durable, so they share the work.
    assert config.durable and config.stream
    # The DSN holds no secret: libpq reads the service file a Secret mounts.
    assert config.dsn == "service=tracehound" and "password" not in config.dsn
    env = {e["name"]: e["value"] for e in container["env"]}
    service_dir = str(Path(env["PGSERVICEFILE"]).parent)
    assert "secret" in volumes[mounts[service_dir]["name"]]
    token_dir = str(Path(config.token_file).parent)
    assert "secret" in volumes[mounts[token_dir]["name"]]
    assert config.metrics_listen.endswith(":9465")
    assert container["ports"][0]["containerPort"] == 9465
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"]
    assert security["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    (budget,) = _docs("collector.yaml", "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1


def test_daemonset_publishes_to_the_collectors_nats(tmp_path: Path) -> None:
    pod = _daemonset()["spec"]["template"]["spec"]
    mounts, volumes = _mounts(pod)
    mount = mounts["/etc/tracehound/tracehound.toml"]  # where `run` looks by default
    assert volumes[mount["name"]]["configMap"]["name"] == "tracehound-agent"
    fleet = _config_map_file("daemonset.yaml", mount["subPath"], tmp_path).fleet
    collect = _config_map_file("collector.yaml", "collector.toml", tmp_path / "c").collect
    assert fleet.enabled is True
    assert fleet.nats_url == collect.nats_url and len(fleet.nats_url.split(",")) == 3
    assert fleet.subject_prefix == collect.subject_prefix
    assert fleet.host == ""  # each node's own host name
    token_dir = str(Path(fleet.token_file).parent)
    assert volumes[mounts[token_dir]["name"]]["secret"]["secretName"] == "tracehound-nats"


def _nats_env(tmp_path: Path, name: str) -> dict[str, str]:
    return {**os.environ, "NATS_SERVER_NAME": name, "NATS_STORE_DIR": str(tmp_path / name),
            "NATS_TOKEN": "test-token"}  # fmt: skip


def test_nats_cluster_config_is_valid(tmp_path: Path) -> None:
    nats_server = _tool("nats-server")
    done = subprocess.run([nats_server, "-c", str(NATS_CONF), "-t"], env=_nats_env(tmp_path, "nats-0"),
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Without its environment a node refuses to start: no silent defaults.
    done = subprocess.run([nats_server, "-c", str(NATS_CONF), "-t"], capture_output=True,
                          text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})  # fmt: skip
    assert done.returncode != 0 and "NATS_SERVER_NAME" in done.stderr


def test_nats_cluster_config_makes_a_jetstream_cluster(tmp_path: Path) -> None:
    """Three nodes from the shipped file (ports and routes moved to loopback):
    a stream with three replicas takes a record, and still does with one
    node killed."""
    import asyncio

    nats = pytest.importorskip("nats")
    from tests.fleet.servers import free_port

    nats_server = _tool("nats-server")
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ",".join(f"nats-route://127.0.0.1:{cluster}" for _, cluster, _ in ports)
    procs = []
    try:
        for n, (client, cluster, http) in enumerate(ports):
            log = (tmp_path / f"nats-{n}.log").open("wb")
            procs.append(subprocess.Popen(
                [nats_server, "-c", str(NATS_CONF), "-a", "127.0.0.1", "-p", str(client),
                 "-m", str(http), "--cluster", f"nats://127.0.0.1:{cluster}", "--routes", routes],
                env=_nats_env(tmp_path, f"nats-{n}"), stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        urls = [f"nats://127.0.0.1:{client}" for client, _, _ in ports]

        async def publish_and_lose_one() -> tuple[int, int]:
            conn = await nats.connect(servers=urls, token="test-token", connect_timeout=5,
                                      max_reconnect_attempts=-1)  # fmt: skip
            js = conn.jetstream(timeout=10)
            deadline = asyncio.get_running_loop().time() + 60
            while True:  # the cluster elects its JetStream meta leader first
                try:
                    await js.add_stream(
                        name="T", subjects=["tracehound.evidence.>"], num_replicas=3
                    )
                    break
                except Exception:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            first = await js.publish("tracehound.evidence.h.x", b"1", headers={"Nats-Msg-Id": "a"})
            procs[0].kill()
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                try:
                    second = await js.publish("tracehound.evidence.h.x", b"2",
                                              headers={"Nats-Msg-Id": "b"})  # fmt: skip
                    break
                except Exception:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            info = await js.stream_info("T")
            await conn.close()
            assert info.config.num_replicas == 3
            return first.seq, second.seq

        assert asyncio.run(publish_and_lose_one()) == (1, 2)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def test_collector_unit_settings() -> None:
    text = COLLECTOR_UNIT.read_text()
    settings = dict(
        ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#")
    )
    assert settings["ExecStart"] == (
        "/opt/tracehound/.venv/bin/tracehound collect --config /etc/tracehound/collector.toml"
    )
    assert settings["CapabilityBoundingSet"] == "" and settings["DynamicUser"] == "yes"
    assert settings["Restart"] == "always" and settings["NoNewPrivileges"] == "yes"


def test_systemd_analyze_verify_collector(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    here = Path(sys.executable).parent / "tracehound"
    binary = here if here.exists() else Path(sys.executable)
    text = COLLECTOR_UNIT.read_text().replace("/opt/tracehound/.venv/bin/tracehound", str(binary))
    assert str(binary) in text
    unit = tmp_path / "tracehound-collector.service"
    unit.write_text(text)
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unknown key" not in done.stderr, done.stderr
    assert "Failed to parse" not in done.stderr, done.stderr
