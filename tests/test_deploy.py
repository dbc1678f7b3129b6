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

ALERTS = {
    "TracehoundEventsLost": {"tracehound_events_lost_total"},
    "TracehoundQueueNearlyFull": {"tracehound_queue_depth", "tracehound_queue_capacity"},
    "TracehoundEvidenceVerifyFailing": {"tracehound_evidence_verify_ok"},
    "TracehoundProbeMissing": {"tracehound_probe_attached"},
    "TracehoundCheckpointStale": {"tracehound_evidence_checkpoint_age_seconds"},
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
    for name in ("daemonset.yaml", "prometheus.yml", "alerts.yml"):
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


def test_alerts_have_the_five_rules_on_the_documented_metrics() -> None:
    text = (DEPLOY / "alerts.yml").read_text()
    header = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
    assert _metric_names(header) == METRICS
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
