"""Loopback HTTP servers for the transport tests: files with fault switches, a Hub, a Drive.

`StubServer` listens on 127.0.0.1 (a free port), logs every request and serves
file content with Range / If-Range support. Switches a test can set:

- `cut(after, times)`: close the connection after `after` body bytes of the next
  `times` content responses (an interrupted transfer);
- `fail_next(*statuses)`: answer the next requests with these statuses (e.g. 503);
- `wrong_bytes`: serve other bytes of the same length;
- `ignore_range`: answer 200 with the full body whatever Range says;
- `range_shift`: answer a Range request from that many bytes off what was asked;
- `refuse_head`: answer every HEAD with 405 Method Not Allowed (some CDNs and signed
  URLs refuse HEAD).

`FileServer` serves a folder; `HubServer` answers the Hugging Face Hub's
`/datasets/<repo>/resolve/<revision>/<path>` the way huggingface_hub expects
(X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size, a redirect of LFS files to a
separate "CDN" server, X-Error-Code on errors; never any X-Xet header) and the API's
commits, paths-info and tree listings;
`GitHubServer` plays the REST API's pull request comments (list with pagination,
create, edit), for one token; `DriveServer` answers Google Drive's
`uc?export=download&id=` with the file, the "can't scan for viruses" confirm page or
the quota page, and plays Google's OAuth token endpoint (service account JWT grants
checked against the account's public key, refresh tokens) and the Drive API's
`files/<id>?alt=media` for the tokens it issued.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

# The file the shared `files` stand-in serves at /zips/train2017.zip (tests/conftest.py).
SAMPLE = bytes(range(256)) * 400 + b"end"


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (header names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}

    @property
    def range_start(self) -> int | None:
        m = re.fullmatch(r"bytes=(\d+)-\d*", self.headers.get("range", ""))
        return int(m[1]) if m else None


@dataclass
class Reply:
    """What a route answers; `content=True` marks file bytes (Range and faults apply)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content: bool = False


Route = Callable[[Seen], "Reply | None"]


class StubServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with a request log and fault switches."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.routes: list[Route] = []
        self.wrong_bytes = False
        self.ignore_range = False
        self.range_shift = 0
        self.refuse_head = False
        self._errors: list[int] = []
        self._cut_after: int | None = None
        self._cuts = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        # Close kept-alive connections too: a client's pool must not reach this server's
        # handlers through a port a later server reuses.
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- switches -------------------------------------------------------
    def cut(self, after: int, times: int = 1) -> None:
        """Close the connection after `after` body bytes of the next `times` content replies."""
        with self._lock:
            self._cut_after, self._cuts = after, times

    def fail_next(self, *statuses: int) -> None:
        """Answer the next len(statuses) requests with these HTTP statuses, in order."""
        with self._lock:
            self._errors.extend(statuses)

    def range_starts(self, path: str | None = None) -> list[int | None]:
        """The Range start of every GET (None: no Range), optionally only for one path."""
        return [
            s.range_start
            for s in self.seen
            if s.method == "GET" and (path is None or s.path == path)
        ]

    # ---- serving --------------------------------------------------------
    def _respond(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0) if method in ("POST", "PATCH") else 0
        body = h.rfile.read(length) if length else b""
        seen = Seen(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.seen.append(seen)
            status = self._errors.pop(0) if self._errors else None
        if status is not None:
            return _send(h, method, Reply(status, f"HTTP {status}\n".encode()))
        if method == "HEAD" and self.refuse_head:
            return _send(h, method, Reply(405, b"method not allowed\n", {"Allow": "GET"}))
        for route in self.routes:
            reply = route(seen)
            if reply is not None:
                break
        else:
            reply = Reply(404, b"not found\n")
        if not reply.content:
            return _send(h, method, reply)
        self._send_content(h, method, seen, reply)

    def _send_content(self, h, method: str, seen: Seen, reply: Reply) -> None:
        data = reply.body
        if self.wrong_bytes:
            data = bytes(b ^ 0x5A for b in data)
        headers = {"Accept-Ranges": "bytes", **reply.headers}
        etag = headers.setdefault("ETag", f'"{hashlib.sha256(data).hexdigest()[:32]}"')
        start, end, status = 0, len(data), reply.status
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", seen.headers.get("range", ""))
        if_range = seen.headers.get("if-range")
        if asked and not self.ignore_range and if_range in (None, etag):
            start = max(0, int(asked[1]) + self.range_shift)
            end = min(int(asked[2]) + 1, len(data)) if asked[2] else len(data)
            if start >= len(data):
                headers = {"Content-Range": f"bytes */{len(data)}"}
                return _send(h, method, Reply(416, b"", headers))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        with self._lock:
            cut = self._cut_after if self._cuts > 0 and method == "GET" else None
            if cut is not None:
                self._cuts -= 1
        if cut is None or cut >= len(body):
            return _send(h, method, Reply(status, body, headers))
        _send_head(h, status, headers, len(body))
        h.wfile.write(body[:cut])
        h.wfile.flush()
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a refused transfer, a probe) is no server error."""

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(app: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with app._lock:
                app._open.add(self.connection)

        def finish(self) -> None:
            with app._lock:
                app._open.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def do_GET(self) -> None:
            app._respond(self, "GET")

        def do_HEAD(self) -> None:
            app._respond(self, "HEAD")

        def do_POST(self) -> None:
            app._respond(self, "POST")

        def do_PATCH(self) -> None:
            app._respond(self, "PATCH")

        def log_message(self, *args) -> None:
            pass

    return Handler


def _send_head(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], length: int):
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(length))
    h.end_headers()


def _send(h: BaseHTTPRequestHandler, method: str, reply: Reply) -> None:
    _send_head(h, reply.status, reply.headers, len(reply.body))
    if method != "HEAD":
        h.wfile.write(reply.body)


class FileServer(StubServer):
    """Serves the files under `root` at `/<relative path>`."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.routes.append(self._file)

    def _file(self, seen: Seen) -> Reply | None:
        path = (self.root / seen.path.lstrip("/")).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            return None
        return Reply(body=path.read_bytes(), content=True)


# ---- Hugging Face Hub stand-in ------------------------------------------------


@dataclass
class _Repo:
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    dates: dict[str, str] = field(default_factory=dict)
    gated_token: str | None = None

    def history(self, commit: str) -> list[str]:
        """`commit` and its ancestors, newest first."""
        out: list[str] = []
        while commit is not None:
            out.append(commit)
            commit = self.parents[commit]
        return out

    def last_change(self, commit: str, path: str) -> str:
        """The newest commit up to `commit` that changed `path` (the Hub's lastCommit)."""
        data = self.commits[commit].get(path)
        while (parent := self.parents[commit]) is not None:
            if self.commits[parent].get(path) != data:
                break
            commit = parent
        return commit


LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer(StubServer):
    """The part of the Hub that `hf_hub_url` / `get_hf_file_metadata` / downloads use,
    and the API that `HfApi.list_repo_commits` and `HfApi.get_paths_info` call.

    LFS files redirect (302) to `self.cdn`, a second server on another port, as
    the real Hub redirects to its CDN; faults meant for the transfer are set on
    `self.cdn`. Small non-LFS files are answered by the Hub itself.

    `/api/datasets/<repo>/commits/<revision>` lists a revision's history newest first,
    `commits_per_page` at a time with a `Link: <...?p=N>; rel="next"` header as the Hub
    paginates; `POST /api/datasets/<repo>/paths-info/<revision>` (form fields `paths`,
    `expand`) describes files at a revision: git oid, size, `lfs` {oid (sha256), size,
    pointerSize} and, with `expand=true`, the `lastCommit` that changed each.
    `GET /api/datasets/<repo>/tree/<revision>[/<folder>]` (`HfApi.list_repo_tree`; the
    revision and the folder each URL-quoted whole, `recursive`, `expand` and the Hub's
    `cursor` as query parameters) lists a folder: its files as paths-info describes them
    and its subfolders as {type: directory, oid, size: 0, path}, `tree_per_page` entries
    at a time with a `Link: <...&cursor=...>; rel="next"` header, in no particular order
    (not sorted by name, so that a client relying on the server's order shows); a folder
    that is not there (or a file's path) answers 404 EntryNotFound, as the Hub does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.repos: dict[str, _Repo] = {}
        self.lfs: set[str] = set()
        self.commits_per_page = 50
        self.tree_per_page = 1000  # the Hub's page for a listing without `expand`
        self.cdn = StubServer()
        self.cdn.routes.append(self._blob)
        self._blobs: dict[str, bytes] = {}
        self._clock = 0
        self.routes += [self._resolve, self._commits, self._paths_info, self._tree]

    def start(self) -> HubServer:
        self.cdn.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.cdn.stop()

    def publish(
        self,
        repo: str,
        files: dict[str, bytes],
        branch: str = "main",
        lfs=True,
        title: str = "Upload files",
        commit: str | None = None,
    ) -> str:
        """Commit `files` on top of `branch` of dataset `repo`; return the commit id.

        `commit` gives the new commit that id (a real repository's, for a rehearsal)."""
        entry = self.repos.setdefault(repo, _Repo())
        parent = entry.branches.get(branch)
        tree = {**entry.commits.get(parent, {}), **files}
        self._clock += 1
        made = hashlib.sha1(repr((parent, sorted(tree.items()), self._clock)).encode())
        commit = commit or made.hexdigest()
        entry.commits[commit] = tree
        entry.parents[commit] = parent
        entry.titles[commit] = title
        entry.dates[commit] = f"2024-01-01T00:{self._clock // 60:02d}:{self._clock % 60:02d}.000Z"
        entry.branches[branch] = commit
        for data in files.values():
            sha = hashlib.sha256(data).hexdigest()
            self._blobs[sha] = data
            if lfs:
                self.lfs.add(sha)
        return commit

    def gate(self, repo: str, token: str) -> None:
        """Make `repo` gated: only `Authorization: Bearer <token>` gets through."""
        self.repos[repo].gated_token = token

    def _lookup(self, seen: Seen, repo_id: str, revision: str) -> tuple[_Repo, str] | Reply:
        """The repo and the commit `revision` names, or the Hub's error reply."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return _hub_error(401, "RepoNotFound", "Repository not found")
        if repo.gated_token is not None:
            auth = seen.headers.get("authorization")
            if auth != f"Bearer {repo.gated_token}":
                return _hub_error(
                    403 if auth else 401,
                    "GatedRepo",
                    f"Access to dataset {repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in.",
                )
        commit = repo.branches.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, commit

    def _resolve(self, seen: Seen) -> Reply | None:
        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", seen.path)
        if not m:
            return None
        path = m[3]
        found = self._lookup(seen, m[1], unquote(m[2]))
        if isinstance(found, Reply):
            return found
        repo, commit = found
        data = repo.commits[commit].get(path)
        if data is None:
            reply = _hub_error(404, "EntryNotFound", f"{path} does not exist on {m[2]}")
            reply.headers["X-Repo-Commit"] = commit
            return reply
        sha = hashlib.sha256(data).hexdigest()
        if sha in self.lfs:
            location = f"{self.cdn.url}/blobs/{sha}?X-Signature={quote(commit[:8])}"
            headers = {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{hashlib.sha1(sha.encode()).hexdigest()}"',
                "Location": location,
            }
            return Reply(302, b"", headers)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'}
        return Reply(200, data, headers, content=True)

    def _commits(self, seen: Seen) -> Reply | None:
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commits/([^/]+)", seen.path)
        if not m or seen.method != "GET":
            return None
        found = self._lookup(seen, m[1], unquote(m[2]))
        if isinstance(found, Reply):
            return found
        repo, commit = found
        history = repo.history(commit)
        page = int(seen.query.get("p", "0"))
        size = self.commits_per_page
        items = [
            {
                "id": c,
                "title": repo.titles[c],
                "message": "",
                "authors": [{"user": "uploader", "avatar": None}],
                "date": repo.dates[c],
            }
            for c in history[page * size : (page + 1) * size]
        ]
        headers = {"Content-Type": "application/json"}
        if (page + 1) * size < len(history):
            headers["Link"] = f'<{self.url}{seen.path}?p={page + 1}>; rel="next"'
        return Reply(200, json.dumps(items).encode(), headers)

    def _paths_info(self, seen: Seen) -> Reply | None:
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", seen.path)
        if not m or seen.method != "POST":
            return None
        found = self._lookup(seen, m[1], unquote(m[2]))
        if isinstance(found, Reply):
            return found
        repo, commit = found
        form = parse_qs(seen.body.decode())
        expand = form.get("expand", ["false"])[0] == "true"
        # a path that does not exist is left out
        paths = [p for p in form.get("paths", []) if p in repo.commits[commit]]
        out = [self._describe(repo, commit, path, expand) for path in paths]
        return Reply(200, json.dumps(out).encode(), {"Content-Type": "application/json"})

    def _describe(self, repo: _Repo, commit: str, path: str, expand: bool) -> dict:
        """A file at a commit as the Hub's paths-info and tree listings describe it."""
        data = repo.commits[commit][path]
        sha = hashlib.sha256(data).hexdigest()
        item: dict = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
        if sha in self.lfs:
            pointer = LFS_POINTER.format(sha=sha, size=len(data)).encode()
            item["oid"] = git_blob_id(pointer)
            item["lfs"] = {"oid": sha, "size": len(data), "pointerSize": len(pointer)}
        if expand:
            last = repo.last_change(commit, path)
            item["lastCommit"] = {"id": last, "title": repo.titles[last], "date": repo.dates[last]}
        return item

    def _tree(self, seen: Seen) -> Reply | None:
        raw = urlsplit(seen.target).path  # quoted: a revision or folder may hold a "/"
        m = re.fullmatch(r"/api/datasets/([^/]+)/([^/]+)/tree/([^/]+)(?:/([^/]+))?", raw)
        if not m or seen.method != "GET":
            return None
        repo_id, revision = f"{unquote(m[1])}/{unquote(m[2])}", unquote(m[3])
        folder = unquote(m[4] or "").strip("/")
        found = self._lookup(seen, repo_id, revision)
        if isinstance(found, Reply):
            return found
        repo, commit = found
        tree = repo.commits[commit]
        recursive = seen.query.get("recursive", "false").lower() == "true"
        expand = seen.query.get("expand", "false").lower() == "true"
        prefix = f"{folder}/" if folder else ""
        below = [p for p in tree if p.startswith(prefix)]
        if folder and not below:
            return _hub_error(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        files, folders = [], set()
        for path in below:
            rest = path[len(prefix) :]
            if "/" in rest:
                parts = rest.split("/")[:-1]
                steps = range(1, len(parts) + 1) if recursive else [1]
                folders.update(prefix + "/".join(parts[:k]) for k in steps)
            if recursive or "/" not in rest:
                files.append(path)
        items = [
            {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
            for p in sorted(folders)
        ] + [self._describe(repo, commit, p, expand) for p in files]
        items.reverse()  # not sorted by name: the Hub promises no order
        start = int(seen.query.get("cursor") or 0)
        page = items[start : start + self.tree_per_page]
        headers = {"Content-Type": "application/json"}
        if start + self.tree_per_page < len(items):
            query = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}"
            following = f"{self.url}{raw}?{query}&cursor={start + self.tree_per_page}"
            headers["Link"] = f'<{following}>; rel="next"'
        return Reply(200, json.dumps(page).encode(), headers)

    def _blob(self, seen: Seen) -> Reply | None:
        m = re.fullmatch(r"/blobs/([0-9a-f]{64})", seen.path)
        if not m or m[1] not in self._blobs:
            return None
        return Reply(body=self._blobs[m[1]], headers={"ETag": f'"{m[1]}"'}, content=True)


def _hub_error(status: int, code: str, message: str) -> Reply:
    body = f'{{"error": "{message}"}}'.encode()
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    return Reply(status, body, {"Content-Type": "application/json", **headers})


# ---- Google Drive stand-in ----------------------------------------------------

QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>
<body><div class="uc-main"><p class="uc-error-caption">Sorry, you can't view or download this
file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded
this file recently. Please try accessing the file again later.</p></div></body></html>"""

CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
</head><body><div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this
file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a
href="/open?id={id}">{name}</a> (9.4G)</span> is too large for Google to scan for viruses.
Would you still like to download this file?</p><form id="download-form" action="{action}"
method="get"><input type="submit" id="uc-download-link" value="Download anyway"/><input
type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download"><input
type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>
</div></body></html>"""


class DriveServer(StubServer):
    """Google Drive's public download: `/uc?export=download&id=` and the `/download` step.

    Each file has a mode: "direct" (small file, served at once), "confirm" (the
    virus-scan warning page, then `/download?...&confirm=t` serves it) or "quota"
    (the quota-exceeded page, always). The confirm page's form points at
    `<public_base>/download` (this server unless set, e.g. to Google's
    "https://drive.usercontent.google.com" for a test that reaches it through mirrors).
    The Drive API answers `files/<id>?alt=media` with the bytes and `files/<id>?fields=...`
    with the file's metadata (id, name, size, md5Checksum), to a bearer of an issued token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, tuple[str, bytes, str]] = {}
        self.accounts: dict[str, object] = {}  # service account email -> RSA public key
        self.refresh_tokens: set[str] = set()
        self.issued: list[str] = []
        self.public_base: str | None = None
        self.routes += [self._uc, self._token, self._api]

    def add(self, file_id: str, name: str, data: bytes, mode: str = "confirm") -> None:
        """Serve a file; mode "private" makes the API refuse it (403) as well."""
        self.files[file_id] = (name, data, mode)

    def trust(self, email: str, public_key) -> None:
        """Accept JWT grants signed by this service account's key at `/token`."""
        self.accounts[email] = public_key

    def _token(self, seen: Seen) -> Reply | None:
        """Google's OAuth token endpoint: a signed JWT grant or a refresh token."""
        if seen.path != "/token" or seen.method != "POST":
            return None
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            valid = form.get("refresh_token") in self.refresh_tokens
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            valid = self._valid_grant(form.get("assertion", ""))
        else:
            valid = False
        if not valid:
            body = b'{"error": "invalid_grant", "error_description": "Invalid grant"}'
            return Reply(400, body, {"Content-Type": "application/json"})
        token = "ya29." + hashlib.sha256(seen.body).hexdigest()[:40]
        self.issued.append(token)
        body = f'{{"access_token": "{token}", "expires_in": 3599, "token_type": "Bearer"}}'
        return Reply(200, body.encode(), {"Content-Type": "application/json"})

    def _valid_grant(self, assertion: str) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            head, payload, signature = assertion.split(".")
            claims = json.loads(_unb64(payload))
            key = self.accounts[claims["iss"]]
            key.verify(
                _unb64(signature),
                f"{head}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, KeyError, InvalidSignature):
            return False
        scopes = claims.get("scope", "").split()
        fresh = claims.get("exp", 0) > time.time()
        return claims.get("aud") == f"{self.url}/token" and DRIVE_READONLY in scopes and fresh

    def _api(self, seen: Seen) -> Reply | None:
        """The Drive API's `files/<id>?alt=media`, for a bearer of an issued token."""
        m = re.fullmatch(r"/drive/v3/files/([^/]+)", seen.path)
        if not m or seen.method not in ("GET", "HEAD"):
            return None
        if seen.headers.get("authorization") not in {f"Bearer {t}" for t in self.issued}:
            return _api_error(401, "Invalid Credentials")
        media = seen.query.get("alt") == "media"
        if m[1] not in self.files or not (media or "fields" in seen.query):
            return _api_error(404, f"File not found: {m[1]}.")
        name, data, mode = self.files[m[1]]
        if mode == "private":
            return _api_error(403, "The user does not have sufficient permissions for this file.")
        if media:
            return Reply(body=data, headers={"Content-Type": "application/zip"}, content=True)
        facts = {
            "id": m[1],
            "name": name,
            "size": str(len(data)),  # the API gives sizes as strings
            "md5Checksum": hashlib.md5(data).hexdigest(),
        }
        wanted = seen.query["fields"].split(",")
        body = json.dumps({k: v for k, v in facts.items() if k in wanted}).encode()
        return Reply(200, body, {"Content-Type": "application/json"})

    def _uc(self, seen: Seen) -> Reply | None:
        if seen.path not in ("/uc", "/download"):
            return None
        file_id = seen.query.get("id", "")
        if file_id not in self.files:
            return _page(404, "<html><title>Google Drive - Page Not Found</title></html>")
        name, data, mode = self.files[file_id]
        if mode == "quota":
            return _page(200, QUOTA_PAGE)
        if mode == "confirm" and seen.query.get("confirm") != "t":
            uuid = hashlib.sha1(file_id.encode()).hexdigest()[:12]
            page = CONFIRM_PAGE.format(
                id=html.escape(file_id),
                name=html.escape(name),
                action=f"{self.public_base or self.url}/download",
                uuid=uuid,
            )
            return _page(200, page)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
        }
        return Reply(body=data, headers=headers, content=True)


DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _api_error(status: int, message: str) -> Reply:
    body = json.dumps({"error": {"code": status, "message": message}}).encode()
    return Reply(status, body, {"Content-Type": "application/json"})


def _page(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), {"Content-Type": "text/html; charset=utf-8"})


def service_account(drive) -> tuple[str, str]:
    """A new service account key (JSON text) the stand-in trusts, and its private key PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = "fetcher@llava-lab.iam.gserviceaccount.com"
    drive.trust(email, key.public_key())
    info = {
        "type": "service_account",
        "project_id": "llava-lab",
        "private_key_id": "0123abcd",
        "private_key": pem,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": f"{drive.url}/token",
    }
    return json.dumps(info), pem


# ---- GitHub REST API stand-in (pull request comments) -------------------------


class GitHubServer(StubServer):
    """`/repos/<owner>/<name>/issues/<n>/comments` (GET, paged by `per_page` with a Link
    header; POST) and `/repos/<owner>/<name>/issues/comments/<id>` (PATCH), for `token`."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.comments: dict[str, list[dict]] = {}  # "<owner>/<name>#<n>" -> comments
        self._next_id = 1000
        self.routes.append(self._api)

    def add(self, repo: str, pr: int, body: str, user: str = "someone") -> dict:
        with self._lock:
            self._next_id += 1
            comment = {"id": self._next_id, "body": body, "user": {"login": user}}
        self.comments.setdefault(f"{repo}#{pr}", []).append(comment)
        return comment

    def _api(self, seen: Seen) -> Reply | None:
        if seen.headers.get("authorization") != f"Bearer {self.token}":
            return _json_reply(401, {"message": "Bad credentials"})
        listing = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", seen.path)
        edit = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", seen.path)
        if listing and seen.method == "GET":
            found = self.comments.get(f"{listing[1]}#{listing[2]}", [])
            per, page = int(seen.query.get("per_page", 30)), int(seen.query.get("page", 1))
            headers = {}
            if page * per < len(found):
                headers["Link"] = (
                    f'<{self.url}{seen.path}?per_page={per}&page={page + 1}>; rel="next"'
                )
            return _json_reply(200, found[(page - 1) * per : page * per], headers)
        if listing and seen.method == "POST":
            body = json.loads(seen.body)["body"]
            return _json_reply(201, self.add(listing[1], int(listing[2]), body, "ci-bot"))
        if edit and seen.method == "PATCH":
            for comments in self.comments.values():
                for comment in comments:
                    if comment["id"] == int(edit[2]):
                        comment["body"] = json.loads(seen.body)["body"]
                        return _json_reply(200, comment)
            return _json_reply(404, {"message": "Not Found"})
        return None


def _json_reply(status: int, obj: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
