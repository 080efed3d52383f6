"""lambdad's configuration: flags > environment > file > defaults, and its checks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from lambdad.config import MIB, ConfigError, Listen
from lambdad.config.check import check
from lambdad.config.parser import build_parser
from lambdad.config.render import effective_toml, example_toml
from lambdad.config.resolve import SYSTEM_CONFIG, Resolved, parse_file, resolve
from lambdad.config.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
BASE_ENV = {"HOME": "/home/op"}


def files(**contents: str):  # type: ignore[no-untyped-def]
    """A read_file over an in-memory folder: {path: text}; missing paths are None."""

    def read(path: Path) -> str | None:
        return contents.get(str(path))

    return read


def run(argv: list[str], env: dict[str, str] | None = None,
        read=None) -> Resolved:  # type: ignore[no-untyped-def]
    resolved, _ = resolve(argv, {**BASE_ENV, **(env or {})}, read or files())
    return resolved


def problems_of(argv: list[str], env: dict[str, str] | None = None,
                read=None) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        run(argv, env, read)
    return caught.value.problems


def test_defaults_without_file_or_environment() -> None:
    resolved = run([])
    config = resolved.config
    assert config.state_dir == Path("/home/op/.local/state/lambdad")
    assert config.socket == Path("/home/op/.local/state/lambdad/run/lambdad.sock")
    assert config.pid_file == Path("/home/op/.local/state/lambdad/run/lambdad.pid")
    assert config.gateway_listen == Listen("127.0.0.1", 8080)
    assert config.grpc_listen == Listen("127.0.0.1", 50051)
    assert config.public_port == 8080
    assert config.max_body_bytes == 6 * MIB
    assert config.drain_grace == 10.0
    assert config.config_file is None
    assert set(resolved.sources.values()) == {"default"}


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected", "source"),
    [
        (None, None, None, "127.0.0.1:8080", "default"),
        (None, None, "0.0.0.0:3", "0.0.0.0:3", "file /etc/lambdad/lambdad.toml"),
        (None, "0.0.0.0:2", "0.0.0.0:3", "0.0.0.0:2", "env LAMBDAD_GATEWAY_LISTEN"),
        ("0.0.0.0:1", "0.0.0.0:2", "0.0.0.0:3", "0.0.0.0:1", "flag"),
        ("0.0.0.0:1", None, "0.0.0.0:3", "0.0.0.0:1", "flag"),
        ("0.0.0.0:1", "0.0.0.0:2", None, "0.0.0.0:1", "flag"),
    ],
)
def test_precedence_is_flag_env_file_default(
    flag: str | None, env: str | None, file: str | None, expected: str, source: str
) -> None:
    argv = ["--gateway-listen", flag] if flag else []
    environ = {"LAMBDAD_GATEWAY_LISTEN": env} if env else {}
    read = files(**({str(SYSTEM_CONFIG): f'gateway_listen = "{file}"\n'} if file else {}))
    resolved = run(argv, environ, read)
    assert str(resolved.config.gateway_listen) == expected
    assert resolved.sources["gateway_listen"] == source


def test_every_setting_has_a_flag_an_env_variable_and_a_key() -> None:
    parser = build_parser()
    flags = {a for action in parser._actions for a in action.option_strings}
    for setting in SETTINGS:
        assert setting.flag in flags
        assert setting.env == "LAMBDAD_" + setting.key.upper()
        assert (setting.help and "(default" in setting.help) or setting.default is None


def test_every_setting_is_read_from_each_source() -> None:
    """A non-default value for every setting, through the file and through the environment."""
    values = {
        "state_dir": "/srv/l", "socket": "/srv/l.sock", "grpc_listen": "none",
        "database": "postgresql://l@db.example/lambda",
        "api_key_file": "/k", "tcp_reflection": "open", "tls_cert": "/c", "tls_key": "/k2",
        "gateway_listen": "0.0.0.0:80", "admin_listen": "none", "domain": "fn.example.com",
        "public_port": "443", "max_connections": "7", "max_body_size": "2",
        "runtime_image": "r/py:3", "image_prefix": "p", "wheelhouse": "/w",
        "keep_versions": "3", "max_code_size": "5", "max_unpacked_size": "9",
        "start_timeout": "4", "drain_grace": "6", "function_log_size": "1",
        "function_log_files": "2", "async_backoff": "0.5", "schedule_catch_up": "0",
        "log_level": "debug", "cell_pool_size": "0", "pause_after": "1.5",
        "freeze_window": "30", "frozen_memory_mb": "64",
        "body_timeout": "12", "max_queued_events": "5", "max_event_size": "0.5",
        "build_timeout": "30", "build_memory": "512", "build_user": "1234",
        "build_max_image_size": "300", "build_min_free_disk": "0",
        "max_buffered_bodies": "64", "build_cache_size": "10", "pid_file": "/srv/l.pid",
        "node_name": "n-1", "advertise_address": "10.0.0.5:50051", "node_down_after": "3",
        "cluster_key_file": "/ck",
    }
    assert set(values) == {s.key for s in SETTINGS}
    text = "".join(f'{k} = "{v}"\n' for k, v in values.items())
    from_file = run(["--config", "/cfg.toml"], read=files(**{"/cfg.toml": text})).config
    env = {f"LAMBDAD_{k.upper()}": v for k, v in values.items()}
    from_env = run([], env).config
    argv = [a for k, v in values.items() for a in (f"--{k.replace('_', '-')}", v)]
    from_flags = run(argv).config
    assert from_file.config_file == Path("/cfg.toml")
    for config in (from_env, from_flags):
        assert config.config_file is None
    assert from_env == from_flags
    assert from_file.__dict__ | {"config_file": None} == from_flags.__dict__
    assert from_flags.grpc_listen is None and from_flags.admin_listen is None
    assert from_flags.domain == "fn.example.com" and from_flags.public_port == 443
    assert from_flags.max_body_bytes == 2 * MIB and from_flags.async_backoff == 0.5
    assert from_flags.socket == Path("/srv/l.sock") and from_flags.log_level == "debug"
    assert from_flags.cell_pool_size == 0 and from_flags.pause_after == 1.5
    assert from_flags.freeze_window == 30 and from_flags.frozen_memory_bytes == 64 * MIB
    assert from_flags.body_timeout == 12 and from_flags.max_queued_events == 5
    assert from_flags.max_event_bytes == MIB // 2
    assert from_flags.build_timeout == 30 and from_flags.build_memory_bytes == 512 * MIB
    assert from_flags.build_user == 1234 and from_flags.max_buffered_body_bytes == 64 * MIB
    assert from_flags.build_max_image_bytes == 300 * MIB
    assert from_flags.build_min_free_disk_bytes == 0
    assert from_flags.build_cache_bytes == 10 * MIB
    assert from_flags.pid_file == Path("/srv/l.pid")
    assert from_flags.node_name == "n-1" and from_flags.advertise_address == "10.0.0.5:50051"
    assert from_flags.node_down_after == 3 and from_flags.cluster_key_file == Path("/ck")


@pytest.mark.parametrize(("key", "value"), [
    ("node_name", "a b"), ("node_name", "x" * 64), ("node_name", "-lead"),
    ("advertise_address", "0.0.0.0:50051"), ("advertise_address", "host"),
    ("node_down_after", "0"),
])
def test_cluster_settings_refuse_bad_values(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        run([], {f"LAMBDAD_{key.upper()}": value})


def test_node_name_defaults_to_the_host_name() -> None:
    import socket

    assert run([]).config.node_name.startswith(socket.gethostname().split(".")[0][:10])


def test_file_accepts_toml_numbers_and_false_for_listeners() -> None:
    read = files(**{str(SYSTEM_CONFIG): "max_body_size = 0.5\nkeep_versions = 3\n"
                    "drain_grace = 2.5\nadmin_listen = false\npublic_port = 443\n"})
    config = run([], read=read).config
    assert config.max_body_bytes == MIB // 2
    assert config.keep_versions == 3 and config.drain_grace == 2.5
    assert config.admin_listen is None and config.public_port == 443


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gateway_listen = 8080\n", "gateway_listen: expected a string, got a number"),
        ("domain = true\n", "domain: expected a string, got a boolean"),
        ("gatway_listen = '1.2.3.4:5'\n", "unknown setting 'gatway_listen' (did you mean "
                                          "'gateway_listen'?)"),
        ("[domain]\nx = 1\n", "domain: expected a string or number, got dict"),
        ("domain = \n", "not valid TOML"),
        ("keep_versions = 0\n", "keep_versions: expected a whole number >= 1, got '0'"),
        ("build_timeout = 0\n", "build_timeout: expected a number of seconds > 0"),
        ("build_user = -1\n", "build_user: expected a whole number >= 0"),
        ("max_body_size = -1\n", "max_body_size: expected a positive size in MiB"),
        ("domain = 'bad_name!'\n", "domain: expected a DNS name"),
        ("log_level = 'loud'\n", "log_level: expected one of debug, info, warning, error"),
        ("gateway_listen = 'localhost'\n", "gateway_listen: expected HOST:PORT"),
        ("runtime_image = 'Not An Image'\n", "runtime_image: expected a Docker image name"),
        ("start_timeout = 'soon'\n", "start_timeout: expected a number of seconds"),
        ("body_timeout = 0\n", "body_timeout: expected a number of seconds > 0, got '0'"),
        ("max_queued_events = 0\n", "max_queued_events: expected a whole number >= 1"),
    ],
)
def test_bad_file_names_the_file_and_the_setting(text: str, message: str) -> None:
    problems = problems_of(["--config", "/etc/x.toml"], read=files(**{"/etc/x.toml": text}))
    assert len(problems) == 1
    assert problems[0].startswith("/etc/x.toml: ")
    assert message in problems[0]


def test_all_bad_settings_are_reported_at_once() -> None:
    problems = problems_of([], {"LAMBDAD_DRAIN_GRACE": "x", "LAMBDAD_DOMAIN": "-"})
    assert problems == [
        "LAMBDAD_DOMAIN: expected a DNS name such as example.com, got '-'",
        "LAMBDAD_DRAIN_GRACE: expected a number of seconds, got 'x'",
    ]


def test_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--max-body-size", "lots"])
    assert exited.value.code == 2
    assert "--max-body-size: expected a size in MiB, got 'lots'" in capsys.readouterr().err


def test_config_file_lookup() -> None:
    # A named file must exist; the default one may be missing.
    assert problems_of(["--config", "/nope.toml"]) == ["config file /nope.toml does not exist"]
    assert problems_of([], {"LAMBDAD_CONFIG": "/nope.toml"}) == [
        "config file /nope.toml does not exist"
    ]
    assert run([]).config.config_file is None
    # 'none' reads nothing, even when the system file exists.
    system = files(**{str(SYSTEM_CONFIG): "domain = 'sys.test'\n"})
    assert run([], read=system).config.domain == "sys.test"
    assert run(["--config", "none"], read=system).config.domain == "localhost"
    assert run([], {"LAMBDAD_CONFIG": "none"}, read=system).config.domain == "localhost"
    # The flag names the file over the variable; systemd's ConfigurationDirectory is used.
    read = files(**{"/a.toml": "domain = 'a.test'\n", "/b.toml": "domain = 'b.test'\n",
                    "/etc/cd/lambdad.toml": "domain = 'cd.test'\n"})
    assert run(["--config", "/a.toml"], {"LAMBDAD_CONFIG": "/b.toml"}, read).config.domain \
        == "a.test"
    assert run([], {"CONFIGURATION_DIRECTORY": "/etc/cd"}, read).config.domain == "cd.test"


def test_unreadable_file_is_a_config_error() -> None:
    def denied(path: Path) -> str | None:
        raise PermissionError(13, "Permission denied")

    def binary(path: Path) -> str | None:
        return b"\xff\xfe".decode("utf-8")

    assert problems_of(["--config", "/x.toml"], read=denied) == [
        "cannot read config file /x.toml: Permission denied"
    ]
    assert problems_of(["--config", "/x.toml"], read=binary) == [
        "config file /x.toml is not UTF-8 text"
    ]


def test_abbreviated_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--state", "/x"])
    assert exited.value.code == 2 and "unrecognized arguments: --state" in capsys.readouterr().err


def test_check_reports_a_folder_given_as_key_file(tmp_path: Path) -> None:
    config = run(["--state-dir", str(tmp_path / "s"), "--api-key-file", str(tmp_path)]).config
    assert any(p.startswith(f"api_key_file: cannot read {tmp_path}") for p in check(config))


def test_systemd_directories_set_the_derived_defaults(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "api-key").write_text("k\n")
    env = {"STATE_DIRECTORY": "/var/lib/lambdad", "RUNTIME_DIRECTORY": "/run/lambdad",
           "CREDENTIALS_DIRECTORY": str(credentials), "LAMBDA_STATE_DIR": "/ignored"}
    config = run([], env).config
    assert config.state_dir == Path("/var/lib/lambdad")
    assert config.socket == Path("/run/lambdad/lambdad.sock")
    assert config.pid_file == Path("/run/lambdad/lambdad.pid")
    assert config.api_key_file == credentials / "api-key"
    # Without the credential file there is no key file; explicit settings win over systemd's.
    (credentials / "api-key").unlink()
    assert run([], env).config.api_key_file is None
    config = run(["--state-dir", "/srv/s"], {**env, "LAMBDAD_SOCKET": "/tmp/s.sock"}).config
    assert config.state_dir == Path("/srv/s") and config.socket == Path("/tmp/s.sock")


def test_pid_file_is_derived_named_or_none() -> None:
    assert run(["--state-dir", "/srv/s"]).config.pid_file == Path("/srv/s/run/lambdad.pid")
    assert run(["--pid-file", "none"]).config.pid_file is None
    assert run([], {"LAMBDAD_PID_FILE": "off"}).config.pid_file is None
    named = run([], read=files(**{str(SYSTEM_CONFIG): "pid_file = 'l.pid'\n"})).config
    assert named.pid_file == Path("l.pid").absolute()
    assert "pid_file = \"none\"  # flag" in effective_toml(run(["--pid-file", "none"]))
    derived = effective_toml(run(["--state-dir", "/srv/s"]))
    assert 'pid_file = "/srv/s/run/lambdad.pid"  # default' in derived


def test_check_reports_a_pid_file_in_a_folder_it_cannot_make(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    config = run(["--state-dir", str(tmp_path / "s"), "--pid-file",
                  str(not_a_folder / "lambdad.pid")]).config
    assert [p for p in check(config) if p.startswith("pid_file: ")], check(config)


def test_lambda_state_dir_is_shared_with_lambdactl() -> None:
    config = run([], {"LAMBDA_STATE_DIR": "/srv/dev"}).config
    assert config.socket == Path("/srv/dev/run/lambdad.sock")


def test_effective_toml_reproduces_the_configuration() -> None:
    read = files(**{"/c.toml": "domain = 'file.test'\nmax_body_size = 2\n"})
    resolved = run(["--config", "/c.toml", "--drain-grace", "4", "--grpc-listen", "none"],
                   {"LAMBDAD_KEEP_VERSIONS": "3"}, read)
    text = effective_toml(resolved)
    assert 'domain = "file.test"  # file /c.toml' in text
    assert "drain_grace = 4  # flag" in text
    assert "keep_versions = \"3\"  # env LAMBDAD_KEEP_VERSIONS" in text
    assert "# api_key_file is not set (default)" in text
    again = run(["--config", "/again.toml"], read=files(**{"/again.toml": text})).config
    assert again.__dict__ | {"config_file": None} == resolved.config.__dict__ | {
        "config_file": None
    }


def test_example_file_lists_every_setting_at_its_default() -> None:
    text = example_toml()
    assert tomllib.loads(text) == {}  # all commented out
    for setting in SETTINGS:
        assert f"#{setting.key} = " in text
    uncommented = "\n".join(
        line[1:] for line in text.splitlines()
        if re.match(r"^#[a-z_]+ = ", line) and not line.endswith("...")
    )
    values = parse_file(uncommented, "example")
    assert len(values) == sum(1 for s in SETTINGS if s.default is not None)
    defaults = run([]).config
    assert run(["--config", "/ex.toml"], read=files(**{"/ex.toml": uncommented})).config \
        .__dict__ | {"config_file": None} == defaults.__dict__


def test_committed_example_file_is_fresh() -> None:
    committed = (ROOT / "packaging" / "lambdad.toml").read_text()
    assert committed == example_toml(), "run `make config-example`"


def test_help_and_man_page_document_every_setting_and_the_precedence() -> None:
    help_text = build_parser().format_help()
    man = (ROOT / "man" / "lambdad.8").read_text()
    for setting in SETTINGS:
        assert setting.flag in help_text
        assert setting.flag.replace("-", r"\-") in man
    for needle in ("flags > environment > config file > defaults", "LAMBDAD_GATEWAY_LISTEN",
                   "--check-config", "78"):
        assert needle in help_text
    assert "--check-config".replace("-", r"\-") in man


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.key}`" in readme, setting.key


# check(): what --check-config adds to parsing


def test_check_accepts_the_defaults(tmp_path: Path) -> None:
    assert check(run(["--state-dir", str(tmp_path / "s")]).config) == []


def test_check_reports_files_pairs_ports_and_paths(tmp_path: Path) -> None:
    empty_key = tmp_path / "key"
    empty_key.write_text("# no key here\n\n")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    config = run([
        "--state-dir", str(not_a_folder / "state"),
        "--api-key-file", str(empty_key),
        "--tls-cert", str(tmp_path / "missing.pem"),
        "--wheelhouse", str(tmp_path / "nowheels"),
        "--gateway-listen", "0.0.0.0:9000", "--admin-listen", "127.0.0.1:9000",
    ]).config
    problems = check(config)
    assert f"api_key_file: {empty_key} holds no key" in problems
    assert f"tls_cert: cannot read {tmp_path / 'missing.pem'}" in problems
    assert "tls_cert and tls_key go together: set both or neither" in problems
    assert f"wheelhouse: {tmp_path / 'nowheels'} is not a folder" in problems
    assert f"state_dir: {not_a_folder} is not a folder" in problems
    assert "admin_listen and gateway_listen both use port 9000" in problems


def test_check_allows_the_same_port_on_different_hosts(tmp_path: Path) -> None:
    config = run(["--state-dir", str(tmp_path), "--gateway-listen", "127.0.0.1:9000",
                  "--admin-listen", "127.0.0.2:9000"]).config
    assert check(config) == []


def test_check_rejects_a_state_dir_too_deep_for_sockets(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    problems = check(run(["--state-dir", str(deep)]).config)
    assert any(p.startswith("state_dir: ") and "too deep" in p for p in problems)
