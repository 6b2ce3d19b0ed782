"""Web uploads into the inbox, where the daemon's intake takes them like any dropped file.

Each file of a multipart request streams straight to a hidden name in ``inbox/web/`` (the intake
ignores dot-files), is checked by the pipeline's own rules (size, image header), and only when
every file of the request passed is each renamed to its upload name (names.py), whose upload id
is how a client finds its job before the daemon has made it. A refusal or a client that goes away removes every
temporary file, so nothing half-written is ever left in the inbox. A body that arrives too slowly
is refused (408), so tricklers cannot hold the upload slots.
"""

from __future__ import annotations

import os
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from recond.config import Settings
from recond.errors import InputError
from recond.inbox.intake import is_ignored
from recond.names import UPLOAD_FOLDER, upload_source
from recond.pipeline.image import check_size, is_picture_name, open_image
from recond.web.guards import declares_body

if TYPE_CHECKING:  # python-multipart declares its callback table for type checkers only
    from python_multipart.multipart import MultipartCallbacks

MAX_NAME_CHARS = 120
PRESET_FIELD = "preset"  # the form field naming the preset the pictures are made with (issue 25)
MAX_PRESET_BYTES = 64
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around each file, at most
RATE_GRACE_SECONDS = 5.0  # an upload's first seconds need no rate: connecting, a slow start
WINDOWS_FORBIDDEN = set('<>:"|?*')  # the inbox is often an SMB share that Windows clients browse


class UploadRefused(Exception):
    """An upload the server will not take: an HTTP status and one sentence for the client, and
    whether the client may still be sending the body (then the answer must not wait for it)."""

    def __init__(self, status: int, message: str, body_left: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.body_left = body_left


@dataclass(frozen=True)
class Upload:
    """One accepted file, now in the inbox under ``source``."""

    upload_id: str
    name: str
    source: str
    size: int


def check_name(name: str) -> str:
    """The client's file name, if it is a plain, visible name; else UploadRefused (400)."""
    problem = None
    if not name.strip():
        problem = "has no file name"
    elif "/" in name or "\\" in name or name in (".", ".."):
        problem = "is a path, not a file name (no /, \\ or ..)"
    elif name.startswith("."):
        problem = "is a hidden name (starts with a dot)"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"is longer than {MAX_NAME_CHARS} characters"
    elif any(unicodedata.category(char).startswith("C") for char in name):
        problem = "contains control or invisible characters"
    elif WINDOWS_FORBIDDEN & set(name):
        problem = "contains one of < > : \" | ? * (not allowed in names on the share)"
    elif is_ignored(PurePosixPath(upload_source("0" * 16, name))):
        problem = "ends like a temporary file (.part, .tmp, .crdownload), which the inbox ignores"
    if problem:
        raise UploadRefused(400, f"file name {name!r} {problem}")
    if not is_picture_name(name):  # the intake would leave it in the inbox, never a job
        raise UploadRefused(415, f"file name {name!r} does not end in a picture extension "
                                 "(.jpg, .png, .webp, ...); nothing was saved")
    return name


class _Receiver:
    """python-multipart callbacks: each file part goes to its own hidden file in the inbox."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings, self.folder = settings, folder
        self.accepted: list[tuple[Upload, Path]] = []
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._current: tuple[str, str, Path, BinaryIO] | None = None  # upload id, name, path, file
        self._size = 0
        self._field: bytearray | None = None  # the preset field's value while it arrives
        self.preset = ""

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]  # python-multipart caps a header's size

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"filename" not in options:  # a plain form field: only the preset's value is kept
            self._field = bytearray() if options.get(b"name") == PRESET_FIELD.encode() else None
            return
        if len(self.accepted) + 1 > self.settings.web_max_files:
            raise UploadRefused(413, f"more than {self.settings.web_max_files} files in one "
                                     "request (setting web_max_files)")
        name = check_name(options[b"filename"].decode("utf-8", "replace"))
        upload_id = secrets.token_hex(8)
        path = self.folder / f".{upload_id}-{name}.part"
        self._current, self._size = (upload_id, name, path, _create(path)), 0

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is not None:
            self._field += data[start:end]
            if len(self._field) > MAX_PRESET_BYTES:
                raise UploadRefused(400, "the preset field is longer than any preset's name")
        if self._current is None:
            return
        _, name, _, stream = self._current
        self._size += end - start
        if self._size > self.settings.max_file_bytes:
            raise UploadRefused(413, _refusal(name, self._size, self.settings))
        stream.write(data[start:end])

    def _part_end(self) -> None:
        if self._field is not None:
            self.preset, self._field = self._field.decode("utf-8", "replace").strip(), None
        if self._current is None:
            return
        upload_id, name, path, stream = self._current
        stream.close()
        self._current = None
        try:
            self._check_picture(name, path)
        except UploadRefused:
            path.unlink(missing_ok=True)
            raise
        source = upload_source(upload_id, name)  # under the preset's folder once publish knows it
        self.accepted.append((Upload(upload_id, name, source, self._size), path))

    def _check_picture(self, name: str, path: Path) -> None:
        try:
            check_size(name, self._size, self.settings.max_file_bytes)
            with path.open("rb") as stream:
                open_image(stream, name, self.settings.max_image_pixels, self._size)
        except InputError as error:
            status = 400 if self._size == 0 else 415
            raise UploadRefused(status, f"{error}; nothing was saved") from None

    def publish(self, inbox: Path) -> list[Upload]:
        """Rename every checked file to its final name: from now on the intake sees it."""
        if self._current is not None:
            raise UploadRefused(400, f"the request ended in the middle of {self._current[1]}; "
                                     "nothing was saved")
        if not self.accepted:
            raise UploadRefused(400, "the request holds no file (send multipart/form-data with "
                                     "one or more file fields, e.g. curl -F image=@photo.jpg)")
        preset = self.preset or None
        if preset is not None and preset not in self.settings.presets:
            known = ", ".join(sorted(self.settings.presets)) or "none are set"
            raise UploadRefused(400, f"no preset {preset!r} (presets: {known}); nothing was saved")
        if preset is not None:  # the preset's folder, as for a picture dropped into it
            (inbox / upload_source("0" * 16, "x", preset)).parent.mkdir(parents=True, exist_ok=True)
        uploads = [Upload(upload.upload_id, upload.name,
                          upload_source(upload.upload_id, upload.name, preset), upload.size)
                   for upload, _ in self.accepted]
        for upload, (_, path) in zip(uploads, self.accepted, strict=True):
            os.rename(path, inbox / upload.source)
        self.accepted = []
        return uploads

    def discard(self) -> None:
        """Remove everything this request wrote (a refusal, an error or a client gone away)."""
        if self._current is not None:
            self._current[3].close()
            self._current[2].unlink(missing_ok=True)
            self._current = None
        for _, path in self.accepted:
            path.unlink(missing_ok=True)
        self.accepted = []


def _create(path: Path) -> BinaryIO:
    """A new upload file. The daemon removes inbox/web/ once its last file has left, which can
    happen between this request's mkdir and its first file: then the folder is made again."""
    try:
        return path.open("xb")
    except FileNotFoundError:
        path.parent.mkdir(exist_ok=True)
        return path.open("xb")


def _refusal(name: str, size: int, settings: Settings) -> str:
    try:
        check_size(name, size, settings.max_file_bytes)
    except InputError as error:
        return f"{error}; nothing was saved"
    return f"{name} is too large; nothing was saved"


async def receive_uploads(request: Request, settings: Settings) -> list[Upload]:
    """Stream a multipart request's files into the inbox, all or none; raises UploadRefused.

    A client disconnecting raises starlette's ClientDisconnect after the files are removed.
    """
    body = _BodyClock(request, settings)
    receiver = None
    try:
        boundary, inbox = _check_request(request, settings)
        receiver = _Receiver(settings, inbox / UPLOAD_FOLDER)
        parser = MultipartParser(boundary, receiver.callbacks())
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        return receiver.publish(inbox)
    except MultipartParseError as error:
        raise UploadRefused(400, f"the request body is not valid multipart/form-data ({error}); "
                                 "nothing was saved", body_left=body.left()) from None
    except UploadRefused as refusal:
        refusal.body_left = body.left()
        raise
    except OSError as error:  # a full disk, a share gone read-only
        raise UploadRefused(507, f"the upload could not be saved in the inbox ({error.strerror}); "
                                 "nothing was kept", body_left=body.left()) from None
    finally:
        if receiver is not None:
            receiver.discard()


def _check_request(request: Request, settings: Settings) -> tuple[bytes, Path]:
    """What can be refused before the body is read: (the multipart boundary, the inbox)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadRefused(415, "send the pictures as multipart/form-data "
                                 "(e.g. curl -F image=@photo.jpg)")
    declared = request.headers.get("content-length")
    most = settings.web_max_files * (settings.max_file_bytes + MULTIPART_OVERHEAD)
    if declared and declared.isdigit() and int(declared) > most:
        raise UploadRefused(413, f"the request is {int(declared) / 1e6:.1f} MB, more than "
                                 f"{settings.web_max_files} files of at most "
                                 f"{settings.max_file_bytes / 1e6:.1f} MB (settings "
                                 "web_max_files, max_file_bytes); nothing was saved")
    inbox = settings.inbox.resolve()
    if not inbox.is_dir():  # never create it: on an unmounted share that would hide the mount
        raise UploadRefused(503, f"the inbox {inbox} is not there (a share that is down?); "
                                 "try again later")
    (inbox / UPLOAD_FOLDER).mkdir(exist_ok=True)
    return options[b"boundary"], inbox


class _BodyClock:
    """A request body that must arrive in time: within web_upload_seconds in all, and, after its
    first RATE_GRACE_SECONDS, at web_upload_min_rate bytes per second on average (the deadline
    moves on by a second for every web_upload_min_rate bytes, as Apache's mod_reqtimeout does).
    A client that trickles is refused with 408 instead of holding an upload slot."""

    def __init__(self, request: Request, settings: Settings) -> None:
        self.chunks = request.stream()
        self.settings = settings
        self.started = time.monotonic()
        self.received = 0
        self.asked = False  # a first read also answers "Expect: 100-continue" (uvicorn does)
        self.ended = False
        self.sent_unasked = declares_body(request.scope)

    def left(self) -> bool:
        """Whether the client may still be sending the body when it is refused now."""
        return not self.ended and (self.asked or self.sent_unasked)

    def __aiter__(self) -> _BodyClock:
        return self

    async def __anext__(self) -> bytes:
        self.asked = True
        total_deadline = self.started + self.settings.web_upload_seconds
        rate = self.settings.web_upload_min_rate
        rate_deadline = (self.started + RATE_GRACE_SECONDS + self.received / rate if rate
                         else total_deadline)
        try:
            with anyio.fail_after(max(0.0, min(total_deadline, rate_deadline) - time.monotonic())):
                chunk = await self.chunks.__anext__()
        except StopAsyncIteration:
            self.ended = True
            raise
        except TimeoutError:
            raise UploadRefused(408, self._too_slow(rate_deadline < total_deadline)) from None
        self.received += len(chunk)
        return chunk

    def _too_slow(self, under_rate: bool) -> str:
        if under_rate:
            return (f"the upload arrived too slowly ({self.received:,} bytes in "
                    f"{time.monotonic() - self.started:.0f} s, under "
                    f"{self.settings.web_upload_min_rate:,} bytes/s: setting web_upload_min_rate); "
                    "nothing was saved")
        return (f"the upload took longer than {self.settings.web_upload_seconds:g} s (setting "
                "web_upload_seconds); nothing was saved")
