"""The `recond-web` command: read the settings, refuse an open bind without a token, serve.

A separate process from the daemon (its own systemd unit), so a busy or crashed web front end
never touches the warm model, and the daemon runs the same with or without it.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import click
import uvicorn

from recond.config import Settings, SettingsError, load_settings
from recond.logging import configure_logging
from recond.web.app import create_app

SHUTDOWN_GRACE_SECONDS = 5  # event streams never end by themselves; don't wait on them for long


def require_safe_bind(settings: Settings) -> None:
    """Listening beyond this machine without a token would let anyone fill the inbox."""
    host = settings.web_host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        loopback = False
    if not loopback and not settings.web_token:
        raise SettingsError(
            f"setting web_host: {host} is not a loopback address, so web_token must be set "
            "(env RECOND_WEB_TOKEN or key 'web_token'; at least 16 characters)")


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
                log_config=None, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)


if __name__ == "__main__":
    main()
