import pytest

from lambdad.gateway.routing import Route, is_function_name, route, subdomain


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("greet.localhost", Route("greet")),
        ("greet.localhost:8080", Route("greet")),
        ("GREET.LocalHost:8080", Route("greet")),
        ("greet.localhost.", Route("greet")),
        ("greet.localhost.:8080", Route("greet")),
        ("a.localhost", Route("a")),
        ("0.localhost", Route("0")),
        ("my-fn-2.localhost", Route("my-fn-2")),
        ("x" * 63 + ".localhost", Route("x" * 63)),
        ("v3.greet.localhost", Route("greet", 3)),
        ("V12.greet.localhost:80", Route("greet", 12)),
        ("v3.localhost", Route("v3")),  # a function may be called v3
    ],
)
def test_routes(host: str, expected: Route) -> None:
    assert route(host, "localhost") == expected


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "localhost",
        "localhost:8080",
        ".localhost",
        "greet.example.com",
        "greetlocalhost",
        "greet.localhost.evil.com",
        "a.b.localhost",  # only one label, unless it is a v<N> pin
        "x.v3.greet.localhost",
        "v0.greet.localhost",
        "v03.greet.localhost",
        "v.greet.localhost",
        "v3x.greet.localhost",
        "v3.a.b.localhost",
        "-greet.localhost",
        "greet-.localhost",
        "gr_eet.localhost",
        "gr eet.localhost",
        "grëet.localhost",
        "x" * 64 + ".localhost",
        "greet.localhost:",
        "greet.localhost:http",
        "greet.localhost:123456",
        "[::1]",
        "[::1]:8080",
        "::1",
        "fe80::1:8080",
        "127.0.0.1",
        "127.0.0.1:8080",
        "greet..localhost",
    ],
)
def test_routes_nowhere(host: str | None) -> None:
    assert route(host, "localhost") is None


def test_configurable_domain() -> None:
    assert route("greet.fn.example.com:443", "fn.example.com") == Route("greet")
    assert route("greet.fn.example.com", "FN.Example.COM.") == Route("greet")
    assert route("v2.greet.fn.example.com", "fn.example.com") == Route("greet", 2)
    assert route("greet.localhost", "fn.example.com") is None
    assert route("greet.example.com", "fn.example.com") is None


def test_route_is_frozen() -> None:
    r = Route("greet")
    with pytest.raises(AttributeError):
        r.function = "other"  # type: ignore[misc]


def test_subdomain() -> None:
    assert subdomain("A.B.localhost:80", "localhost") == "a.b"
    assert subdomain("localhost", "localhost") is None
    assert subdomain("[::1]:80", "localhost") is None


@pytest.mark.parametrize("name", ["a", "greet", "my-fn", "a1", "1a", "x" * 63])
def test_function_names(name: str) -> None:
    assert is_function_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a.b", "a_b", "x" * 64, "é"])
def test_not_function_names(name: str) -> None:
    assert not is_function_name(name)
