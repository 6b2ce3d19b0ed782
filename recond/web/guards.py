"""What a request must satisfy before recond-web looks at it: a known Host, a same-origin write,
the token, and room for one more event stream.

Plain ASGI layers (and one counter), so they also guard the docs and the static files, and an
upload's body is never read when its request is refused. Why each exists: issue 17 found that
any website could post into the inbox (cross-site forms), and that a DNS-rebinding page could
read the API, because recond-web answered every Host and every Origin.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recond.config import Settings

OPEN_PATHS = ("/healthz",)  # reachable without the token (load balancers, systemd checks)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")
# Sec-Fetch-Site values a browser sends for a request its user made on this site or typed in
# (https://www.w3.org/TR/fetch-metadata/#sec-fetch-site-header).
OWN_SITE_FETCHES = (b"same-origin", b"none")
LINGER_SECONDS = 2.0  # how long a refused request's unread body is still taken in and dropped


class Refusal(JSONResponse):
    """A 4xx/5xx answered while the client may still be sending its body, which is never read
    to its end: the answer goes out at once with ``Connection: close``; what still arrives is
    read and dropped for at most LINGER_SECONDS, so a client busy sending gets to read the
    answer rather than a reset connection (a "lingering close", as Apache does); then the
    connection closes. A refused upload of any size costs seconds, not its whole body."""

    def __init__(self, status: int, detail: str, body_left: bool,
                 headers: dict[str, str] | None = None) -> None:
        closing = {"Connection": "close"} if body_left else {}
        super().__init__({"detail": detail}, status_code=status, headers={**(headers or {}), **closing})
        self.body_left = body_left

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.body_left:
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        with anyio.move_on_after(LINGER_SECONDS):
            while (message := await receive())["type"] == "http.request" and message.get("more_body"):
                pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def declares_body(scope: Scope) -> bool:
    """Whether the client sends a body without being asked. One that sent ``Expect:
    100-continue`` waits for a "100 Continue" first, which a refusal never sends (RFC 9110
    section 10.1.1), so there is nothing to read after refusing it."""
    headers = Headers(scope=scope)
    if headers.get("expect", "").lower() == "100-continue":
        return False
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host names (without port) recond-web answers: its bind address, loopback names when
    it listens on loopback, and web_allowed_hosts. Empty for a wildcard bind without that list
    (server.py refuses to start then)."""
    host = settings.web_host
    hosts = [] if host in WILDCARD_BINDS else [f"[{host}]" if ":" in host else host]
    if is_loopback(host):
        hosts += LOOPBACK_NAMES
    return [*dict.fromkeys(name.lower() for name in [*hosts, *settings.web_allowed_hosts])]


class SameOriginWrites:
    """A POST (or any other state-changing method) from a browser must come from this site or a
    configured CORS origin. Browsers send Origin with every cross-origin POST, forms and
    ``fetch(..., {mode: "no-cors"})`` included, and Sec-Fetch-Site with every request; clients
    that send neither (curl, scripts) are not browsers a page can steer, and pass."""

    def __init__(self, app: ASGIApp, cors_origins: list[str]) -> None:
        self.app = app
        self.cors_origins = {origin.rstrip("/").lower() for origin in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"].encode() not in SAFE_METHODS:
            problem = self._problem(Headers(scope=scope))
            if problem:
                await Refusal(403, problem, declares_body(scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, headers: Headers) -> str | None:
        origin = headers.get("origin")
        if origin is not None:
            if origin.lower() in self.cors_origins or urlsplit(origin).netloc == headers.get("host"):
                return None
            return (f"a page on {origin} may not send this request (add it to web_cors_origins "
                    "to allow it)")
        fetch_site = headers.get("sec-fetch-site", "").encode()
        if fetch_site and fetch_site not in OWN_SITE_FETCHES:
            return f"a {fetch_site.decode()} page may not send this request"
        return None


class BearerToken:
    """Every request but /healthz must carry ``Authorization: Bearer <web_token>`` (the scheme
    in any case, RFC 9110 section 11.1)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.expected):
                refusal = Refusal(401, "missing or wrong token: send Authorization: Bearer "
                                       "<web_token>", declares_body(scope),
                                  headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD is GET without the body (RFC 9110 section 9.3.2): the app answers a GET, uvicorn
    drops the body of a HEAD response, and an endless event stream is cut after its headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        sent = False
        async with anyio.create_task_group() as answer:

            async def headers_only(message: Message) -> None:
                nonlocal sent
                if not sent and message["type"] == "http.response.start":
                    sent = True
                    await send(message)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    answer.cancel_scope.cancel()  # the rest of the body is not wanted

            await self.app({**scope, "method": "GET"}, receive, headers_only)


class StreamCounter:
    """How many event streams are open, per client address and in all; refuses one more with 429."""

    def __init__(self, settings: Settings) -> None:
        self.most, self.most_per_client = (settings.web_max_event_streams,
                                           settings.web_max_event_streams_per_client)
        self.open: Counter[str] = Counter()

    def take(self, client: str) -> Callable[[], None]:
        """Count one more stream for ``client``; the returned call gives it back."""
        if sum(self.open.values()) >= self.most:
            self._refuse(f"{self.most} event streams are open (setting web_max_event_streams)")
        if self.open[client] >= self.most_per_client:
            self._refuse(f"{self.most_per_client} event streams are open from {client} (setting "
                         "web_max_event_streams_per_client); close one, e.g. another tab")
        self.open[client] += 1
        released = False

        def give_back() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[client] -= 1
                if not self.open[client]:
                    del self.open[client]
        return give_back

    @staticmethod
    def _refuse(reason: str) -> None:
        raise HTTPException(429, f"{reason}; retry later", headers={"Retry-After": "5"})
