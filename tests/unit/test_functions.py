"""Names, manifests and requirements: the rules, case by case."""

from __future__ import annotations

import pytest

from lambdad.build.dockerfile import generated_dockerfile
from lambdad.errors import InvalidArgument
from lambdad.functions import FunctionConfig, Overrides, parse_manifest, validate_name
from lambdad.functions.manifest import apply_overrides


@pytest.mark.parametrize("name", ["a", "greet", "my-func-2", "0abc", "a" * 63])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "Greet", "a_b", "a.b", "a" * 64, "é", "a b", "../x", "a\x00"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_name(name)


def test_no_manifest_gives_defaults() -> None:
    manifest = parse_manifest(None, has_dockerfile=False)
    assert manifest.name is None
    assert manifest.config == FunctionConfig()


def test_dockerfile_switches_the_default_runtime() -> None:
    assert parse_manifest(None, has_dockerfile=True).config.runtime == "docker"


def test_full_manifest() -> None:
    text = """
name = "greet"
handler = "app.main"
timeout = 10
memory = 256
network = "bridge"
[env]
A = "x"
N = 3
B = true
"""
    manifest = parse_manifest(text, has_dockerfile=False)
    assert manifest.name == "greet"
    assert manifest.config == FunctionConfig(
        runtime="python3.11", handler="app.main", timeout_s=10, memory_mb=256,
        env={"A": "x", "N": "3", "B": "true"}, network="bridge",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = ", "lambda.toml"),
        ("nmae = 'x'", "unknown key"),
        ("name = 'Bad_Name'", "invalid function name"),
        ("timeout = 'ten'", "timeout must be an int"),
        ("timeout = true", "timeout must be an int"),
        ("timeout = 0", "timeout must be 1-900"),
        ("timeout = 901", "timeout must be 1-900"),
        ("memory = 1", "memory must be"),
        ("handler = 'nodot'", "module.function"),
        ("handler = 'a.b-c'", "module.function"),
        ("runtime = 'node18'", "not one of"),
        ("runtime = 'docker'", "needs a Dockerfile"),
        ("network = 'host'", "not one of"),
        ("env = 3", "env must be a table"),
        ("[env]\n'1BAD' = 'x'", "not valid"),
        ("[env]\nAWS_REGION = 'x'", "reserved"),
        ("[env]\nA = [1]", "string or number"),
        ("[env]\nA = '" + "x" * 5000 + "'", "over 4096"),
    ],
)
def test_manifest_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_manifest(text, has_dockerfile=False)


def test_overrides_lay_over_the_manifest() -> None:
    base = FunctionConfig(env={"A": "1", "B": "2"})
    merged = apply_overrides(base, Overrides(timeout_s=5, memory_mb=512, env={"B": "3"}))
    assert merged.timeout_s == 5 and merged.memory_mb == 512
    assert merged.env == {"A": "1", "B": "3"}
    assert merged.handler == base.handler
    with pytest.raises(InvalidArgument):
        apply_overrides(base, Overrides(timeout_s=10_000))


def test_config_round_trips_through_dict() -> None:
    config = FunctionConfig(handler="a.b", env={"X": "y"}, network="bridge")
    assert FunctionConfig.from_dict(config.to_dict()) == config


def test_a_config_stored_by_an_older_release_reads_with_defaults() -> None:
    stored = {"runtime": "python3.11", "handler": "app.main", "timeout_s": 5, "memory_mb": 64,
              "scaling": {"max_instances": 3}}
    config = FunctionConfig.from_dict(stored)
    assert (config.handler, config.timeout_s, config.memory_mb) == ("app.main", 5, 64)
    assert config.scaling.max_instances == 3
    assert config.scaling.queue_timeout_s is None
    assert config.network == "none" and config.auth == "none" and config.env == {}
    assert config.cpu == FunctionConfig().cpu and config.async_retries == 2


def test_a_stored_config_without_its_core_keys_is_refused() -> None:
    with pytest.raises(KeyError):
        FunctionConfig.from_dict({"runtime": "python3.11", "handler": "app.main"})


def test_generated_dockerfile() -> None:
    text = generated_dockerfile("lambda-runtime/python:3.11", with_deps=True)
    assert text.splitlines()[1] == "FROM lambda-runtime/python:3.11"
    assert "COPY --chown=0:0 code/ /var/task/" in text
    assert "deps/ /opt/lambda/deps/" in text
    # Deps first: their layer is reused when the build cache gave the same files.
    assert text.index("deps/ /opt/lambda/deps/") < text.index("code/ /var/task/")
    assert "deps/" not in generated_dockerfile("img", with_deps=False)


def test_label_instruction_is_one_quoted_line() -> None:
    from lambdad.build.dockerfile import label_instruction

    line = label_instruction({"lambda.function": "greet", "lambda.version": "3"})
    assert line == 'LABEL lambda.function="greet" lambda.version="3"'
