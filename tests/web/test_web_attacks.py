"""Attacks on a real `recond-web` from the same machine (issue 17): raw sockets for wrong Host
headers, slow headers, trickled and refused uploads and piles of event streams; real headless
Chromium for a cross-site page posting into the inbox and for DNS rebinding. The limits are set
small here so each attack is over in seconds. No daemon: nothing here may become a job.
"""

from __future__ import annotations

import base64
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_web_security import inbox_files, picture, write_config
from helpers.web_server import WebServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LIMITS = {"web_header_seconds": 1.0, "web_upload_seconds": 7.0, "web_upload_min_rate": 20_000,
          "max_file_bytes": 2_000_000, "web_max_uploads": 2, "web_max_event_streams": 6,
          "web_max_event_streams_per_client": 4, "web_allowed_hosts": ["proxy.example"]}
BOUNDARY = "attackboundary"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
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


def test_only_known_host_names_are_answered(web: WebServer) -> None:
    """A DNS-rebinding page reaches us as Host: evil.example; only our names are answered."""
    for host in (f"127.0.0.1:{web.port}", f"localhost:{web.port}", f"[::1]:{web.port}", "proxy.example"):
        status, _ = ask(web, f"GET /api/jobs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 200, host
    for host in (f"evil.example:{web.port}", "127.0.0.1.evil.example", "localhost.", "proxy.example.evil"):
        status, head = ask(web, f"GET /api/jobs HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 400 and b"Invalid host header" in head, host
    status, _ = ask(web, b"GET /api/jobs HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
    assert status == 400
    status, _ = ask(web, b"POST /api/jobs HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n")
    assert status == 400


@pytest.mark.parametrize("headers, status", [
    ("Origin: https://evil.example\r\n", 403), ("Origin: null\r\n", 403),
    ("Sec-Fetch-Site: cross-site\r\n", 403), ("Sec-Fetch-Site: same-site\r\n", 403),
    ("Origin: http://127.0.0.1:{port}\r\nSec-Fetch-Site: same-origin\r\n", 415),
    ("Sec-Fetch-Site: none\r\n", 415), ("", 415),  # typed in, or not a browser (curl)
])
def test_writes_from_other_sites_are_refused(web: WebServer, headers: str, status: int) -> None:
    """415 is the answer to this body (not multipart) once the request is let through."""
    request = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n{headers.format(port=web.port)}"
               "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert ask(web, request.encode())[0] == status


def test_slow_request_headers_are_cut_off(web: WebServer) -> None:
    with connect(web) as connection:
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
    status, _ = ask(web, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # others still served
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


def test_trickling_uploads_lose_their_slot(web: WebServer) -> None:
    """Two slow clients hold both upload slots (web_max_uploads = 2) only until the rate or the
    time limit cuts them: 10 B/s goes after the first 5 s, 30 kB/s (above web_upload_min_rate)
    at web_upload_seconds = 7; then an ordinary upload gets through."""
    crawling: dict[str, object] = {}
    steady: dict[str, object] = {}
    threads = [threading.Thread(target=trickle, args=(web, 10, crawling)),
               threading.Thread(target=trickle, args=(web, 30_000, steady))]
    for thread in threads:
        thread.start()
    time.sleep(1)
    with web.client() as client:
        assert client.post("/api/jobs", files={"image": ("c.png", picture(), "image/png")}).status_code == 429
    for thread in threads:
        thread.join()
    assert crawling["status"] == 408 and b"too slowly" in crawling["head"], crawling
    assert 4.5 < crawling["after"] < 7, crawling  # RATE_GRACE_SECONDS, then 10 B/s is far too slow
    assert steady["status"] == 408 and b"web_upload_seconds" in steady["head"], steady
    assert 6.5 < steady["after"] < 8.5, steady
    with web.client() as client:
        answer = client.post("/api/jobs", files={"image": ("ok.png", picture(9), "image/png")})
    assert answer.status_code == 202, answer.text
    (web.config.parent / "inbox" / answer.json()["uploads"][0]["source"]).unlink()
    assert inbox_files(web) == []


def test_a_refused_part_is_answered_while_the_client_keeps_sending(web: WebServer) -> None:
    """A chunked upload of notes.txt: the 415 comes at once, not when the client stops, and the
    server reads the rest for seconds, not gigabytes."""
    sent = 0
    sender_error: list[BaseException] = []
    with connect(web) as connection:
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
    assert inbox_files(web) == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("name, size, status", [("notes.txt", 1_500_000, 415), ("huge.png", 7_000_000, 413)])
def test_curl_waiting_for_100_continue_gets_the_refusal(web: WebServer, tmp_path: Path, name: str,
                                                        size: int, status: int) -> None:
    """curl sends "Expect: 100-continue" before a body over 1 MB: refused after the go-ahead
    (a bad part) or before it (declared too large), it gets the answer at once either way."""
    (tmp_path / name).write_bytes(b"n" * size)
    started = time.monotonic()
    result = subprocess.run(["curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
                             "-F", f"image=@{name}", f"{web.url}/api/jobs"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == str(status), result
    assert time.monotonic() - started < 5
    assert inbox_files(web) == []


def test_event_streams_are_limited_per_client_and_in_all(web: WebServer) -> None:
    request = b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    held = []
    try:
        def hold(source: str) -> None:
            held.append(connect(web, source))
            held[-1].sendall(request)
            assert answer_of(held[-1])[0] == 200

        for _ in range(4):
            hold("127.0.0.1")
        status, head = ask(web, request, "127.0.0.1")
        assert status == 429 and b"web_max_event_streams_per_client" in head
        for _ in range(2):
            hold("127.0.0.2")
        status, head = ask(web, request, "127.0.0.3")
        assert status == 429 and b"6 event streams are open" in head and b"retry-after: 5" in head.lower()
        held.pop().close()  # a stream that ends gives its place back
        status = 0
        deadline = time.monotonic() + 5
        while status != 200 and time.monotonic() < deadline:
            connection = connect(web, "127.0.0.3")
            connection.sendall(request)
            status = answer_of(connection)[0]
            held.append(connection)
        assert status == 200
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 5  # the server notices the closed streams within moments
    while ask(web, request, "127.0.0.9")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def read_until_closed(connection: socket.socket, limit: float) -> bytes:
    connection.settimeout(limit)
    received = b""
    while data := connection.recv(65536):
        received += data
    return received


def test_an_unknown_upload_ends_its_stream_with_an_error(web: WebServer) -> None:
    for path in ("/api/uploads/0123456789abcdef/events", "/progress/0123456789abcdef"):
        with connect(web) as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            stream = read_until_closed(connection, 10)
        assert b" 200 " in stream.split(b"\r\n")[0] and b"event: error" in stream, stream
        assert b"no upload 0123456789abcdef" in stream


def test_an_upload_whose_file_leaves_the_inbox_ends_its_stream(web: WebServer) -> None:
    with web.client() as client:
        upload = client.post("/api/jobs", files={"image": ("gone.png", picture(11), "image/png")}).json()
    upload = upload["uploads"][0]
    with connect(web) as connection:
        connection.sendall(f"GET {upload['events_url']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: close\r\n\r\n".encode())
        connection.settimeout(10)
        opening = b""
        while b"event: waiting" not in opening:
            opening += connection.recv(65536)
        (web.config.parent / "inbox" / upload["source"]).unlink()  # e.g. deleted from the share
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
def test_a_page_of_another_site_cannot_upload(web: WebServer) -> None:
    site = AttackSite()
    site.target = web.url
    try:
        form_answer = attack_from_browser(web, site)
    finally:
        site.close()
    assert f"a page on {site.origin} may not send this request" in form_answer
    time.sleep(0.5)
    assert inbox_files(web) == []


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
def test_a_rebinding_page_reads_nothing(web: WebServer) -> None:
    """evil.example resolves to 127.0.0.1 (as after a DNS rebinding): its page and its own
    same-origin requests reach recond-web, which answers none of them."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            *BROWSER_FLAGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"])
        try:
            page = browser.new_page()
            answer = page.goto(f"http://evil.example:{web.port}/")
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
            assert page.goto(f"http://localhost:{web.port}/gallery").status == 200  # our own name works
        finally:
            browser.close()
    assert inbox_files(web) == []
