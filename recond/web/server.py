"""The `recond-web` command: read the settings, refuse an unsafe bind, serve with uvicorn.

A separate process from the daemon (its own systemd unit), so a busy or crashed web front end
never touches the warm model, and the daemon runs the same with or without it. uvicorn times
out idle connections but not a request's headers while they arrive, so its h11 protocol gets
a deadline for them here (issue 17: slow headers held connections for ever).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from recond.config import Settings, SettingsError, load_settings
from recond.logging import configure_logging
from recond.web.app import create_app
from recond.web.guards import allowed_hosts, is_loopback

SHUTDOWN_GRACE_SECONDS = 5  # event streams never end by themselves; don't wait on them for long


def require_safe_bind(settings: Settings) -> None:
    """Listening beyond this machine without a token would let anyone fill the inbox; listening
    on every address with no host names to answer would refuse every request."""
    host = settings.web_host
    if not is_loopback(host) and not settings.web_token:
        raise SettingsError(
            f"setting web_host: {host} is not a loopback address, so web_token must be set "
            "(env RECOND_WEB_TOKEN or key 'web_token'; at least 16 characters)")
    if not allowed_hosts(settings):
        raise SettingsError(
            f"setting web_allowed_hosts: web_host {host or '(all)'} listens on every address, so "
            "list the host names clients use (e.g. web_allowed_hosts = [\"recon.example.com\", "
            "\"192.168.1.20\"], or [\"*\"] for any)")


def with_header_deadline(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request's headers have not all
    arrived ``seconds`` after it opened or after its previous answer."""

    class HeaderDeadline(H11Protocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_clock()

        def on_response_complete(self) -> None:
            self._start_clock()  # first: a pipelined request may begin (and stop it) below
            super().on_response_complete()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete and self.deadline:
                self.deadline.cancel()  # the headers are in: the request's own limits apply
                self.deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.deadline:
                self.deadline.cancel()
            super().connection_lost(exc)

        def _start_clock(self) -> None:
            if self.deadline:
                self.deadline.cancel()
            self.deadline = self.loop.call_later(seconds, self._too_slow)

        def _too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML settings file (default: $RECOND_CONFIG, then built-in defaults).")
def main(config_path: Path | None) -> None:
    """Serve recond's web front end: upload page, live progress, results, gallery, API, metrics."""
    try:
        settings = load_settings(config_path)
        require_safe_bind(settings)
    except SettingsError as error:
        click.echo(f"recond-web: {error}", err=True)
        sys.exit(2)
    configure_logging(settings, to_file=False)  # the JSON log file belongs to the daemon
    uvicorn.run(create_app(settings), host=settings.web_host, port=settings.web_port,
                http=with_header_deadline(settings.web_header_seconds), log_config=None,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)


if __name__ == "__main__":
    main()
