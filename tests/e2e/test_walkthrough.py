"""The README walkthrough, through the real CLI, gateway and Docker engine."""

from __future__ import annotations

import json
import re

from tests.support.daemon import Lambdad


def test_deploy_invoke_list_delete(lambdad: Lambdad) -> None:
    port = lambdad.gateway_port
    deployed = lambdad.deploy("greet", "--name", "greet")
    lines = deployed.stderr.splitlines()
    assert lines[0] == "[1/3] Packaging function code... Done."
    # A standard runtime's version is its code and wheels on the shared runtime image.
    assert lines[1] == "[2/3] Building greet v1 (code and wheels, no image)... Done."
    assert "[3/3] Starting instance (container)... Done." in lines  # no routed function: no cell
    assert lines[-1] == f"Your function is live at: http://greet.localhost:{port}"

    response = lambdad.http("greet", "/?name=World")
    assert response.status == 200
    assert response.json() == {"message": "Hello, World!"}
    assert response.headers["lambda-version"] == "1"
    assert re.fullmatch(r"[0-9a-f-]{36}", response.headers["lambda-request-id"])

    invoked = lambdad.cli("invoke", "greet", "--data", '{"name": "World"}')
    assert invoked.code == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"message": "Hello, World!"}

    listed = lambdad.cli("list")
    assert listed.code == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header[:4] == ["NAME", "VERSION", "STATUS", "URL"]
    row = listed.stdout.splitlines()[1].split()
    assert row[:4] == ["greet", "1", "ready", f"http://greet.localhost:{port}"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", row[4])

    as_json = lambdad.cli("list", "-o", "json").json()
    assert [f["name"] for f in as_json] == ["greet"]
    assert as_json[0]["image"] == "" and as_json[0]["status"] == "ready"

    assert len(lambdad.containers("greet")) == 1
    assert lambdad.images("greet") == []
    assert (lambdad.state_dir / "artifacts" / "greet" / "v1" / "task" / "handler.py").is_file()
    deleted = lambdad.cli("delete", "greet")
    assert deleted.code == 0, deleted.stderr
    assert "Deleted function \"greet\" (1 version, 1 instance)." in deleted.stdout + deleted.stderr
    assert lambdad.containers("greet") == []
    assert lambdad.images("greet") == []
    assert not (lambdad.state_dir / "artifacts" / "greet").exists()
    assert lambdad.cli("list", "-o", "json").json() == []
    gone = lambdad.http("greet", "/?name=World")
    assert gone.status == 404
    assert gone.json() == {"error": "not_found", "message": "no function named 'greet'"}
    assert lambdad.cli("invoke", "greet").code == 4


def test_example_functions(lambdad: Lambdad) -> None:
    lambdad.deploy("calculator")
    http = lambdad.http("calculator", "/?op=add&a=2&b=3")
    assert http.status == 200 and http.json()["result"] == 5
    assert lambdad.http("calculator", "/?op=pow&a=2&b=3").status == 400
    direct = lambdad.cli("invoke", "calculator", "--data", '{"op": "add", "a": 2, "b": 3}')
    assert direct.code == 0 and json.loads(direct.stdout)["result"] == 5

    lambdad.deploy("raw-http")
    raw = lambdad.http("raw-http", "/some/path?x=1", method="POST", body=b"12345")
    assert raw.status == 200
    assert raw.json()["path"] == "/some/path?x=1"
    assert raw.json()["body_bytes"] == 5
    assert raw.json()["invocation_type"] == "http"
    assert raw.json()["request_id"] == raw.headers["lambda-request-id"]


def test_echo_shows_the_lambda_event_and_context(lambdad: Lambdad) -> None:
    lambdad.deploy("echo")
    response = lambdad.http(
        "echo", "/a/b?x=1&x=2&y=", method="POST", body=b'{"k": "v"}',
        headers={"Content-Type": "application/json", "Cookie": "c1=1; c2=2",
                 "Lambda-Invocation-Type": "http-forged", "X-Custom": "yes",
                 "Connection": "keep-alive, X-Hop", "X-Hop": "dropped"},
    )
    assert response.status == 200, response.body
    event = response.json()["event"]
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/a/b"
    assert event["rawQueryString"] == "x=1&x=2&y="
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["cookies"] == ["c1=1", "c2=2"]
    assert event["body"] == '{"k": "v"}' and event["isBase64Encoded"] is False
    http = event["requestContext"]["http"]
    assert http["method"] == "POST" and http["path"] == "/a/b"
    assert http["sourceIp"] == "127.0.0.1"
    headers = event["headers"]
    assert headers["x-custom"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"echo.localhost:{lambdad.gateway_port}"
    assert "x-hop" not in headers
    assert not any(name.startswith("lambda-") for name in headers)
    context = response.json()["context"]
    assert context["function_name"] == "echo" and context["function_version"] == "1"
    assert context["aws_request_id"] == response.headers["lambda-request-id"]
    assert 0 < context["remaining_time_in_millis"] <= 30_000

    direct = lambdad.cli("invoke", "echo", "--data", '{"hello": [1, 2]}')
    assert json.loads(direct.stdout)["event"] == {"hello": [1, 2]}


def test_requirements_are_installed_from_wheels(lambdad: Lambdad, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "deps"
    folder.mkdir()
    (folder / "handler.py").write_text(
        "import lambdahelper\n\ndef handler(event, context):\n"
        "    return {'said': lambdahelper.shout(event.get('text', 'hi'))}\n"
    )
    (folder / "requirements.txt").write_text("lambdahelper==1.2.3\n")
    result = lambdad.deploy(folder, "--name", "deps")
    assert "lambdahelper" in result.stderr
    invoked = lambdad.cli("invoke", "deps", "--data", '{"text": "hey"}')
    assert json.loads(invoked.stdout) == {"said": "HEY!"}


def test_pinned_version_url_serves_only_the_active_version(lambdad: Lambdad) -> None:
    lambdad.deploy("greet", "--name", "pinned")
    assert lambdad.http(None, "/?name=v", host="v1.pinned.localhost").status == 200
    other = lambdad.http(None, "/", host="v7.pinned.localhost")
    assert other.status == 404 and "version 7" in other.json()["message"]
