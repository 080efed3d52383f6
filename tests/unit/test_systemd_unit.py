"""The unit file agrees with lambdad's defaults, exit codes and lambdactl's socket path."""

from __future__ import annotations

from pathlib import Path

from lambdactl.target import SYSTEMD_SOCKET
from lambdad.config.settings import BY_KEY, SETTINGS
from lambdad.fds import connection_cap
from lambdad.main import EX_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def unit_settings() -> dict[str, list[str]]:
    """Key -> values in order; systemd allows repeated keys, so configparser will not do."""
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / "lambdad.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def one(key: str) -> str:
    values = unit_settings()[key]
    assert len(values) == 1, values
    return values[0]


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_notify_watchdog_and_restart_policy() -> None:
    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert seconds(one("WatchdogSec")) >= 10
    assert one("Restart") == "on-failure"
    assert one("RestartPreventExitStatus") == str(EX_CONFIG)


def test_stop_timeout_outlasts_the_drain_grace() -> None:
    drain = float(BY_KEY["drain_grace"].default or 0)
    assert seconds(one("TimeoutStopSec")) >= drain + 10  # room to stop instances after draining
    assert one("KillMode") == "mixed"


def test_directories_match_the_defaults_lambdad_and_lambdactl_use() -> None:
    assert one("RuntimeDirectory") == SYSTEMD_SOCKET.parent.name == "lambdad"
    assert SYSTEMD_SOCKET.name == "lambdad.sock"
    assert one("RuntimeDirectoryMode") == "0750" and one("StateDirectoryMode") == "0750"
    assert one("StateDirectory") == "lambdad" and one("ConfigurationDirectory") == "lambdad"
    # The credential's name is the file lambdad looks for in $CREDENTIALS_DIRECTORY.
    name, _, source = one("LoadCredential").partition(":")
    assert name == "api-key" and source == "/etc/lambdad/api-key"
    assert "CREDENTIALS_DIRECTORY/api-key" in BY_KEY["api_key_file"].help


def test_unit_runs_as_a_docker_group_user_with_one_capability() -> None:
    assert one("User") == "lambdad" and one("SupplementaryGroups") == "docker"
    assert one("CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one("NoNewPrivileges") == "yes" and one("ProtectSystem") == "strict"
    # Docker's socket and the gateway need exactly these families.
    assert set(one("RestrictAddressFamilies").split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"
    }


def test_unit_passes_no_settings_of_its_own() -> None:
    """Settings belong in lambdad.toml or a drop-in; flags in ExecStart would beat both."""
    assert one("ExecStart") == "/usr/local/bin/lambdad"
    env_lines = unit_settings().get("Environment", [])
    assert all(not v.startswith("LAMBDAD_") for v in env_lines)
    assert {s.key for s in SETTINGS} >= {"state_dir", "socket", "api_key_file"}


def test_open_files_leave_room_for_the_default_connection_cap() -> None:
    """Without LimitNOFILE, systemd's soft limit of 1024 was taken by ~990 idle gateway
    connections and the control API, instances and Docker got EMFILE."""
    soft, _, hard = one("LimitNOFILE").partition(":")
    assert int(hard or soft) >= int(soft)
    default = int(BY_KEY["max_connections"].default or 0)
    assert connection_cap(int(soft), default) == default
