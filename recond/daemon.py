"""The `recond` command: wires intake, worker, signals and systemd notification into one process.

SIGTERM/SIGINT stop it cleanly (the jobs in flight are cancelled and requeued), SIGHUP
re-reads the settings and retries a missing model. ``--once`` processes what is waiting, then exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from functools import partial
from pathlib import Path

import click
import sdnotify

from recond.config import (
    IntakeSettings,
    Settings,
    SettingsError,
    load_settings,
    part_of,
    started_by_systemd,
)
from recond.errors import RAY_MISSING, reload_command
from recond.heartbeat import Heartbeat
from recond.inbox.intake import Intake
from recond.logging import Repeats, configure_logging, get_logger
from recond.outbox.publish import published_results
from recond.pipeline.warm import build_pipeline
from recond.shares.folders import (
    FolderError,
    create_state_dir,
    folder_error,
    missing_share_folder,
    missing_share_folders,
)
from recond.shares.lease import InboxLease, InboxTaken
from recond.store import HEARTBEAT_SECONDS, Store, StoreError, database_error
from recond.worker import STOP_SECONDS, Worker
from recond.workflows.couriers import Courier, start_couriers
from recond.workflows.presets import create_preset_folders

log = get_logger("recond.daemon")

# `recond --once` waits this many settle periods (and at least ONCE_MIN_SETTLE_WAIT_SECONDS) for
# a file that keeps changing, then reports it and leaves it for the next run (issue 18: a file
# written without end kept --once from ever exiting).
ONCE_SETTLE_PERIODS = 5
ONCE_MIN_SETTLE_WAIT_SECONDS = 5.0
START_AFRESH = 75  # Daemon.run's answer when the process must start again (main() execs itself)


class AlreadyRunning(RuntimeError):
    """Another recond holds the state directory's lock."""


class Daemon:
    """One running recond: call ``run`` from the main thread (signal handlers live there)."""

    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.systemd = sdnotify.SystemdNotifier()
        self.intake: Intake | None = None
        self.couriers: list[Courier] = []
        self.lease: InboxLease | None = None  # this daemon's claim on the inbox (shares/lease.py)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._repeats = Repeats()

    def run(self, once: bool = False) -> int:
        settings = self.settings
        lock = _lock_state_dir(create_state_dir(settings), settings.lock_path)
        configure_logging(settings)
        store = Store(settings.db_path)
        store.daemon_started(os.getpid())
        self._install_signal_handlers()
        self.systemd.notify("READY=1")
        self.heartbeat = Heartbeat(self.systemd, settings.heartbeat_path, store.waiting_on_another_process)
        self.heartbeat.start()
        worker: Worker | None = None
        try:
            if not self._wait_for_share_folders(store):
                return 0
            self.lease = self._take_inbox(self.settings)
            learnt = store.learn_published(published_results(settings.outbox.resolve()))
            if learnt:
                log.info("job database learnt results already in the outbox", results=learnt)
            settings = self.settings  # a SIGHUP while waiting may have changed the folders
            worker = Worker(settings, store, pipeline_factory=partial(
                build_pipeline, report=lambda line: store.daemon_update(model_detail=line)),
                on_file_changed=self._file_changed,
                how_to_reload=reload_command(started_by_systemd(), os.getpid()),
                on_owed=self._wake_couriers,
                inbox_lease=self.lease)
            worker.recover()
            self._create_preset_folders(settings)
            self.couriers = start_couriers(store, settings)
            self.intake = Intake(settings, store, on_enqueued=lambda job: worker.wake())
            self.intake.start()
            log.info("recond started", pid=os.getpid(), inbox=str(settings.inbox.resolve()),
                     outbox=str(settings.outbox.resolve()), polling=settings.polling, once=once)
            if once and self.intake.idle() and store.counts()["queued"] == 0:
                log.info("nothing waiting in the inbox; exiting without loading the model")
                return 0
            worker.start()
            return self._loop(store, worker, once)
        finally:
            self.systemd.notify("STOPPING=1")
            in_flight = len(worker.in_flight) if worker is not None else 0
            log.info("stopping: no new jobs" + ("; the jobs in flight go back to the queue" if in_flight else ""),
                     in_flight=in_flight)
            if self.intake is not None:
                self.intake.stop()
            if worker is not None and worker.is_alive():
                worker.stop()
                if worker.is_alive():  # its jobs are recovered at the next start, as after a crash
                    log.error("the worker did not stop in time; exiting without it", seconds=STOP_SECONDS)
            for courier in self.couriers:
                courier.stop()
            self.heartbeat.stop()
            if self.lease is not None:
                self.lease.release()
            try:
                store.daemon_update(stopped_at=time.time(), heartbeat_at=time.time())
            except sqlite3.Error as error:
                log.warning("the clean stop could not be recorded", error=str(error))
            store.close()
            os.close(lock)
            log.info("recond stopped")

    def _wait_for_share_folders(self, store: Store) -> bool:
        """Hold off until the inbox and outbox exist (False when stopped while waiting).

        Worker and watcher start only afterwards, so nothing writes under an unmounted share.
        """
        reported: list[str] = []
        while waiting := missing_share_folders(self.settings):
            if waiting != reported:
                for line in waiting:
                    log.warning(line)
                reported = waiting
                store.daemon_update(model_status="waiting",
                                    model_detail="loads once the folders below are there")
            self.heartbeat.tick(status=waiting[0])
            self._record_heartbeat(store, waiting)
            if self._stop.wait(1.0):
                return False
            if self._reload.is_set():
                self._reload.clear()
                self.settings = self._fresh_settings() or self.settings
        if reported:
            log.info("folders are there now; starting")
            store.daemon_update(model_status="loading", model_detail=None, watcher_warnings=[])
        return True

    def _loop(self, store: Store, worker: Worker, once: bool) -> int:
        last_beat, reported_warnings = 0.0, list[str]()
        while not self._stop.wait(0.5 if once else 1.0):
            self.heartbeat.tick()
            replaced = store.replaced()
            if replaced:
                log.error(replaced)
                return 1
            if self.lease is not None and self.lease.lost:
                return 1  # another daemon took the inbox (logged by the lease)
            if self._reload.is_set():
                self._reload.clear()
                self._reload_settings(store, worker)
            intake = self.intake
            assert intake is not None, "run() starts the intake before the loop"
            intake.supervise()
            if not worker.is_alive():
                if worker.exit_reason:
                    log.warning("starting afresh", reason=worker.exit_reason)
                    return START_AFRESH
                log.error("worker thread died; exiting so systemd restarts recond")
                return 1
            warnings = [*filter(None, [intake.paused]), *intake.warnings, *intake.not_pictures_note()]
            if (time.monotonic() - last_beat >= HEARTBEAT_SECONDS
                    or warnings != reported_warnings):  # a new warning shows at once
                last_beat, reported_warnings = time.monotonic(), warnings
                self._heartbeat(store, warnings)
            if once:
                finished = self._once_finished(store, intake, worker)
                if finished is not None:
                    return finished
        return 0

    def _wake_couriers(self) -> None:
        for courier in self.couriers:
            courier.wake()

    def _create_preset_folders(self, settings: Settings) -> None:
        """An inbox folder per preset, made at start and when a SIGHUP adds one (issue 25)."""
        try:
            made = create_preset_folders(settings.inbox.resolve(), settings.presets)
        except OSError as error:  # a read-only share: the presets work once someone makes them
            log.warning("preset folders not created in the inbox", error=str(error))
            return
        for folder in made:
            log.info("preset folder created", folder=str(folder))


    def _take_inbox(self, settings: Settings) -> InboxLease:
        """This daemon's lease on the inbox; InboxTaken (naming the other) when another holds it."""
        lease = InboxLease(settings.inbox.resolve(), settings.state_dir)
        lease.acquire()
        return lease

    def _file_changed(self, path: Path) -> None:
        """The worker found new bytes under a queued name: intake queues them once settled."""
        if self.intake is not None:
            self.intake.consider(path)

    def _heartbeat(self, store: Store, warnings: list[str]) -> None:
        if not self._record_heartbeat(store, warnings):
            return
        try:
            counts = store.counts()
            state = store.daemon_state() or {}
        except sqlite3.Error:
            return
        self.heartbeat.tick(status=f"model {state.get('model_status')}; {counts['queued']} queued, "
                                   f"{counts['running']} running, {counts['done']} done, "
                                   f"{counts['failed']} failed")

    def _record_heartbeat(self, store: Store, warnings: list[str]) -> bool:
        """The heartbeat row, best effort: a busy database or a full disk only delays it (the
        liveness file and the watchdog ping come from recond/heartbeat.py, without SQLite)."""
        try:
            store.daemon_update(heartbeat_at=time.time(), watcher_warnings=warnings)
        except sqlite3.Error as error:
            self._repeats.log(log.warning, "heartbeat not recorded in the job database",
                              error=str(error))
            return False
        return True

    def _once_finished(self, store: Store, intake: Intake, worker: Worker) -> int | None:
        """Exit code once everything waiting is processed (1 when the model cannot load)."""
        model_status = (store.daemon_state() or {}).get("model_status")
        if model_status == "missing":
            log.error("model missing: nothing was processed", queued=store.counts()["queued"])
            return 1
        give_up_after = max(ONCE_SETTLE_PERIODS * self.settings.settle_seconds, ONCE_MIN_SETTLE_WAIT_SECONDS)
        if not intake.idle(give_up_after) or worker.busy:
            return None
        counts = store.counts()
        if counts["queued"] or counts["running"]:
            return None
        for name in intake.still_changing(give_up_after):
            log.warning("still changing; left in the inbox for the next run", file=name,
                        waited_s=round(give_up_after, 1))
        return 0

    def _fresh_settings(self) -> Settings | None:
        """The config file read again on SIGHUP (None when it has an error; the log says which)."""
        try:
            new = load_settings(self.config_path)
        except SettingsError as error:
            log.error("SIGHUP: settings not reloaded, keeping the old ones", error=str(error))
            return None
        if new.state_dir.resolve() != self.settings.state_dir.resolve():
            log.warning("state_dir changes only take effect after a restart")
            new = new.model_copy(update={"state_dir": self.settings.state_dir})
        return new

    def _reload_settings(self, store: Store, worker: Worker) -> None:
        new = self._fresh_settings()
        if new is None:
            return
        old = self.settings
        if new.inbox.resolve() != old.inbox.resolve():
            try:
                lease = self._take_inbox(new)
            except (InboxTaken, OSError) as error:
                log.error("SIGHUP: the new inbox is not taken; keeping the old one", error=str(error))
                new = new.model_copy(update={"inbox": old.inbox})
            else:
                if self.lease is not None:
                    self.lease.release()
                self.lease = lease
                worker.inbox_lease = lease
        self.settings = new
        configure_logging(new)
        log.info("SIGHUP: settings reloaded; retrying the model if it is missing")
        worker.reload(new)
        for courier in self.couriers:
            courier.reload(new)
        self._create_preset_folders(new)
        if part_of(old, IntakeSettings) != part_of(new, IntakeSettings):
            missing_share_folder("inbox", new.inbox)  # else the watcher waits for it and says so
            if self.intake is not None:
                self.intake.stop()
            self.intake = Intake(new, store, on_enqueued=lambda job: worker.wake())
            self.intake.start()

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: self._stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: self._stop.set())
        signal.signal(signal.SIGHUP, lambda signum, frame: self._reload.set())


def _lock_state_dir(state_dir: Path, pid_file: Path) -> int:
    """Hold an exclusive lock for the process lifetime: two daemons on one database would race.

    The lock is on the state dir itself (its descriptor), so deleting a file cannot release it;
    ``pid_file`` only says who holds it. Returns the descriptor to close at exit.
    """
    try:
        folder = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise folder_error("state_dir", state_dir, error) from None
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(folder)
        try:
            holder = pid_file.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise AlreadyRunning(
            f"another recond (pid {holder}) is already using {state_dir}; stop it first") from None
    try:
        pid_file.write_text(str(os.getpid()))
    except OSError as error:  # the lock holds without it; only the message above is poorer
        log.warning("pid file not written", file=str(pid_file), error=str(error))
    return folder


def _check_executor_installed(settings: Settings) -> None:
    """executor = "ray" needs the optional ray extra: without it, stop now with one line."""
    if settings.executor != "ray":
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SettingsError(RAY_MISSING) from None


@click.command(epilog=(
    "Log: readable lines on stderr (journald under systemd), JSON lines in <state_dir>/recond.log; "
    "`reconctl logs -f` follows it, `reconctl status` shows the queue. Settings: "
    "config/recond.toml in the checkout, each key described (RECOND_<KEY> variables override "
    "them). Manual: README.md and docs/."))
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML settings file (default: $RECOND_CONFIG, then built-in defaults).")
@click.option("--once", is_flag=True, help="Process what is waiting in the inbox, then exit.")
def main(config_path: Path | None, once: bool) -> None:
    """Watch the inbox and turn every photo dropped there into a 3D result folder in the outbox."""
    try:
        settings = load_settings(config_path)
        _check_executor_installed(settings)
        code = Daemon(settings, config_path).run(once=once)
    except (SettingsError, FolderError, AlreadyRunning, InboxTaken, StoreError, OSError) as error:
        click.echo(f"recond: {error}", err=True)
        sys.exit(2 if isinstance(error, SettingsError) else 1)
    except sqlite3.Error as error:
        click.echo(f"recond: {database_error(settings.db_path, error)}", err=True)
        sys.exit(1)
    _exit(code, settings)


def _exit(code: int, settings: Settings) -> None:
    """Exit with ``code``, or start afresh in a new process image (START_AFRESH: the Ray
    cluster came back after it was lost; same pid, so systemd keeps its watch). With Ray,
    without the interpreter's exit handlers: Ray's own (ray.shutdown) waited without end on a
    cluster that was gone, and aborted in its C++ code on one that came back (issue 27); recond
    left the cluster already where it could."""
    if settings.executor != "ray":
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if code == START_AFRESH:
        os.execv(sys.executable, [sys.executable, "-m", "recond.daemon", *sys.argv[1:]])
    os._exit(code)


if __name__ == "__main__":
    main()
