"""Replay recorded HTTP exchanges over a real socket on 127.0.0.1 (stdlib http.server in
a thread), for clients that cannot run against the real service here: the Docker Engine
API (no engine on these machines) and Kafka Connect's REST API.

The recordings are hand-written scenarios, not captures: each was written from the API's
documentation to exercise a client path, and says so in its "provenance" field. They prove
what the client does with those answers, not that a real engine answers so.

A recording is JSON: {"provenance": ..., "description": ..., "exchanges": [{"request": {...}, "response": {...}}]}
- request: method, path, and optionally query (only the keys given are compared; a value
  that is JSON text, like the engine's `filters`, is compared as JSON) and json (the body).
- response: status, optional headers, and one of: body (JSON), text, or frames, the
  engine's multiplexed log stream: [{"stream": 1|2, "data": "..."}], each sent with its
  8-byte header (stream type, 3 zero bytes, big-endian uint32 length).
An exchange with "times": N answers at most N requests. A request that matches nothing
gets HTTP 599 and is kept in `server.unmatched`, so a test can fail on it.
"""

from __future__ import annotations

import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RECORDINGS = Path(__file__).resolve().parent


def load(*names: str, folder: str = "docker") -> list[dict]:
    exchanges: list[dict] = []
    for name in names:
        exchanges += json.loads((RECORDINGS / folder / name).read_text())["exchanges"]
    return exchanges


def multiplexed(frames: list[dict]) -> bytes:
    out = b""
    for frame in frames:
        data = frame["data"].encode()
        out += struct.pack(">BxxxL", int(frame.get("stream", 1)), len(data)) + data
    return out


def _same(expected, actual: str | None) -> bool:
    if actual is None:
        return False
    if isinstance(expected, (dict, list)):
        try:
            return json.loads(actual) == expected
        except ValueError:
            return False
    return str(expected) == actual


class ReplayServer:
    def __init__(self, exchanges: list[dict]):
        self.exchanges = [dict(e, used=0) for e in exchanges]
        self.requests: list[dict] = []
        self.unmatched: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
                body = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode(errors="replace")
                exchange = server.match(self.command, split.path, query, body)
                if exchange is None:
                    self._send(
                        599,
                        {"Content-Type": "application/json"},
                        json.dumps({"message": f"no recorded exchange for {self.command} {self.path}"}).encode(),
                    )
                    return
                response = exchange["response"]
                headers = dict(response.get("headers") or {})
                if "frames" in response:
                    payload = multiplexed(response["frames"])
                    headers.setdefault("Content-Type", "application/vnd.docker.multiplexed-stream")
                elif "text" in response:
                    payload = response["text"].encode()
                    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
                elif "body" in response:
                    payload = json.dumps(response["body"]).encode()
                    headers.setdefault("Content-Type", "application/json")
                else:
                    payload = b""
                self._send(int(response.get("status", 200)), headers, payload)

            def _send(self, status: int, headers: dict, payload: bytes):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.docker_url = f"tcp://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def match(self, method: str, path: str, query: dict, body) -> dict | None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "query": query, "body": body})
            for exchange in self.exchanges:
                request = exchange["request"]
                if request["method"] != method or request["path"] != path:
                    continue
                if any(not _same(v, query.get(k)) for k, v in (request.get("query") or {}).items()):
                    continue
                if "json" in request and request["json"] != body:
                    continue
                if "times" in exchange and exchange["used"] >= exchange["times"]:
                    continue
                exchange["used"] += 1
                return exchange
            self.unmatched.append(f"{method} {path}?{query}")
            return None

    def calls(self, method: str, path_end: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(path_end)]

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
