"""Webhook POSTs to a real receiver on 127.0.0.1: delivered, retried, signed; the backoff."""

from __future__ import annotations

import hashlib
import hmac

from helpers.webhook_receiver import Receiver
from recond.workflows.webhooks import next_try_at, post, signature


def test_backoff_starts_at_5_s_doubles_and_stops_at_5_minutes_apart():
    created = 1000.0
    gaps = [next_try_at(attempts, created, created, 24) - created for attempts in range(1, 10)]
    assert gaps == [5, 10, 20, 40, 80, 160, 300, 300, 300]


def test_retries_end_after_webhook_retry_hours():
    created = 1000.0
    assert next_try_at(5, created, created + 3600 - 30, 1) is None  # 80 s on: past the hour
    assert next_try_at(5, created, created + 3600 - 30, 2) is not None


def test_a_post_arrives_signed_with_its_event_id():
    receiver = Receiver()
    try:
        sent = post(receiver.url, b'{"event": "published"}', "published", "abc123", "secret-key")
        assert sent.delivered
        (got,) = receiver.received
        assert got.body == b'{"event": "published"}'
        assert got.headers["X-Recond-Event-Id"] == "abc123"
        expected = hmac.new(b"secret-key", got.body, hashlib.sha256).hexdigest()
        assert got.headers["X-Recond-Signature"] == f"sha256={expected}" == signature("secret-key", got.body)
    finally:
        receiver.stop()


def test_5xx_and_a_receiver_that_is_down_are_retried_4xx_is_not():
    receiver = Receiver(answers=(503, 404))
    try:
        assert post(receiver.url, b"{}", "failed", "1", None).retry
        refused = post(receiver.url, b"{}", "failed", "1", None)
        assert not refused.delivered and not refused.retry and "404" in refused.detail
        assert "X-Recond-Signature" not in receiver.received[0].headers
        port = receiver.port
    finally:
        receiver.stop()
    down = post(f"http://127.0.0.1:{port}/hook", b"{}", "failed", "1", None)
    assert not down.delivered and down.retry
