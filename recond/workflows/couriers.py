"""Couriers: one thread per channel (hooks, webhooks) that makes the deliveries the job store
says are owed, beside the worker, so no hook or receiver ever holds the queue (issue 25).

A delivery stays owed in SQLite until it is done with, so one owed when recond stops is made
after the restart. A hook runs once (its exit status is logged, never retried: a hook that
failed may have done half its work); a webhook is retried with backoff until it arrives or
``webhook_retry_hours`` pass.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from recond.config import WorkflowSettings
from recond.logging import Repeats, get_logger
from recond.store import Delivery, Store
from recond.workflows import webhooks
from recond.workflows.events import HOOK, PUBLISHED, WEBHOOK
from recond.workflows.hooks import run_hook

log = get_logger("recond.workflows")

IDLE_SECONDS = 5.0  # a safety net: the worker wakes a courier when it records a delivery
ERROR_PAUSE_SECONDS = 2.0


class Courier:
    """Makes one channel's owed deliveries, oldest first, with the settings of the moment."""

    def __init__(self, channel: str, store: Store, settings: WorkflowSettings) -> None:
        self.channel, self.store, self.settings = channel, store, settings
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._repeats = Repeats()
        self._deliver: Callable[[Delivery], None] = (
            self._run_hook if channel == HOOK else self._post_webhook)
        self._thread = threading.Thread(target=self._loop, name=f"recond-{channel}s", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def reload(self, settings: WorkflowSettings) -> None:
        self.settings = settings
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop at once: a running hook is stopped and stays owed (it runs after the restart)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                due = self.store.due_deliveries(self.channel, time.time())
                for delivery in due:
                    if self._stopping.is_set():
                        return
                    self._deliver(delivery)
                if not due:
                    self._wake.wait(self._idle_seconds())
            except sqlite3.Error as error:  # a busy or full database delays deliveries only
                self._repeats.log(log.warning, "owed deliveries not read or recorded",
                                  channel=self.channel, error=str(error))
                self._stopping.wait(ERROR_PAUSE_SECONDS)
            except Exception as error:  # one delivery's error never ends the courier
                self._repeats.log(log.exception, "courier step failed; carrying on",
                                  channel=self.channel, error=str(error))
                self._stopping.wait(ERROR_PAUSE_SECONDS)

    def _idle_seconds(self) -> float:
        next_at = self.store.next_delivery_at(self.channel)
        if next_at is None:
            return IDLE_SECONDS
        return max(0.0, min(IDLE_SECONDS, next_at - time.time()))

    def _run_hook(self, delivery: Delivery) -> None:
        command = self.settings.on_published if delivery.event == PUBLISHED else self.settings.on_failed
        name = "on_published" if delivery.event == PUBLISHED else "on_failed"
        if not command:
            log.warning("hook owed but no longer set; not run", hook=name, job=delivery.job_id)
            self.store.delivery_done(delivery.id, "not run", f"{name} is no longer set")
            return
        try:
            outcome = run_hook(command, delivery.path, delivery.payload, self.settings.hook_seconds,
                               self._stopping)
        except OSError as error:  # not found, not executable
            log.error("hook could not start", hook=name, job=delivery.job_id, command=command,
                      error=str(error))
            self.store.delivery_done(delivery.id, "failed", str(error))
            return
        if outcome.stopped:
            log.info("hook stopped: recond is stopping; it runs again after the restart",
                     hook=name, job=delivery.job_id)
            return
        facts = {"hook": name, "job": delivery.job_id, "path": delivery.path,
                 "exit_status": outcome.exit_status, "seconds": outcome.seconds,
                 "output": outcome.output}
        if outcome.timed_out:
            log.error("hook ran too long and was stopped", limit_s=self.settings.hook_seconds, **facts)
            self.store.delivery_done(delivery.id, "timed out",
                                     f"stopped after hook_seconds = {self.settings.hook_seconds:g}")
        elif not outcome.ok:
            log.error("hook failed", **facts)
            self.store.delivery_done(delivery.id, "failed", f"exit status {outcome.exit_status}")
        else:
            log.info("hook ran", **facts)
            self.store.delivery_done(delivery.id, "ran")

    def _post_webhook(self, delivery: Delivery) -> None:
        url = self.settings.webhook_url
        if not url:
            log.warning("webhook owed but webhook_url is no longer set; not sent", job=delivery.job_id)
            self.store.delivery_done(delivery.id, "not sent", "webhook_url is no longer set")
            return
        sent = webhooks.post(url, delivery.payload.encode("utf-8"), delivery.event,
                             delivery.event_id, self.settings.webhook_secret)
        facts = {"kind": delivery.event, "event_id": delivery.event_id, "job": delivery.job_id,
                 "attempt": delivery.attempts + 1, "detail": sent.detail}
        if sent.delivered:
            log.info("webhook delivered", **facts)
            self.store.delivery_done(delivery.id, "delivered")
            return
        now = time.time()
        next_at = (webhooks.next_try_at(delivery.attempts + 1, delivery.created_at, now,
                                        self.settings.webhook_retry_hours) if sent.retry else None)
        if next_at is None:
            log.error("webhook given up", retry_hours=self.settings.webhook_retry_hours, **facts)
        else:
            log.warning("webhook not delivered; retrying", retry_in_s=round(next_at - now, 1), **facts)
        self.store.delivery_tried(delivery.id, sent.detail, next_at)


def start_couriers(store: Store, settings: WorkflowSettings) -> list[Courier]:
    """One courier per channel, started: they also make what a stopped recond still owed."""
    couriers = [Courier(channel, store, settings) for channel in (HOOK, WEBHOOK)]
    for courier in couriers:
        courier.start()
    return couriers
