"""deploy/: the systemd unit parses and carries what operations rely on (systemd-analyze verify
when the tool is there), and the sysctl and limits files are well-formed and consistent."""
from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "switchboard@.service"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's format: [Section], Key=Value, '#'/';' comments; keys may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}:{number}: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    assert key in section, f"{key}= missing"
    return section[key][-1]


def seconds(value: str) -> float:
    return float(value[:-1]) * {"s": 1, "m": 60}[value[-1]] if value[-1] in "sm" else float(value)


def test_unit_has_notify_watchdog_restart_limits_and_drain():
    unit = parse_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    service, head = unit["Service"], unit["Unit"]
    assert one(service, "Type") == "notify"
    assert seconds(one(service, "WatchdogSec")) > 0
    assert one(service, "Restart") == "on-failure"
    assert one(service, "RestartPreventExitStatus") == "2"  # config errors: no retries
    assert int(one(head, "StartLimitBurst")) > 0 and seconds(one(head, "StartLimitIntervalSec")) > 0
    assert one(service, "LimitNOFILE") == "1048576"
    assert one(service, "KillSignal") == "SIGTERM"
    assert "HUP" in one(service, "ExecReload")
    config = tomllib.loads((DEPLOY / "switchboard.toml").read_text())
    assert seconds(one(service, "TimeoutStopSec")) > config["server"]["stop_timeout"]
    assert "serve --config /etc/switchboard/switchboard.toml" in one(service, "ExecStart")
    assert "SWITCHBOARD_SERVER_NODE_ID=%i" in service["Environment"]
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_unit_hardening():
    service = parse_unit(UNIT)["Service"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):
        assert one(service, key) == "true", key
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "CapabilityBoundingSet") == ""
    data_dir = tomllib.loads((DEPLOY / "switchboard.toml").read_text())["server"]["data_dir"]
    assert data_dir in one(service, "ReadWritePaths").split()
    families = set(one(service, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}  # AF_UNIX: sd_notify, admin socket


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path):
    # verify wants an instance name and an executable ExecStart; everything else is as shipped
    text = UNIT.read_text().replace("/opt/switchboard/bin/switchboard", shutil.which("true"))
    instance = tmp_path / "switchboard@0.service"
    instance.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True,
                          text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if "switchboard@" in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def sysctl_settings() -> list[tuple[str, str, bool]]:
    """(key, value, optional) per setting; each must follow its own comment."""
    settings = []
    commented = False
    for raw in (DEPLOY / "sysctl.d" / "60-switchboard.conf").read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            commented = True
            continue
        assert commented, f"no comment explains {line!r}"
        commented = False
        key, _, value = line.partition("=")
        optional = key.startswith("-")
        settings.append((key.strip().lstrip("-"), value.strip(), optional))
    return settings


def test_sysctl_values_are_commented_known_and_consistent():
    settings = {key: value for key, value, _ in sysctl_settings()}
    for key in ("fs.nr_open", "fs.file-max", "net.core.somaxconn", "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_mem", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
                "net.ipv4.tcp_max_syn_backlog", "net.core.netdev_max_backlog"):
        assert key in settings, key
        assert all(part.isdigit() for part in settings[key].split()), key
    if Path("/proc/sys/net/ipv4").exists():  # a typo would make `sysctl --system` fail
        for key, _, optional in sysctl_settings():
            assert optional or (Path("/proc/sys") / key.replace(".", "/")).exists(), key
    limit = int(one(parse_unit(UNIT)["Service"], "LimitNOFILE"))
    assert int(settings["fs.nr_open"]) >= limit
    assert int(settings["fs.file-max"]) >= limit
    low, pressure, high = map(int, settings["net.ipv4.tcp_mem"].split())
    assert low < pressure < high
    for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
        minimum, default, maximum = map(int, settings[key].split())
        assert minimum <= default <= maximum


def test_limits_match_the_unit():
    rows = [line.split() for line in (DEPLOY / "limits.d" / "switchboard.conf").read_text()
            .splitlines() if line.strip() and not line.startswith("#")]
    assert sorted(rows) == [["switchboard", "hard", "nofile", "1048576"],
                            ["switchboard", "soft", "nofile", "1048576"]]


def test_install_line_has_what_the_cython_build_needs():
    readme = (DEPLOY / "README.md").read_text()
    [install] = [line.split("#")[0].split() for line in readme.splitlines()
                 if line.strip().startswith("apt-get install")]
    assert {"python3-dev", "python3-venv", "build-essential"} <= set(install)
