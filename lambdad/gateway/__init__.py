"""The HTTP/1.1 gateway: a reverse proxy from Host subdomains to function instances."""

from lambdad.gateway.routing import Route, route, subdomain
from lambdad.gateway.server import Gateway

__all__ = ["Gateway", "Route", "route", "subdomain"]
