"""Hostile and broken requests against a real `recond-web` process: each is refused with a clear
4xx and leaves nothing in the inbox, nothing is read outside the outbox, and the token and the
bind rule hold. No daemon is needed: nothing here may ever become a job.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from recond.config import Settings, SettingsError, load_settings
from recond.web.app import create_app
from recond.web.server import require_safe_bind
from helpers.web_server import LOCAL, REPO, WebServer, free_port

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
