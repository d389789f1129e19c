"""A local Hugging Face Hub on 127.0.0.1 for the tests: the endpoints huggingface_hub calls to list and download a
model repository (`GET /api/models/{repo}[/revision/{rev}]`, `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with Range
requests), serving repositories the tests build in memory. It can cut a download in the middle, and it records
every request, so a test can see what was fetched and how."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:  # a 40-hex commit id derived from the contents, as a real one would change with them
            h = hashlib.sha1()
            for name in sorted(self.files):
                h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
            self.commit = h.hexdigest()


@dataclass
class Cut:
    """Serve only the first `after` bytes of a file's body, then drop the connection, `times` times."""

    after: int
    times: int


@dataclass
class Mirror:
    repos: dict[str, Repo] = field(default_factory=dict)
    cuts: dict[str, Cut] = field(default_factory=dict)  # file name -> cut
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    server: ThreadingHTTPServer | None = None
    stopped: bool = False

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self, port: int = 0) -> Mirror:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                mirror._handle(self, body=True)

            def do_HEAD(self) -> None:
                mirror._handle(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: from now on a connection to it is refused."""
        if self.server is not None and not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()

    def gets(self, filename: str) -> list[str | None]:
        """The Range headers of the GETs of a file (None: the whole file)."""
        return [r for m, p, r in self.log if m == "GET" and p.endswith("/" + filename)]

    def _handle(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.log.append((h.command, path, h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            return self._info(h, m.group(1), m.group(2), body)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._file(h, m.group(1), m.group(2), m.group(3), body)
        self._error(h, 404, "EntryNotFound", "not found", body)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, message: str, body: bool) -> None:
        data = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _repo(self, h: BaseHTTPRequestHandler, name: str, rev: str | None, body: bool) -> Repo | None:
        repo = self.repos.get(name)
        if repo is None:
            self._error(h, 404, "RepoNotFound", "Repository not found", body)
            return None
        if rev not in (None, "main", repo.commit):
            self._error(h, 404, "RevisionNotFound", "Invalid rev id", body)
            return None
        return repo

    def _info(self, h: BaseHTTPRequestHandler, name: str, rev: str | None, body: bool) -> None:
        repo = self._repo(h, name, rev, body)
        if repo is None:
            return
        data = json.dumps({"id": name, "modelId": name, "sha": repo.commit, "private": False, "gated": False,
                           "disabled": False, "tags": ["gguf"],
                           "siblings": [{"rfilename": f} for f in sorted(repo.files)]}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _file(self, h: BaseHTTPRequestHandler, name: str, rev: str, filename: str, body: bool) -> None:
        repo = self._repo(h, name, rev, body)
        if repo is None:
            return
        if filename not in repo.files:
            self._error(h, 404, "EntryNotFound", f"{filename} does not exist", body)
            return
        data = repo.files[filename]
        start = 0
        rng = h.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        end = len(data)
        if m:
            start = int(m.group(1))
            end = min(end, int(m.group(2)) + 1) if m.group(2) else end
        h.send_response(206 if m else 200)
        h.send_header("X-Repo-Commit", repo.commit)
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("Accept-Ranges", "bytes")
        if m:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        h.send_header("Content-Length", str(end - start))
        h.end_headers()
        if not body:
            return
        cut = self.cuts.get(filename)
        if cut is not None and cut.times > 0:
            cut.times -= 1
            h.wfile.write(data[start:start + cut.after])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # the rest never comes: the client sees the body end early
            return
        h.wfile.write(data[start:end])
