"""Who may talk to the server: the Host a request names and the Origin a browser says it comes from, checked before
any route runs (a plain ASGI middleware, so streamed answers pass through untouched).

A page from another site can make the user's browser send requests to a server on 127.0.0.1 (it cannot read the
answer without CORS, but the request is made), and a DNS-rebinding site can even read it: its name resolves to
127.0.0.1, so the browser treats the server as the same origin. Two checks keep such pages out:
- Host: an IP address, `localhost` or this machine's host name (DNS rebinding always sends the attacker's name), or
  a name given with --allowed-hosts ("*": any);
- Origin (browsers send it on every POST and on cross-origin requests): the server's own (the Host it was reached
  by), or one given with --allowed-origins ("*": any), which also answers CORS preflights for those origins.
Clients that are not browsers (the openai client, curl) send no Origin and are not affected by the second check.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import APIError


def _hostname(host: str) -> str:
    """The name in a Host header value (port and IPv6 brackets removed), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    def __init__(self, app: ASGIApp, allowed_hosts: list[str] | None = None,
                 allowed_origins: list[str] | None = None) -> None:
        self.app = app
        self.any_host = "*" in (allowed_hosts or [])
        own = socket.gethostname().lower()
        self.hosts = {h.lower() for h in allowed_hosts or []} | {"localhost", own, own.split(".")[0]}
        self.any_origin = "*" in (allowed_origins or [])
        self.origins = {o.rstrip("/").lower() for o in allowed_origins or [] if o != "*"}

    def host_ok(self, host: str) -> bool:
        name = _hostname(host)
        return self.any_host or _is_ip(name) or name in self.hosts or name.endswith(".localhost")

    def origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in (b"host", b"origin")}
        host = headers.get(b"host", "")
        origin = headers.get(b"origin")
        if not self.host_ok(host):
            err = APIError(403, "this server does not answer requests for that Host name (start it with "
                                "--allowed-hosts NAME to allow it)", code="host_not_allowed")
        elif origin is not None and not self.origin_ok(origin, host):
            err = APIError(403, "requests from web pages of other origins are refused (start the server with "
                                "--allowed-origins ORIGIN to allow one)", code="origin_not_allowed")
        else:
            await self.app(scope, receive, send)
            return
        body = json.dumps(err.body()).encode()
        await send({"type": "http.response.start", "status": err.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
