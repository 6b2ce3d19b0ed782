"""recond-web's limits against slow and greedy clients, with the default settings (issue 17):
how long trickling uploads hold an upload slot, how soon slow headers are cut, how soon a
refused upload is answered while it is still being sent, and the web process's memory with
every event stream the limits allow open (and refused ones on top).

Starts the real recond-web (no daemon needed) on temporary folders and attacks it over raw
sockets from this machine. Takes about a minute (web_upload_seconds).

    .venv/bin/python benchmarks/bench_web_limits.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench_web import REPO, free_port, rss_mb

from recond.config import load_settings

BOUNDARY = "benchboundary"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(source, 0))


def status_of(connection: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        data = connection.recv(4096)
        if not data:
            return 0
        head += data
    return int(head.split(b" ", 2)[1])


def upload_head(name: str, length_header: str) -> bytes:
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    if length_header.startswith("Transfer-Encoding"):
        part = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n{length_header}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + part


def trickle(port: int, bytes_per_second: float, figures: dict[str, str], label: str) -> None:
    """Send a 100 MB upload at ``bytes_per_second``; note when the server answers, and what."""
    with connect(port) as connection:
        connection.sendall(upload_head("slow.png", "Content-Length: 100000000"))
        started = time.monotonic()
        connection.settimeout(0.1)
        while True:
            try:
                status = status_of(connection)
                figures[label] = f"answered {status} after {time.monotonic() - started:.1f} s"
                return
            except TimeoutError:
                connection.sendall(b"x" * max(1, int(bytes_per_second / 10)))


def slow_headers(port: int) -> float:
    """Seconds until a client sending one header line a second is cut off."""
    with connect(port) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        try:
            for line in range(600):
                connection.sendall(f"X-Slow-{line}: y\r\n".encode())
                connection.settimeout(1.0)
                try:
                    if connection.recv(1) == b"":
                        break
                except TimeoutError:
                    pass
        except OSError:
            pass
        return time.monotonic() - started


def refused_while_sending(port: int) -> tuple[float, float, int]:
    """A chunked notes.txt sent as fast as possible: (seconds to the answer, seconds until the
    server closed the connection, bytes sent in all)."""
    sent = 0
    closed_at = [0.0]
    with connect(port) as connection:
        connection.sendall(upload_head("notes.txt", "Transfer-Encoding: chunked"))
        started = time.monotonic()

        def keep_sending() -> None:
            nonlocal sent
            chunk = b"100000\r\n" + b"n" * 0x100000 + b"\r\n"
            try:
                while time.monotonic() - started < 60:
                    connection.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                closed_at[0] = time.monotonic() - started

        sender = threading.Thread(target=keep_sending)
        sender.start()
        status_of(connection)
        answered = time.monotonic() - started
        sender.join()
    return answered, closed_at[0], sent


def streams_memory(port: int, pid: int, most: int, per_client: int) -> None:
    request = b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    before = rss_mb(pid)
    held, refused = [], 0
    sources = [f"127.0.1.{index}" for index in range(1, most // per_client + 3)]
    for source in sources:
        for _ in range(per_client):
            connection = connect(port, source)
            connection.sendall(request)
            if status_of(connection) == 200:
                held.append(connection)
            else:
                refused += 1
                connection.close()
    at_limit = rss_mb(pid)
    for _ in range(1000):  # a flood beyond the limit: each refused at once
        with connect(port, sources[-1]) as connection:
            connection.sendall(request)
            refused += status_of(connection) == 429
    print(f"event streams: {len(held)} open (web_max_event_streams {most}, {per_client} per "
          f"client), {refused} refused with 429; recond-web RSS {before:.0f} MB before, "
          f"{at_limit:.0f} MB with the limit reached, {rss_mb(pid):.0f} MB after 1,000 more refused")
    for connection in held:
        connection.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        (root / "inbox").mkdir()
        config = root / "recond.toml"
        values = {"inbox": str(root / "inbox"), "outbox": str(root / "outbox"),
                  "state_dir": str(root / "state"), "web_port": port}
        config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
        settings = load_settings(config)
        env = {key: value for key, value in os.environ.items() if not key.startswith("RECOND_")}
        web = subprocess.Popen([sys.executable, "-m", "recond.web.server", "--config", str(config)],
                               cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            print(f"defaults: web_header_seconds {settings.web_header_seconds}, web_upload_seconds "
                  f"{settings.web_upload_seconds}, web_upload_min_rate {settings.web_upload_min_rate} B/s, "
                  f"web_max_uploads {settings.web_max_uploads}")
            figures: dict[str, str] = {}
            rate = settings.web_upload_min_rate
            tricklers = [threading.Thread(target=trickle, args=(port, speed, figures, label))
                         for speed, label in ((10, "10 B/s"), (rate / 2, f"{rate / 2:.0f} B/s"),
                                              (rate * 1.2, f"{rate * 1.2:.0f} B/s"))]
            for thread in tricklers:
                thread.start()
            print(f"slow headers (a line a second): cut after {slow_headers(port):.1f} s")
            answered, closed, sent = refused_while_sending(port)
            print(f"refused chunked upload sent flat out: 415 after {answered:.2f} s, connection "
                  f"closed after {closed:.1f} s, {sent / 1e6:.0f} MB sent in all")
            for thread in tricklers:
                thread.join()
            for label, figure in figures.items():
                print(f"trickling upload at {label}: {figure} (an upload slot held that long)")
            streams_memory(port, web.pid, settings.web_max_event_streams,
                           settings.web_max_event_streams_per_client)
        finally:
            web.terminate()
            web.wait()


if __name__ == "__main__":
    main()
