"""One webhook POST, and when to try again after one that did not arrive (issue 25).

httpx sends it: a well-kept client with separate connect and read time limits, so a receiver
that accepts and never answers holds a delivery for SEND_SECONDS at most. The body is the
event's JSON document as recorded when it happened, byte for byte the same on every try, with
the same X-Recond-Event-Id: a receiver drops the duplicates a lost answer causes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import httpx

from recond import __version__

EVENT_ID_HEADER = "X-Recond-Event-Id"
EVENT_HEADER = "X-Recond-Event"
SIGNATURE_HEADER = "X-Recond-Signature"  # "sha256=" + HMAC-SHA256(webhook_secret, body), hex
FIRST_RETRY_SECONDS = 5.0
LONGEST_RETRY_SECONDS = 300.0
CONNECT_SECONDS = 5.0
SEND_SECONDS = 15.0
# Answers worth another try besides 5xx: 408 (timeout) and 429 (too many requests). Any
# other 4xx says the receiver will never take this document: retrying would only repeat it.
RETRIED_STATUSES = (408, 429)


@dataclass(frozen=True)
class Sent:
    """A try's outcome: delivered (2xx), or why not and whether to try again."""

    delivered: bool
    retry: bool
    detail: str


def signature(secret: str, body: bytes) -> str:
    """The signature header's value: a receiver computes the same over the body it got."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, event: str, event_id: str, secret: str | None) -> Sent:
    headers = {"Content-Type": "application/json", EVENT_HEADER: event, EVENT_ID_HEADER: event_id,
               "User-Agent": f"recond/{__version__}"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    try:
        answer = httpx.post(url, content=body, headers=headers, follow_redirects=False,
                            timeout=httpx.Timeout(SEND_SECONDS, connect=CONNECT_SECONDS))
    except httpx.HTTPError as error:  # refused, unreachable, timed out: the receiver is down
        return Sent(False, True, f"{type(error).__name__}: {error}")
    if answer.is_success:
        return Sent(True, False, f"HTTP {answer.status_code}")
    retry = answer.status_code >= 500 or answer.status_code in RETRIED_STATUSES
    return Sent(False, retry, f"HTTP {answer.status_code}")


def next_try_at(attempts: int, created_at: float, now: float, retry_hours: float) -> float | None:
    """When to try again after ``attempts`` failed tries: 5 s, 10 s, 20 s ... doubling to at
    most 5 minutes apart, for ``retry_hours`` after the event; None once that time is up."""
    delay = min(FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1), LONGEST_RETRY_SECONDS)
    at = now + delay
    return at if at <= created_at + retry_hours * 3600 else None
