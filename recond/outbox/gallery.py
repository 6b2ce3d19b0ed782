"""The gallery of results: one card per finished job (thumbnail, source, date, faces, seconds,
viewer link; failed jobs with their reason), as HTML.

Two pages are made from it: the daemon keeps ``outbox/index.html`` (opened from the share with no
server) and ``recond-web`` serves ``/gallery`` page by page. Light on purpose (no torch, no
numpy): the worker calls it after every publish.

The shared page hides what a result hides (issue 27): its mode follows the outbox's (who may
list the outbox may read it), and it lists no result (nor failed picture) that someone who
may read the page may not read, e.g. the 0700 result of a 0600 picture.
"""

from __future__ import annotations

import html
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from recond.logging import get_logger
from recond.names import shown_name, without_upload_id
from recond.pipeline.names import VIEWER_NAME, frame_name
from recond.pipeline.record import read_record
from recond.store import DONE, Job, Store

GALLERY_NAME = "index.html"  # outbox/index.html
THUMBNAIL_NAME = frame_name(0)  # the turntable's first frame
STATIC_LIMIT = 1000  # the file:// gallery lists this many newest results; /gallery pages through all
PAGE_CSS = Path(__file__).parents[1] / "web" / "assets" / "page.css"  # the web pages' style sheet too

log = get_logger("recond.outbox.gallery")


@dataclass(frozen=True)
class Entry:
    """What one gallery card shows."""

    job_id: int
    folder: str | None  # the result folder's name in the outbox (None for a failed job)
    source: str
    finished_at: float | None
    seconds: float | None
    faces: int | None
    thumbnail: bool
    error: str | None
    preset: str | None = None  # the preset it was made with (issue 25)


def entries(store: Store, outbox: Path, limit: int, offset: int = 0) -> list[Entry]:
    """The newest finished jobs as cards (each card reads at most its result's job.json)."""
    return [_entry(job, outbox) for job in store.finished(limit, offset)]


def gallery_mode(outbox: Path) -> int:
    """The shared page's mode: the outbox's read and write bits (never execute), and always
    readable and writable by recond itself."""
    return (stat.S_IMODE(os.stat(outbox).st_mode) & 0o666) | 0o600


def readable_by_page_readers(job: Job, outbox: Path, page_mode: int) -> bool:
    """May everyone who may read a page of ``page_mode`` read this job's result folder (or,
    failed, the picture kept in failed/)? One that is gone hides nothing any more."""
    if job.state == DONE and job.result_name:
        where, needed = outbox / job.result_name, 0o5  # a folder is read with r and x
    elif job.output:
        where, needed = Path(job.output), 0o4
    else:
        return True
    try:
        mode = stat.S_IMODE(os.stat(where).st_mode)
    except OSError:
        return True
    for shift in (3, 0):  # the group's bits, then everyone else's
        if (page_mode >> shift) & 0o4 and (mode >> shift) & needed != needed:
            return False
    return True


def _entry(job: Job, outbox: Path) -> Entry:
    seconds = (job.finished_at - job.started_at
               if job.finished_at and job.started_at else None)
    if job.state != DONE or not job.result_name:
        return Entry(job.id, None, job.source, job.finished_at, seconds, None, False, job.error,
                     job.preset)
    result_dir = outbox / job.result_name
    return Entry(job.id, job.result_name, job.source, job.finished_at, seconds, _faces(result_dir),
                 (result_dir / THUMBNAIL_NAME).is_file(), job.error, job.preset)


def _faces(result_dir: Path) -> int | None:
    return read_record(result_dir).get("faces")


def render_page(cards: list[Entry], results_href: str, viewer_file: str, title: str,
                summary: str = "", nav: str = "", pager: str = "") -> str:
    """A whole gallery page; links are ``results_href + folder + "/" + viewer_file``.

    The file:// gallery links ``<folder>/index.html`` (a folder URL shows no index there); the
    web one links ``/results/<folder>/``. ``nav`` and ``pager`` are trusted HTML.
    """
    items = "".join(_card(card, results_href, viewer_file) for card in cards)
    empty = "" if cards else '<p class="facts">No results yet.</p>'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)} · recond</title>\n"
        f"<style>\n{PAGE_CSS.read_text(encoding='utf-8')}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{html.escape(title)}</h1><nav>{nav}</nav></header>\n"
        f'<p class="facts">{html.escape(summary)}</p>\n'
        f'<ul class="gallery">{items}</ul>\n{empty}{pager}\n</main>\n</body>\n</html>\n'
    )


def _card(card: Entry, results_href: str, viewer_file: str) -> str:
    name = html.escape(shown_name(card.source))
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(card.finished_at)) if card.finished_at else ""
    if card.folder is None:
        return (f'<li class="card failed" data-job="{card.job_id}"><div class="no-thumb">failed</div>'
                f'<div class="meta"><span class="name">{name}</span><span class="facts">{when}</span>'
                f'<span class="error">{html.escape(without_upload_id(card.error or "", card.source))}'
                '</span></div></li>')
    folder = f"{results_href}{quote(card.folder)}/"
    facts = [when]
    if card.preset:
        facts.append(f"preset {card.preset}")
    if card.faces is not None:
        facts.append(f"{card.faces:,} faces")
    if card.seconds is not None:
        facts.append(f"{card.seconds:.0f} s")
    image = (f'<img src="{folder}{THUMBNAIL_NAME}" alt="" loading="lazy">' if card.thumbnail
             else '<div class="no-thumb"></div>')
    return (f'<li class="card" data-job="{card.job_id}"><a href="{folder}{viewer_file}">{image}</a>'
            f'<div class="meta"><a class="name" href="{folder}{viewer_file}">{name}</a>'
            f'<span class="facts">{" · ".join(facts)}</span></div></li>')


def write_gallery(outbox: Path, store: Store) -> Path | None:
    """Rewrite ``outbox/index.html`` atomically (temp file + rename); never raises.

    A gallery is a convenience: a full disk or a read-only share must not fail the job that
    was just published, so problems are logged and the old page stays.
    """
    target = outbox / GALLERY_NAME
    try:
        mode = gallery_mode(outbox)
        total = store.count_finished()
        finished = store.finished(STATIC_LIMIT)
        cards = [_entry(job, outbox) for job in finished if readable_by_page_readers(job, outbox, mode)]
        more = f"; the newest {STATIC_LIMIT} are shown" if total > STATIC_LIMIT else ""
        private = len(finished) - len(cards)
        hidden = f" ({private:,} private ones not listed)" if private else ""
        page = render_page(cards, "", VIEWER_NAME, "Results",
                           summary=f"{total:,} finished jobs, newest first{more}{hidden}.")
        descriptor, temporary = tempfile.mkstemp(dir=outbox, prefix=".index.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(page)
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except Exception as error:  # see the docstring: logged, never fatal
        log.warning("outbox gallery not written", path=str(target), error=str(error))
        return None
    return target
