"""`reconctl`: look at and steer a recond installation (status, jobs, show, retry, doctor) and
process pictures one-shot without the daemon (process).

Commands are thin: read the settings and the job database, call one function, print. Every
listing has ``--json`` for scripts. Status reads the database, so it works while the daemon is down.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import click

from recond.config import JobSettings, Settings, SettingsError, load_settings
from recond.doctor import doctor_checks
from recond.errors import process_loading_fix
from recond.inbox.failed import FAILED_FOLDERS, find_in_failed, move_back_from_failed
from recond.names import result_name_for
from recond.outbox import leftovers, publish
from recond.pipeline.contract import JobResult
from recond.pipeline.record import write_record
from recond.shares.folders import SHARE_FOLDERS
from recond.shares.identity import FolderIdentity, FolderReplaced
from recond.status import job_facts, open_store, status_report
from recond.store import FAILED, QUEUED, STATES, Job, Store, StoreError, database_error
from recond.workflows.presets import job_settings as preset_settings
from recond.workflows.redo import RedoRefused, parse_assignments, plan_redo, queue_redo


def _settings(ctx: click.Context, **overrides: object) -> Settings:
    try:
        return load_settings(ctx.obj.get("config"), **{k: v for k, v in overrides.items() if v})
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _store(settings: Settings) -> Store | None:
    """The job database, or None when recond has never run with these settings."""
    try:
        return open_store(settings)
    except StoreError as error:
        raise click.ClickException(str(error)) from None


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:  # the last --config on the line wins, before or after the command
        ctx.ensure_object(dict)["config"] = value


config_option = click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), expose_value=False,
    callback=_remember_config,
    help="TOML settings file (default: $RECOND_CONFIG, then built-in defaults); "
         "before or after the command.")


HELP_EPILOG = (
    "The daemon's log: `reconctl logs [-f]` (the JSON log <state_dir>/recond.log; under systemd "
    "also `journalctl -u recond`). Every setting, its RECOND_* variable and its default: "
    "config/recond.toml in the checkout, each key described. Manual: README.md and docs/.")


@click.group(epilog=HELP_EPILOG)
@config_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Inspect and control recond, the photo-to-3D inbox daemon."""
    ctx.ensure_object(dict)


# status


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(text: str) -> str:
    """A line for a terminal: control characters in names (ESC[2J clears the screen) escaped
    as \\xNN, so a file name can never steer the terminal (--json escapes them itself)."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _echo(line: str) -> None:
    click.echo(_shown(line))


def _format_status(report: dict[str, Any]) -> str:
    daemon, counts = report["daemon"], report["counts"]
    if not report["database"]:
        return (f"recond: down; no job database in {report['state_dir']} (recond has not run with "
                "this config; if it runs as a service, pass its file: --config /etc/recond/recond.toml)")
    if daemon["running"]:
        line = f"recond: up (pid {daemon['pid']}, up {_duration(daemon['uptime_s'])})"
    elif daemon["unresponsive"]:
        line = f"recond: NOT RESPONDING (no heartbeat for {_duration(daemon['heartbeat_age_s'])})"
    elif daemon["stopped_at"]:
        line = f"recond: down (stopped {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(daemon['stopped_at']))})"
    else:
        line = "recond: down (its process is gone without a clean stop)"
    lines = [line, f"state:  {report['state_dir']}"]
    if daemon["model"]:
        device = f" on {daemon['device']}" if daemon["device"] else ""
        device += f" in {daemon['dtype']}" if daemon.get("dtype") else ""
        lines.append(f"model:  {daemon['model']}{device}: {daemon['model_detail'] or ''}".rstrip(": "))
    if report["last_background"]:
        last = report["last_background"]
        lines.append(f"background: job #{last['id']} used {last['method'] or 'unknown (no job.json)'}")
    lines.append("jobs:   " + ", ".join(f"{number} {state}" for state, number in counts.items()))
    for job in report["running"]:
        eta = f", ETA {_duration(job['eta_s'])}" if job["eta_s"] is not None else ""
        lines.append(f"now:    #{job['id']} {job['source']}{_preset(job)}: {job['stage'] or 'starting'} "
                     f"{round((job['progress'] or 0) * 100)}%{eta}")
        if job["stage_overdue"]:
            lines.append(f"warning: the {job['stage']} stage has run {_duration(job['stage_seconds'])}; "
                         f"it usually takes {job['stage_expected_s']:.1f} s ({_overdue_note(job)})")
    workers = daemon["workers"]
    if len(workers) > 1 or any(worker.get("pid") not in (None, daemon["pid"]) for worker in workers):
        busy = [worker for worker in workers if worker["busy"]]
        lines.append(f"workers: {len(busy)} of {len(workers)} busy: " + ", ".join(
            f"{worker['name']} ({worker['device']}{_elsewhere(worker['node'])}"
            f"{', job #' + str(worker['job_id']) if worker['busy'] else ''})" for worker in workers))
    for stop in daemon.get("host_stops", []):
        lines.append(f"stopped: #{stop['job_id']} {stop['source']}: the {stop['stage']} stage ran "
                     f"{_duration(stop['seconds'])} (limit {_duration(stop['limit_s'])}) at "
                     f"{time.strftime('%H:%M:%S', time.localtime(stop['at']))}; host process {stop['pid']} "
                     "was killed and a fresh one " + (f"({stop['fresh_pid']}) took its place" if stop["fresh_pid"]
                                                      else "takes its place (Ray starts it)"))
    if report["recent"]:
        lines.append("recent:")
        for job in report["recent"]:
            outcome = job["error"] if job["state"] == FAILED else job["output"] or ""
            if job["state"] == QUEUED and job["error"]:  # retried after a stage ran past its limit
                outcome = f"to be retried: {job['error']}"
            if job["duplicate_of"]:
                outcome = f"same bytes as #{job['duplicate_of']}: {outcome}"
            lines.append(f"  #{job['id']:<5} {job['state']:<9} {job['source']}{_preset(job)}  {outcome}".rstrip())
    owed = report["owed"]
    if any(owed.values()):
        lines.append(f"owed:   {owed['webhook']} webhook deliveries, {owed['hook']} hook runs")
    if report["database_busy"]:
        lines.append("warning: the job database is held by another process: recond waits to record "
                     "its progress, so what is shown here may be behind")
    for warning in [*daemon["watcher_warnings"], *filter(None, [daemon["worker_warning"]])]:
        lines.append(f"warning: {warning}")
    return "\n".join(_shown(line) for line in lines)


def _preset(job: dict[str, Any]) -> str:
    """' [preset quick]' for a job made with a preset, else nothing."""
    return f" [preset {job['preset']}]" if job.get("preset") else ""


def _overdue_note(job: dict[str, Any]) -> str:
    """What happens to an overdue stage, true of that stage: only a stage with a child process
    (ffmpeg) is stopped at its limit."""
    if job.get("stage_child"):
        return (f"its {job['stage_child']} child process is stopped at the stage's limit, "
                "stage_limit_factor / stage_limit_floor_s")
    return ("recond does not stop this stage itself; if it never ends, restart recond and the "
            "job goes back to the queue")


def _elsewhere(node: str) -> str:
    """' on NODE' for a worker on another machine (executor = "ray"), else nothing."""
    return "" if node == socket.gethostname() else f" on {node}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool) -> None:
    """Is the daemon up, is the model loaded, what is queued, running, done or failed."""
    settings = _settings(ctx)
    while True:
        try:
            report = status_report(settings)
        except StoreError as error:
            raise click.ClickException(str(error)) from None
        except sqlite3.Error as error:
            raise click.ClickException(database_error(settings.db_path, error)) from None
        if watch:
            click.clear()
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            click.echo(_format_status(report))
        if not watch:
            return
        time.sleep(2)


# jobs, show, retry


@cli.command()
@config_option
@click.option("--state", type=click.Choice(STATES))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs(ctx: click.Context, state: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    store = _store(_settings(ctx))
    listed = store.jobs(state, limit) if store else []
    if as_json:
        click.echo(json.dumps([job.as_dict() for job in listed], indent=2))
        return
    for job in listed:
        outcome = job.error if job.state == FAILED else job.output or job.result_name or ""
        _echo(f"#{job.id:<5} {job.state:<9} {job.source}  {outcome}".rstrip())


@cli.command()
@config_option
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """Every recorded fact about one job."""
    facts = job_facts(_job(_settings(ctx), job_id))
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for name, value in facts.items():
        if name.endswith("_at") and value:
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        elif name == "stage_seconds" and value:
            value = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in value.items())
        _echo(f"{name:>13}: {'' if value is None else value}")


@cli.command()
@config_option
@click.argument("job_id", type=int)
@click.pass_context
def retry(ctx: click.Context, job_id: int) -> None:
    """Put a failed job's file back into the inbox, where it becomes a new job."""
    settings = _settings(ctx)
    job = _job(settings, job_id)
    if job.state != FAILED:
        raise click.ClickException(f"job {job_id} is {job.state}; only failed jobs can be retried")
    if job.redo_of:  # its picture never left the old result: nothing to move back
        raise click.ClickException(_shown(f"job {job_id} is a redo of {job.redo_of}; queue it again "
                                          f"with: reconctl redo {job.redo_of}"))
    inbox = settings.inbox.resolve()
    kept = Path(job.output) if job.output else None
    if kept is None or not kept.is_file():  # a kill between the move and its record: look
        kept = find_in_failed(inbox, job.source_name, job.id, job.sha256, job.size)
    if kept is None:
        raise click.ClickException(_shown(
            f"the file of job {job_id} is no longer in {inbox / FAILED_FOLDERS[0]}; "
            "drop it into the inbox again to retry"))
    try:
        target = move_back_from_failed(inbox, kept, job.source_name)
    except OSError as error:  # e.g. a folder on the way became a symlink: nothing moved
        raise click.ClickException(_shown(f"job {job_id} not moved back: {error}")) from None
    _echo(f"moved back to {target}; recond will queue it as a new job")


def _job(settings: Settings, job_id: int) -> Job:
    store = _store(settings)
    job = store.get(job_id) if store else None
    if job is None:
        raise click.ClickException(f"no job {job_id} in {settings.db_path}")
    return job


# doctor


@cli.command()
@config_option
@click.argument("folder", type=click.Choice(SHARE_FOLDERS))
@click.pass_context
def adopt(ctx: click.Context, folder: str) -> None:
    """Take the inbox or outbox as it is now, after recond paused because it is not the folder
    it started with (another marker, or a share's bare mount point); the daemon resumes."""
    settings = _settings(ctx)
    path = getattr(settings, folder).expanduser().resolve()
    try:
        _echo(FolderIdentity(folder, path, settings.state_dir).adopt())
    except OSError as error:
        raise click.ClickException(str(error.strerror if isinstance(error, FolderReplaced) else error)) from None


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check folders, GPU, weights, rembg model, ffmpeg and the daemon; exit 1 if any fails."""
    checks = doctor_checks(_settings(ctx))
    if as_json:
        click.echo(json.dumps([check.__dict__ for check in checks], indent=2))
    else:
        for check in checks:
            click.echo(f"{check.level.upper():<5} {check.name:<9} {check.message}")
    if any(check.level == "fail" for check in checks):
        sys.exit(1)


# logs


@cli.command()
@config_option
@click.option("-n", "--lines", "count", default=50, show_default=True, help="How many of the last lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="The JSON lines as written.")
@click.pass_context
def logs(ctx: click.Context, count: int, follow: bool, as_json: bool) -> None:
    """Print the daemon's log (<state_dir>/recond.log), readable; -f follows it."""
    from recond.logging import follow as follow_log
    from recond.logging import last_lines, readable

    path = _settings(ctx).log_path
    if not path.is_file():
        raise click.ClickException(f"no log at {path} yet: recond has not run with these settings")
    shown = (lambda line: line) if as_json else readable
    for line in last_lines(path, count):
        click.echo(shown(line))
    if follow:
        try:
            follow_log(path, lambda line: click.echo(shown(line)), lambda: False)
        except KeyboardInterrupt:
            pass


# process


@cli.command()
@config_option
@click.argument("images", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the result folders (default: the outbox setting).")
@click.option("--model", help="Model folder or Hugging Face id (default: the model setting).")
@click.option("--preset", help="Make them with this preset's settings ([presets.NAME]).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A job setting for this run only, e.g. --set mc_resolution=320 --set "
                   "bake_texture=false (values as in recond.toml; checked like the settings; "
                   "over the preset's).")
@click.pass_context
def process(ctx: click.Context, images: tuple[Path, ...], out: Path | None, model: str | None,
            preset: str | None, overrides: tuple[str, ...]) -> None:
    """Turn IMAGES into result folders now, with one warm pipeline, without the daemon."""
    from tqdm import tqdm

    from recond.errors import describe_failure
    from recond.executors import DeviceTask, HostTask, PartProgress
    from recond.executors.host_pool import START_ALLOWANCE_SECONDS
    from recond.executors.inline import InlineExecutor
    from recond.inbox.dropped import read_source
    from recond.logging import configure_logging
    from recond.pipeline.progress import EtaEstimate, Progress
    from recond.pipeline.warm import build_pipeline, load_main_thread_libraries

    settings = _settings(ctx, model=model)
    if preset is not None and preset not in settings.presets:
        raise click.ClickException(f"no preset '{preset}' in the settings (presets: "
                                   f"{', '.join(sorted(settings.presets)) or 'none are set'})")
    job_settings = _job_settings(preset_settings(settings, preset)[0], overrides)
    configure_logging(settings.model_copy(update={"log_level": "warning"}), to_file=False)
    load_main_thread_libraries()
    estimates: dict[int, EtaEstimate] = {}

    def on_progress(part: PartProgress) -> None:
        if part.job_id in estimates:
            estimates[part.job_id](part.stage, part.fraction)

    # As the daemon runs host_workers = 0: the host part in a child process that is stopped at a
    # stage's limit (isolate_host_part), so one stuck picture fails alone.
    executor = InlineExecutor(settings, build_pipeline, on_progress)
    try:
        executor.start()
    except Exception as error:  # the one-line reason and the fix, not a traceback
        executor.close()
        raise click.ClickException(
            f"pipeline not loaded: {error} -- to fix: {process_loading_fix(error)}") from None
    # The host process imports torch while the model loads; what is left of that is waited for
    # here, or the first picture's device part would share the CPUs with it (2x its grid stage).
    executor.wait_for_host_process(START_ALLOWANCE_SECONDS)
    out = (out or settings.outbox).resolve()
    out.mkdir(parents=True, exist_ok=True)
    leftovers.clean_staging(out, leftovers.process_owner(os.getpid()))  # those of killed runs
    failures, owner = 0, leftovers.process_owner(os.getpid())
    try:
        for number, image in enumerate(images):
            name = result_name_for(image.name, time.time())
            # Percent and times only: tqdm's rate would flip between %/s and s/% as stages speed up.
            with tqdm(total=100, desc=image.name, file=sys.stderr, leave=False,
                      bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}") as bar:
                def report(progress: Progress, bar: tqdm = bar) -> None:
                    bar.set_postfix_str(progress.stage, refresh=False)
                    bar.update(round(progress.overall * 100) - bar.n)

                estimates[number] = EtaEstimate(report)
                try:
                    picture = read_source(image, settings.max_file_bytes)
                    handoff = executor.submit_device(DeviceTask(number, picture, job_settings)).result()
                    result, folder = publish.build_result(  # staged, then published as the worker does
                        out, name, f"{owner}-{number}",
                        lambda staging: _with_preset(executor.submit_host(
                            HostTask(number, handoff, job_settings, staging)).result(), preset),
                        source_mode=picture.mode)
                except Exception as error:  # recorded per image; the others still run
                    failures += 1
                    _echo(f"{image}: failed: {describe_failure(error)[0]}")
                    continue
                finally:
                    estimates.pop(number, None)
            _echo(f"{image}: {folder}")
            for warning in result.warnings:
                _echo(f"{image}: warning: {warning}")
    finally:
        executor.close()
    sys.exit(1 if failures else 0)


def _job_settings(base: JobSettings, overrides: tuple[str, ...]) -> JobSettings:
    """``base`` (the job settings, with a preset's) with ``--set KEY=VALUE`` applied, each value
    read as a TOML value (a bare word as a string) and the whole checked by the settings' own
    rules."""
    import tomllib

    from pydantic import ValidationError

    values = base.model_dump()
    for override in overrides:
        key, equals, text = override.partition("=")
        key = key.strip()
        if not equals or key not in JobSettings.model_fields:
            raise click.BadParameter(
                f"{override!r}: expected KEY=VALUE with KEY one of the job settings: "
                f"{', '.join(sorted(JobSettings.model_fields))}", param_hint="--set")
        try:
            values[key] = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            values[key] = text.strip()
    try:
        return JobSettings.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise click.BadParameter(problems, param_hint="--set") from None


def _with_preset(result: JobResult, preset: str | None) -> JobResult:
    """The staged result's job.json with the preset it was made with, as the daemon records it."""
    result.record = {**result.record, "preset": preset, "overrides": {}, "redone_from": None}
    write_record(result.result_dir, result.record)
    return result


# redo


@cli.command()
@config_option
@click.argument("result_folder")
@click.option("--preset", help="Redo with this preset (default: the result's own, if still set).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A job setting for the redo, e.g. --set render_views=3; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the queued job as JSON.")
@click.pass_context
def redo(ctx: click.Context, result_folder: str, preset: str | None, assignments: tuple[str, ...],
         as_json: bool) -> None:
    """Queue RESULT_FOLDER's picture again as a new job with other settings; the running daemon
    publishes it as a new folder, and RESULT_FOLDER stays as it is."""
    settings = _settings(ctx)
    try:
        planned = plan_redo(settings, result_folder, preset, parse_assignments(list(assignments)))
    except RedoRefused as error:
        raise click.ClickException(_shown(str(error))) from None
    try:
        store = Store(settings.db_path)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    try:
        job = queue_redo(store, planned)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(job.as_dict(), indent=2))
        return
    _echo(f"queued job #{job.id}: {planned.result_name} again{_preset(job.as_dict())}"
          + (f" with {', '.join(f'{k}={v}' for k, v in planned.overrides.items())}"
             if planned.overrides else "")
          + f"; it will be published as {job.result_name}")


def main() -> None:
    cli(prog_name="reconctl")


if __name__ == "__main__":
    main()
