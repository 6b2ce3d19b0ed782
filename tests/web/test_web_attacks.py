"""Hostile and broken requests against a real `recond-web` process, and attacks on it from the
same machine (issue 17): each is refused with a clear 4xx and leaves nothing in the inbox,
nothing is read outside the outbox, and the token and the bind rule hold. Raw sockets send wrong
Host headers, slow headers, trickled and refused uploads and piles of event streams; real
headless Chromium plays a cross-site page posting into the inbox and a DNS rebinding. No daemon
is needed: nothing here may ever become a job. The attacks run against a server whose limits
are set small (``limited_web``), so each is over in seconds.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers.browser import CHROMIUM
from helpers.web_server import LOCAL, REPO, WebServer, free_port
from PIL import Image

from recond.config import Settings, SettingsError, load_settings
from recond.web.app import create_app
from recond.web.server import require_safe_bind

MAX_FILE_BYTES = 300_000
TOKEN = "s3cret-token-for-tests"


def picture(seed: int = 0, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (seed % 256, 80, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_config(root: Path, **values: object) -> Path:
    settings = {"inbox": str(root / "inbox"), "outbox": str(root / "outbox"),
                "state_dir": str(root / "state"), "max_file_bytes": MAX_FILE_BYTES,
                "web_port": free_port(), "web_max_files": 3, "web_max_uploads": 2, **values}
    Path(settings["inbox"]).mkdir(parents=True, exist_ok=True)
    config = root / "recond.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return config


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    root = tmp_path_factory.mktemp("web_security")
    (root / "outbox" / "20260101-000000_chair").mkdir(parents=True)
    (root / "outbox" / "20260101-000000_chair" / "index.html").write_text("<p>viewer</p>")
    (root / "secret.txt").write_text("outside the outbox")
    (root / "outbox" / "escape").symlink_to(root)  # a symlink out of the outbox
    server = WebServer(write_config(root), root / "web.stderr")
    yield server
    server.stop()


def inbox_files(server: WebServer) -> list[str]:
    inbox = server.config.parent / "inbox"
    return sorted(str(path.relative_to(inbox)) for path in inbox.rglob("*") if path.is_file())


@pytest.fixture
def empty_inbox(web: WebServer) -> Iterator[WebServer]:
    for name in inbox_files(web):
        (web.config.parent / "inbox" / name).unlink()
    yield web
    assert inbox_files(web) == []  # whatever the test sent, nothing was left behind


@pytest.mark.parametrize("name, words", [
    ("../evil.png", "is a path"), ("/etc/evil.png", "is a path"), ("..", "is a path"),
    ("sub/dir.png", "is a path"), (".hidden.png", "hidden"), ("bell\x07.png", "control"),
    ("what?.png", "not allowed"), ("upload.png.part", "temporary"), ("x" * 200 + ".png", "longer"),
])
def test_paths_and_odd_names_are_refused(empty_inbox: WebServer, name: str, words: str) -> None:
    status, detail = post_raw(empty_inbox, name.encode(), picture())
    assert status == 400 and words in detail, detail
    assert not (empty_inbox.config.parent / "evil.png").exists()


def post_raw(server: WebServer, filename: bytes, data: bytes) -> tuple[int, str]:
    """POST one file with its name byte for byte (HTTP clients escape odd characters)."""
    boundary = b"recondtestboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="'
            + filename + b'"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n--" + boundary
            + b"--\r\n")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/api/jobs", body=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"})
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())["detail"]


def test_oversize_non_image_and_empty_files_are_refused_with_reasons(empty_inbox: WebServer) -> None:
    with empty_inbox.client() as client:
        oversize = client.post("/api/jobs", files={"image": ("big.png", b"\x89PNG" + os.urandom(
            MAX_FILE_BYTES), "image/png")})
        text = client.post("/api/jobs", files={"image": ("notes.jpg", b"just some text\n" * 50,
                                                         "image/jpeg")})
        empty = client.post("/api/jobs", files={"image": ("empty.png", b"", "image/png")})
        not_multipart = client.post("/api/jobs", content=picture(), headers={"content-type": "image/png"})
        no_file = client.post("/api/jobs", data={"comment": "no picture"}, files={})
    assert oversize.status_code == 413 and "max_file_bytes" in oversize.json()["detail"]
    assert text.status_code == 415 and "not an image format" in text.json()["detail"]
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert not_multipart.status_code == 415 and "multipart" in not_multipart.json()["detail"]
    assert no_file.status_code in (400, 415)
    with empty_inbox.client() as client:
        misnamed = client.post("/api/jobs", files={"image": ("photo.txt", picture(), "text/plain")})
    assert misnamed.status_code == 415 and "picture extension" in misnamed.json()["detail"]


def test_an_endless_part_header_is_refused(empty_inbox: WebServer) -> None:
    status, detail = post_raw(empty_inbox, b"a" * 20_000 + b".png", picture())
    assert status == 400 and "header size" in detail  # python-multipart's own limit


def test_one_bad_file_refuses_the_whole_request(empty_inbox: WebServer) -> None:
    files = [("image", ("good.png", picture(1), "image/png")),
             ("image", ("bad.png", b"GIF89a-but-not-really", "image/png"))]
    with empty_inbox.client() as client:
        answer = client.post("/api/jobs", files=files)
        too_many = client.post("/api/jobs", files=[("image", (f"p{i}.png", picture(i), "image/png"))
                                                   for i in range(4)])
    assert answer.status_code == 415 and "bad.png" in answer.json()["detail"]
    assert too_many.status_code == 413 and "web_max_files" in too_many.json()["detail"]


def test_a_good_upload_lands_under_its_upload_id_and_can_be_followed(web: WebServer) -> None:
    with web.client() as client:
        answer = client.post("/api/jobs", files={"image": ("chair photo.png", picture(7), "image/png")})
        assert answer.status_code == 202, answer.text
        upload = answer.json()["uploads"][0]
        assert answer.headers["location"] == upload["status_url"]
        assert inbox_files(web) == [f"web/{upload['upload_id']}-chair photo.png"]
        assert (web.config.parent / "inbox" / upload["source"]).read_bytes() == picture(7)
        waiting = client.get(upload["status_url"]).json()
        assert waiting == {"upload_id": upload["upload_id"], "state": "waiting", "job": None}
        assert client.get("/api/uploads/0123456789abcdef").status_code == 404
        assert client.get("/api/uploads/..%2F..%2Fetc").status_code in (400, 404)
    (web.config.parent / "inbox" / upload["source"]).unlink()


def raw_upload_start(server: WebServer, name: str, declared: int, sent: bytes) -> socket.socket:
    """A client that declares ``declared`` body bytes and sends only the first ones."""
    boundary = "recondtestboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    connection = socket.create_connection(("127.0.0.1", server.port))
    connection.sendall((f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
                        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
                       + head + sent)
    return connection


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def test_client_disconnecting_mid_upload_leaves_nothing(empty_inbox: WebServer) -> None:
    data = picture(3, size=512)
    connection = raw_upload_start(empty_inbox, "half.png", declared=len(data) + 500, sent=data[:2000])
    wait_for(lambda: len(inbox_files(empty_inbox)) == 1)  # streaming into a hidden name ...
    assert inbox_files(empty_inbox)[0].startswith("web/.")
    connection.close()  # ... and the client goes away
    wait_for(lambda: inbox_files(empty_inbox) == [])


def test_uploads_beyond_the_concurrency_limit_are_told_to_retry(empty_inbox: WebServer) -> None:
    data = picture(4, size=256)
    held = [raw_upload_start(empty_inbox, f"slow{i}.png", len(data) + 500, data[:1000])
            for i in range(2)]  # web_max_uploads = 2
    try:
        wait_for(lambda: len(inbox_files(empty_inbox)) == 2)
        with empty_inbox.client() as client:
            answer = client.post("/api/jobs", files={"image": ("third.png", picture(5), "image/png")})
        assert answer.status_code == 429 and "web_max_uploads" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "1"
    finally:
        for connection in held:
            connection.close()
    wait_for(lambda: inbox_files(empty_inbox) == [])


@pytest.mark.parametrize("path", [
    "/results/../secret.txt", "/results/../../etc/passwd", "/results/%2e%2e/secret.txt",
    "/results/20260101-000000_chair/../../secret.txt", "/results/20260101-000000_chair/..%2f..%2fsecret.txt",
    "/results/escape/secret.txt", "/results/.hidden/index.html", "/results//etc/passwd",
])
def test_result_paths_never_leave_the_outbox(web: WebServer, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    connection.request("GET", path)  # sent as is: no client-side clean-up of the dots
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status in (400, 404) and b"outside the outbox" not in body and b"root:" not in body


def test_result_folder_is_served_also_at_the_seeds_addresses(web: WebServer) -> None:
    with web.client() as client:
        page = client.get("/results/20260101-000000_chair/")
        seed_page = client.get("/result/20260101-000000_chair")
        viewer = client.get("/results/20260101-000000_chair/index.html")
        seed_file = client.get("/output/20260101-000000_chair/index.html")
        redirect = client.get("/results/20260101-000000_chair")
    assert page.status_code == 200 and seed_page.text == page.text
    assert '<iframe class="card viewer" src="/results/20260101-000000_chair/index.html"' in page.text
    assert 'href="/gallery"' in page.text and 'href="/"' in page.text  # the way back
    assert viewer.text == seed_file.text == "<p>viewer</p>"
    assert redirect.status_code == 307 and redirect.headers["location"] == "/results/20260101-000000_chair/"


def test_api_docs_need_no_internet(web: WebServer) -> None:
    with web.client() as client:
        docs = client.get("/docs").text
        schema = client.get("/openapi.json").json()
        assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
        assert client.get("/redoc").status_code == 404  # dropped: its bundle fetches a CDN logo
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/events",
            "/api/status", "/metrics", "/healthz"} <= set(schema["paths"])


@pytest.mark.parametrize("path", ["/", "/healthz", "/gallery", "/api/jobs", "/api/status", "/metrics",
                                  "/docs", "/openapi.json", "/assets/page.css", "/favicon.ico",
                                  "/results/20260101-000000_chair/", "/result/20260101-000000_chair",
                                  "/output/20260101-000000_chair/index.html", "/api/events"])
def test_head_is_answered_everywhere(web: WebServer, path: str) -> None:
    """HEAD is GET without a body, event streams included (they answer their headers and end)."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    connection.request("HEAD", path)
    answer = connection.getresponse()
    assert answer.status == 200 and answer.read() == b""
    connection.request("GET", path if path != "/api/events" else "/healthz")  # the connection goes on
    assert connection.getresponse().status == 200


def test_the_openapi_document_is_valid_and_says_what_the_api_answers(web: WebServer) -> None:
    """Each answer below is one the document lists for its operation, with its media type, and
    its JSON body fits the schema given for it."""
    from openapi_schema_validator import OAS31Validator
    from openapi_spec_validator import validate

    with web.client() as client:
        document = client.get("/openapi.json").json()
        validate(document)
        good = {"image": ("doc.png", picture(31), "image/png")}
        upload = client.post("/api/jobs", files=good)
        answers = [
            ("post", "/api/jobs", upload),
            ("post", "/", client.post("/", files={"image": ("seed.png", picture(32), "image/png")})),
            ("post", "/api/jobs", client.post("/api/jobs", files={"image": ("t.jpg", b"text", "image/jpeg")})),
            ("post", "/api/jobs", client.post("/api/jobs", files={"image": ("e.png", b"", "image/png")})),
            ("post", "/api/jobs", client.post("/api/jobs", content=b"x", headers={"content-type": "image/png"})),
            ("post", "/api/jobs", client.post("/api/jobs", files=good, headers={"origin": "https://evil.example"})),
            ("get", "/api/uploads/{upload_id}", client.get(upload.json()["uploads"][0]["status_url"])),
            ("get", "/api/uploads/{upload_id}", client.get("/api/uploads/nothex")),
            ("get", "/api/uploads/{upload_id}", client.get("/api/uploads/0123456789abcdef")),
            ("get", "/api/uploads/{upload_id}/events", client.get("/api/uploads/0123456789abcdef/events")),
            ("get", "/progress/{upload_or_job_id}", client.get("/progress/0123456789abcdef")),
            ("get", "/progress/{upload_or_job_id}", client.get("/progress/not-an-id")),
            ("get", "/progress/{upload_or_job_id}", client.get("/progress/999")),
            ("get", "/api/jobs", client.get("/api/jobs")),
            ("get", "/api/jobs/{job_id}", client.get("/api/jobs/999")),
            ("get", "/api/jobs/{job_id}/events", client.get("/api/jobs/999/events")),
            ("get", "/api/status", client.get("/api/status")),
            ("get", "/metrics", client.get("/metrics")),
            ("get", "/healthz", client.get("/healthz")),
        ]
        with client.stream("GET", "/api/events") as stream:
            answers.append(("get", "/api/events", stream))
    for upload_answer in (answers[0][2], answers[1][2]):
        for accepted in upload_answer.json()["uploads"]:
            (web.config.parent / "inbox" / accepted["source"]).unlink()
    statuses = set()
    for method, path, answer in answers:
        documented = document["paths"][path][method]["responses"]
        assert str(answer.status_code) in documented, (method, path, answer.status_code)
        statuses.add(answer.status_code)
        content = documented[str(answer.status_code)].get("content", {})
        media_type = answer.headers["content-type"].split(";")[0]
        assert media_type in content, (method, path, answer.status_code, media_type, list(content))
        if media_type == "application/json":
            schema = {**content[media_type]["schema"], "components": document["components"]}
            OAS31Validator(schema).validate(answer.json())
    assert statuses == {200, 202, 400, 403, 404, 415}  # each kind of answer was seen


def test_with_a_token_every_request_but_healthz_needs_it(tmp_path: Path) -> None:
    server = WebServer(write_config(tmp_path, web_token=TOKEN), tmp_path / "web.stderr", token=TOKEN)
    try:
        anonymous = httpx.Client(base_url=server.url, timeout=30)
        assert anonymous.get("/healthz").status_code == 200
        for path in ("/", "/gallery", "/api/jobs", "/api/status", "/metrics", "/docs", "/assets/page.css"):
            refused = anonymous.get(path)
            assert refused.status_code == 401 and "Bearer" in refused.json()["detail"], path
        for scheme in ("bearer", "BEARER", "Bearer"):  # the scheme is case-insensitive (RFC 9110)
            assert anonymous.get("/api/jobs", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
        for wrong in (f"Basic {TOKEN}", f"Bearer{TOKEN}", TOKEN, f"Bearer {TOKEN}x"):
            assert anonymous.get("/api/jobs", headers={"Authorization": wrong}).status_code == 401
        upload = anonymous.post("/api/jobs", files={"image": ("a.png", picture(), "image/png")})
        wrong = anonymous.get("/api/jobs", headers={"Authorization": "Bearer wrong-token-0000000"})
        assert upload.status_code == 401 and wrong.status_code == 401
        assert inbox_files(server) == []
        with server.client() as client:
            assert client.get("/api/jobs").json() == []
        anonymous.close()
    finally:
        server.stop()


def test_an_open_bind_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, web_host="0.0.0.0")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECOND_")}
    result = subprocess.run([sys.executable, "-m", "recond.web.server", "--config", str(config)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "web_token" in result.stderr and "0.0.0.0" in result.stderr


def app_settings(tmp_path: Path, **values: object) -> Settings:
    return load_settings(write_config(tmp_path, **values))


def test_a_bind_to_every_address_answers_only_the_listed_host_names(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="web_allowed_hosts"):
        require_safe_bind(app_settings(tmp_path, web_host="0.0.0.0", web_token=TOKEN))
    settings = app_settings(tmp_path, web_host="0.0.0.0", web_token=TOKEN,
                            web_allowed_hosts=["recon.example", "*.lan.example"])
    require_safe_bind(settings)
    with TestClient(create_app(settings), base_url="http://recon.example") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"host": "box.lan.example:8765"}).status_code == 200
        assert client.get("/healthz", headers={"host": "127.0.0.1"}).status_code == 400
        assert client.get("/healthz", headers={"host": "evil.example"}).status_code == 400


def test_cors_is_off_unless_origins_are_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(app_settings(tmp_path)), base_url=LOCAL) as client:
        assert "access-control-allow-origin" not in client.get("/healthz", headers=preflight).headers
        assert client.options("/api/jobs", headers=preflight).status_code == 405
    monkeypatch.setenv("RECOND_WEB_CORS_ORIGINS", "https://app.example, https://other.example")
    settings = app_settings(tmp_path, web_token=TOKEN)
    assert settings.web_cors_origins == ["https://app.example", "https://other.example"]
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        allowed = client.options("/api/jobs", headers=preflight)  # preflights carry no token
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_web_settings_refuse_bad_values_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="web_token.*RECOND_WEB_TOKEN"):
        app_settings(tmp_path, web_token="short")
    with pytest.raises(SettingsError, match="web_port"):
        app_settings(tmp_path, web_port=70000)
    for host in ("recon.example.com:443", "https://recon.example.com", "re*con.example.com"):
        with pytest.raises(SettingsError, match="web_allowed_hosts.*without port"):
            app_settings(tmp_path, web_allowed_hosts=[host])


def test_a_missing_inbox_is_never_created_by_an_upload(tmp_path: Path) -> None:
    settings = app_settings(tmp_path)
    settings.inbox.rmdir()  # e.g. the share it lives on is not mounted
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        answer = client.post("/api/jobs", files={"image": ("a.png", picture(), "image/png")})
    assert answer.status_code == 503 and "not there" in answer.json()["detail"]
    assert not settings.inbox.exists()


def test_the_web_process_never_imports_the_model_stack(tmp_path: Path) -> None:
    """A fresh process builds the whole app and serves a page; none of the heavy modules load."""
    from helpers.light_imports import HEAVY_MODULES

    script = (f"import json, sys\nfrom fastapi.testclient import TestClient\n"
              f"from recond.config import load_settings\nfrom recond.web.app import create_app\n"
              f"with TestClient(create_app(load_settings(sys.argv[1])), base_url='http://127.0.0.1') as client:\n"
              f"    assert client.get('/gallery').status_code == 200\n"
              f"print(json.dumps([name for name in {HEAVY_MODULES!r} if name in sys.modules]))\n")
    result = subprocess.run([sys.executable, "-c", script, str(write_config(tmp_path))], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_upload_folder_removed_by_the_daemon_mid_request_is_made_again(tmp_path: Path) -> None:
    """The daemon removes an emptied inbox/web/ (issue 8); an upload that created it a moment
    earlier still gets its file, rather than a 500."""
    from recond.web.uploads import _create

    folder = tmp_path / "inbox" / "web"
    folder.mkdir(parents=True)
    folder.rmdir()  # what recond's clean-up does between the request's mkdir and its first file
    with _create(folder / ".abc-chair.png.part") as stream:
        stream.write(b"bytes")
    assert (folder / ".abc-chair.png.part").read_bytes() == b"bytes"


# Attacks from the same machine, against a server with small limits.

BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LIMITS = {"web_header_seconds": 1.0, "web_upload_seconds": 7.0, "web_upload_min_rate": 20_000,
          "max_file_bytes": 2_000_000, "web_max_uploads": 2, "web_max_event_streams": 6,
          "web_max_event_streams_per_client": 4, "web_allowed_hosts": ["proxy.example"]}
BOUNDARY = "attackboundary"


@pytest.fixture(scope="module")
def limited_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    root = tmp_path_factory.mktemp("web_attacks")
    server = WebServer(write_config(root, **LIMITS), root / "web.stderr")
    yield server
    server.stop()


def connect(server: WebServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=20,
                                    source_address=(source, 0))


def answer_of(connection: socket.socket) -> tuple[int, bytes]:
    """The status and the server's answer: its head, and its body when it declares a length."""
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < declared:
        data = connection.recv(65536)
        assert data, f"connection closed before an answer: {received!r}"
        received += data
        head = received.partition(b"\r\n\r\n")[0].lower()
        declared = int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) if b"content-length: " in head else 0
    return int(received.split(b" ", 2)[1]), received


def ask(server: WebServer, request: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    with connect(server, source) as connection:
        connection.sendall(request)
        return answer_of(connection)


def upload_head(name: str, declared: int | None) -> bytes:
    """A multipart POST's headers and the start of its one file part (chunked when undeclared)."""
    length = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    if declared is None:
        part = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n{length}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + part


def test_only_known_host_names_are_answered(limited_web: WebServer) -> None:
    """A DNS-rebinding page reaches us as Host: evil.example; only our names are answered."""
    for host in (f"127.0.0.1:{limited_web.port}", f"localhost:{limited_web.port}", f"[::1]:{limited_web.port}", "proxy.example"):
        status, _ = ask(limited_web, f"GET /api/jobs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 200, host
    for host in (f"evil.example:{limited_web.port}", "127.0.0.1.evil.example", "localhost.", "proxy.example.evil"):
        status, head = ask(limited_web, f"GET /api/jobs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 400 and b"Invalid host header" in head, host
    status, _ = ask(limited_web, b"GET /api/jobs HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
    assert status == 400
    status, _ = ask(limited_web, b"POST /api/jobs HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n")
    assert status == 400


@pytest.mark.parametrize("headers, status", [
    ("Origin: https://evil.example\r\n", 403), ("Origin: null\r\n", 403),
    ("Sec-Fetch-Site: cross-site\r\n", 403), ("Sec-Fetch-Site: same-site\r\n", 403),
    ("Origin: http://127.0.0.1:{port}\r\nSec-Fetch-Site: same-origin\r\n", 415),
    ("Sec-Fetch-Site: none\r\n", 415), ("", 415),  # typed in, or not a browser (curl)
])
def test_writes_from_other_sites_are_refused(limited_web: WebServer, headers: str, status: int) -> None:
    """415 is the answer to this body (not multipart) once the request is let through."""
    request = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{limited_web.port}\r\n{headers.format(port=limited_web.port)}"
               "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert ask(limited_web, request.encode())[0] == status


def test_slow_request_headers_are_cut_off(limited_web: WebServer) -> None:
    with connect(limited_web) as connection:
        connection.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed_after = None
        for line in range(40):  # one header line every 0.2 s: it would never end
            try:
                connection.sendall(f"X-Slow-{line}: y\r\n".encode())
                if connection.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed_after = time.monotonic() - started
                    break
            except BlockingIOError:
                pass
            except OSError:  # reset: the server closed it
                closed_after = time.monotonic() - started
                break
            time.sleep(0.2)
    assert closed_after is not None and closed_after < 1.0 + 1.0, closed_after  # web_header_seconds
    status, _ = ask(limited_web, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # others still served
    assert status == 200


def trickle(server: WebServer, bytes_per_second: float, result: dict[str, object]) -> None:
    """Upload a 1 MB picture at ``bytes_per_second`` until the server answers; note when."""
    with connect(server) as connection:
        connection.sendall(upload_head("slow.png", declared=1_000_000))
        started = time.monotonic()
        connection.settimeout(0.05)
        chunk = b"x" * max(1, int(bytes_per_second / 10))
        while time.monotonic() - started < 30:
            try:
                status, head = answer_of(connection)
                result.update(status=status, head=head, after=time.monotonic() - started)
                return
            except TimeoutError:
                connection.sendall(chunk)
                time.sleep(0.05)


def test_trickling_uploads_lose_their_slot(limited_web: WebServer) -> None:
    """Two slow clients hold both upload slots (web_max_uploads = 2) only until the rate or the
    time limit cuts them: 10 B/s goes after the first 5 s, 30 kB/s (above web_upload_min_rate)
    at web_upload_seconds = 7; then an ordinary upload gets through."""
    crawling: dict[str, object] = {}
    steady: dict[str, object] = {}
    threads = [threading.Thread(target=trickle, args=(limited_web, 10, crawling)),
               threading.Thread(target=trickle, args=(limited_web, 30_000, steady))]
    for thread in threads:
        thread.start()
    time.sleep(1)
    with limited_web.client() as client:
        assert client.post("/api/jobs", files={"image": ("c.png", picture(), "image/png")}).status_code == 429
    for thread in threads:
        thread.join()
    assert crawling["status"] == 408 and b"too slowly" in crawling["head"], crawling
    assert 4.5 < crawling["after"] < 7, crawling  # RATE_GRACE_SECONDS, then 10 B/s is far too slow
    assert steady["status"] == 408 and b"web_upload_seconds" in steady["head"], steady
    assert 6.5 < steady["after"] < 8.5, steady
    with limited_web.client() as client:
        answer = client.post("/api/jobs", files={"image": ("ok.png", picture(9), "image/png")})
    assert answer.status_code == 202, answer.text
    (limited_web.config.parent / "inbox" / answer.json()["uploads"][0]["source"]).unlink()
    assert inbox_files(limited_web) == []


def test_a_refused_part_is_answered_while_the_client_keeps_sending(limited_web: WebServer) -> None:
    """A chunked upload of notes.txt: the 415 comes at once, not when the client stops, and the
    server reads the rest for seconds, not gigabytes."""
    sent = 0
    sender_error: list[BaseException] = []
    with connect(limited_web) as connection:
        connection.sendall(upload_head("notes.txt", declared=None))
        started = time.monotonic()

        def keep_sending() -> None:
            nonlocal sent
            chunk = b"10000\r\n" + b"n" * 0x10000 + b"\r\n"
            try:
                while time.monotonic() - started < 20:
                    connection.sendall(chunk)
                    sent += len(chunk)
                    time.sleep(0.005)
            except OSError as error:  # the server closed the connection
                sender_error.append(error)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        status, head = answer_of(connection)
        answered_after = time.monotonic() - started
        sender.join()
    assert status == 415 and b"picture extension" in head
    assert answered_after < 3, answered_after
    assert sender_error and time.monotonic() - started < 10  # cut after the lingering seconds
    assert sent < 200_000_000, sent
    assert inbox_files(limited_web) == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("name, size, status", [("notes.txt", 1_500_000, 415), ("huge.png", 7_000_000, 413)])
def test_curl_waiting_for_100_continue_gets_the_refusal(limited_web: WebServer, tmp_path: Path, name: str,
                                                        size: int, status: int) -> None:
    """curl sends "Expect: 100-continue" before a body over 1 MB: refused after the go-ahead
    (a bad part) or before it (declared too large), it gets the answer at once either way."""
    (tmp_path / name).write_bytes(b"n" * size)
    started = time.monotonic()
    result = subprocess.run(["curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
                             "-F", f"image=@{name}", f"{limited_web.url}/api/jobs"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == str(status), result
    assert time.monotonic() - started < 5
    assert inbox_files(limited_web) == []


def test_event_streams_are_limited_per_client_and_in_all(limited_web: WebServer) -> None:
    request = b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    held = []
    try:
        def hold(source: str) -> None:
            held.append(connect(limited_web, source))
            held[-1].sendall(request)
            assert answer_of(held[-1])[0] == 200

        for _ in range(4):
            hold("127.0.0.1")
        status, head = ask(limited_web, request, "127.0.0.1")
        assert status == 429 and b"web_max_event_streams_per_client" in head
        for _ in range(2):
            hold("127.0.0.2")
        status, head = ask(limited_web, request, "127.0.0.3")
        assert status == 429 and b"6 event streams are open" in head and b"retry-after: 5" in head.lower()
        held.pop().close()  # a stream that ends gives its place back
        status = 0
        deadline = time.monotonic() + 5
        while status != 200 and time.monotonic() < deadline:
            connection = connect(limited_web, "127.0.0.3")
            connection.sendall(request)
            status = answer_of(connection)[0]
            held.append(connection)
        assert status == 200
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 5  # the server notices the closed streams within moments
    while ask(limited_web, request, "127.0.0.9")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def read_until_closed(connection: socket.socket, limit: float) -> bytes:
    connection.settimeout(limit)
    received = b""
    while data := connection.recv(65536):
        received += data
    return received


def test_an_unknown_upload_ends_its_stream_with_an_error(limited_web: WebServer) -> None:
    for path in ("/api/uploads/0123456789abcdef/events", "/progress/0123456789abcdef"):
        with connect(limited_web) as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            stream = read_until_closed(connection, 10)
        assert b" 200 " in stream.split(b"\r\n")[0] and b"event: error" in stream, stream
        assert b"no upload 0123456789abcdef" in stream


def test_an_upload_whose_file_leaves_the_inbox_ends_its_stream(limited_web: WebServer) -> None:
    with limited_web.client() as client:
        upload = client.post("/api/jobs", files={"image": ("gone.png", picture(11), "image/png")}).json()
    upload = upload["uploads"][0]
    with connect(limited_web) as connection:
        connection.sendall(f"GET {upload['events_url']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: close\r\n\r\n".encode())
        connection.settimeout(10)
        opening = b""
        while b"event: waiting" not in opening:
            opening += connection.recv(65536)
        (limited_web.config.parent / "inbox" / upload["source"]).unlink()  # e.g. deleted from the share
        stream = read_until_closed(connection, 10)  # RECHECK_SECONDS later
    assert b"event: error" in stream and b"left the inbox" in stream


# A cross-site page: it uploads a picture with fetch(mode: "no-cors") and with an auto-submitted
# multipart form, as any website a user visits could.
ATTACK_PAGE = """<!DOCTYPE html><html><body>
<iframe name="sink"></iframe>
<form id="form" method="post" enctype="multipart/form-data" target="sink" action="TARGET/api/jobs">
<input type="file" name="image" id="file"></form>
<script>
const bytes = Uint8Array.from(atob("PICTURE"), c => c.charCodeAt(0));
const data = new FormData();
data.append("image", new File([bytes], "from-fetch.png", {type: "image/png"}));
window.fetched = fetch("TARGET/api/jobs", {method: "POST", mode: "no-cors", body: data})
  .then(() => "sent", (error) => String(error));
const files = new DataTransfer();
files.items.add(new File([bytes], "from-form.png", {type: "image/png"}));
document.getElementById("file").files = files.files;
document.getElementById("form").submit();
</script></body></html>"""


class AttackSite:
    """A second web server on another port of this machine, serving the attacking page."""

    def __init__(self) -> None:
        self.target = ""  # the recond-web to attack, set before the page is opened
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                page = ATTACK_PAGE.replace("TARGET", site.target).replace(
                    "PICTURE", base64.b64encode(picture(21)).decode()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attack_from_browser(target: WebServer, site: AttackSite) -> str:
    """Open the attacking page in headless Chromium; the form's answer, as the iframe's navigation
    received it. Waiting for that navigation's response is what makes this deterministic: a poll
    of the iframe's content() failed now and then while the frame was still navigating."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        try:
            page = browser.new_page()
            with page.expect_response(lambda response: response.request.is_navigation_request()
                                      and response.url == f"{site.target}/api/jobs", timeout=20_000) as answer:
                page.goto(site.origin)
            assert page.evaluate("window.fetched") == "sent"  # the browser did send it
            response = answer.value
            assert response.frame.name == "sink"
            return response.text()
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_page_of_another_site_cannot_upload(limited_web: WebServer) -> None:
    site = AttackSite()
    site.target = limited_web.url
    try:
        form_answer = attack_from_browser(limited_web, site)
    finally:
        site.close()
    assert f"a page on {site.origin} may not send this request" in form_answer
    time.sleep(0.5)
    assert inbox_files(limited_web) == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_configured_cors_origin_may_upload(tmp_path: Path) -> None:
    """The same page, from an origin in web_cors_origins, gets both its files in."""
    site = AttackSite()
    target = WebServer(write_config(tmp_path, web_cors_origins=[site.origin]), tmp_path / "web.stderr")
    site.target = target.url
    try:
        form_answer = attack_from_browser(target, site)
        deadline = time.monotonic() + 10
        while len(inbox_files(target)) < 2:
            assert time.monotonic() < deadline, inbox_files(target)
            time.sleep(0.1)
    finally:
        site.close()
        target.stop()
    assert '"uploads"' in form_answer
    assert sorted(name.split("-", 1)[1] for name in inbox_files(target)) == ["from-fetch.png",
                                                                             "from-form.png"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_rebinding_page_reads_nothing(limited_web: WebServer) -> None:
    """evil.example resolves to 127.0.0.1 (as after a DNS rebinding): its page and its own
    same-origin requests reach recond-web, which answers none of them."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            *BROWSER_FLAGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"])
        try:
            page = browser.new_page()
            answer = page.goto(f"http://evil.example:{limited_web.port}/")
            assert answer is not None and answer.status == 400
            statuses = page.evaluate("""async () => Promise.all(
                ['/api/jobs', '/api/status', '/gallery'].map(path => fetch(path).then(r => r.status)))""")
            assert statuses == [400, 400, 400]
            upload = page.evaluate("""async (picture) => {
                const data = new FormData();
                data.append('image', new File([Uint8Array.from(atob(picture), c => c.charCodeAt(0))], 'r.png'));
                return (await fetch('/api/jobs', {method: 'POST', body: data})).status; }""",
                                   base64.b64encode(picture(22)).decode())
            assert upload == 400
            assert page.goto(f"http://localhost:{limited_web.port}/gallery").status == 200  # our own name works
        finally:
            browser.close()
    assert inbox_files(limited_web) == []
