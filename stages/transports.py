"""How a source file arrives: local copy, HTTP(S) with resume, Hugging Face, Google Drive, manual.

Each transport writes or resumes `<part>` (under `downloads/.partial/<source>/`)
and returns the checksums the upstream itself announced (e.g. the sha256 a
Hugging Face LFS file is stored under); checking size and checksums and the
final rename belong to the fetch stage.

Bytes already downloaded are never thrown away silently: a partial file is
resumed with an HTTP Range request (guarded by If-Range, so a file that changed
upstream is downloaded again rather than spliced), and a partial file that
belongs to another origin (another URL, another Hub version) is moved to
`downloads/.partial/rejected/<source>/` before anything new is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlparse

from stages.common import CHUNK, StageError, progress

# Consecutive failed attempts allowed before giving up (an attempt that brings
# bytes resets the count), and the exponential backoff between them. Tests
# lower these.
RETRIES = 5
BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
TIMEOUT_S = 60
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
HTML_LIMIT = 1 << 20  # bytes of an HTML answer kept to explain it

# Google Drive's public download endpoint and its API (tests point both at a local server).
GDRIVE_UC_URL = "https://drive.google.com/uc"
GDRIVE_API_URL = "https://www.googleapis.com/drive/v3/files"
# The variable DVC's gdrive remote reads: a service account key, or the user credentials
# DVC (PyDrive2) saved after its browser sign-in, as JSON text.
GDRIVE_CREDENTIALS_ENV = "GDRIVE_CREDENTIALS_DATA"
GDRIVE_SCOPE = "https://www.googleapis.com/auth/drive.readonly"

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
COMMIT_HEX = re.compile(r"[0-9a-f]{40}")


class Refused(StageError):
    """The server refused the request with a 4xx status that retrying will not change."""


class HtmlPage(StageError):
    """The server answered an HTML page where a file was expected."""

    def __init__(self, name: str, url: str, final_url: str, text: str) -> None:
        super().__init__(f"source {name!r}: {url} answered an HTML page instead of the file")
        self.url, self.final_url, self.text = url, final_url, text


# ---- registry values ------------------------------------------------------------


def parse_spec(where: str, kind: str, value):
    """Validate the origin value of one transport kind; return its normalised form."""
    if kind in ("local", "url"):
        if not isinstance(value, str) or not value:
            raise StageError(f"{where}: `{kind}` must be a non-empty string")
        if kind == "url" and urlparse(value).scheme not in ("http", "https", "file"):
            raise StageError(f"{where}: `url` must be http(s):// or file://, got {value!r}")
        return value
    if kind == "hf":
        if not isinstance(value, dict) or not {"repo", "path"} <= set(value):
            raise StageError(f"{where}: `hf` needs repo and path (and revision)")
        repo, path, revision = value["repo"], value["path"], value.get("revision")
        if not (isinstance(repo, str) and repo.count("/") == 1 and isinstance(path, str) and path):
            raise StageError(f"{where}: `hf` needs repo and path as `owner/name` and a file path")
        if revision is not None and (not isinstance(revision, str) or not revision):
            raise StageError(f"{where}: `hf.revision` must be a commit, tag or branch, or null")
        return (repo, path, revision)
    if kind == "gdrive":
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise StageError(f"{where}: `gdrive` needs an id")
        return value["id"]
    if kind == "manual":
        if not isinstance(value, dict) or not isinstance(value.get("instructions"), str):
            raise StageError(f"{where}: `manual` needs instructions")
        return value["instructions"]
    raise StageError(f"{where}: unknown origin kind {kind!r}")


# ---- local files and the partial folder -----------------------------------------


def link_or_copy(src: Path, dst: Path) -> None:
    """Make `dst` a hard link to `src` where possible (no second copy), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        copy_file(src, dst)


def copy_file(src: Path, dst: Path) -> None:
    """Copy bytes (the kernel does it where it can); the copy is a new file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def set_aside(part: Path) -> Path:
    """Move `<partial>/<source>/<file>` into `<partial>/rejected/<source>/`, over nothing."""
    folder = part.parent.parent / "rejected" / part.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / part.name, 1
    while target.exists():
        target, n = folder / f"{part.name}.{n}", n + 1
    os.replace(part, target)
    return target


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".origin.json")


def claim_partial(part: Path, identity: str) -> str | None:
    """Tie `part` to `identity` (the origin its bytes come from); return its resume validator.

    A partial file recorded as coming from another origin is set aside first, so
    bytes of two different files are never spliced together. A partial file with
    no record (older code wrote it) is adopted.
    """
    try:
        record = json.loads(_sidecar(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    same = record.get("identity") == identity
    if part.exists() and record and not same:
        kept = set_aside(part)
        print(
            f"NOTE: {part.name} was partly downloaded from {record.get('identity')}, not "
            f"{identity}; its bytes were moved to {kept} and the download starts over.",
            file=sys.stderr,
        )
    validator = record.get("validator") if same and part.exists() else None
    _record(part, identity, validator)
    return validator


def _record(part: Path, identity: str, validator: str | None) -> None:
    part.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"identity": identity, "validator": validator}, indent=1)
    _sidecar(part).write_text(text + "\n", encoding="utf-8")


# ---- dispatch ----------------------------------------------------------------------


def obtain(kind: str, spec, origin, part: Path) -> dict[str, str]:
    """Write or resume `part` from the origin; return the checksums the upstream announced."""
    if kind == "local":
        src = Path(spec)
        if not src.is_file():
            raise StageError(f"source {origin.name!r}: local file {src} does not exist")
        copy_file(src, part)
        return {}
    if kind == "url":
        key = f"sources.{origin.name}.{origin.profile}.url"
        http_download(origin.name, spec, part, origin.size, registry_key=key)
        return {}
    if kind == "hf":
        return hf_download(origin, *spec, part)
    if kind == "gdrive":
        gdrive_download(origin, spec, part)
        return {}
    raise StageError(manual_instruction(origin, kind, spec))


def manual_instruction(origin, kind: str, spec) -> str:
    """What the user must do for a file no transport can fetch."""
    steps = _manual_steps(origin, kind, spec)
    return f"source {origin.name!r} ({origin.file}) needs a manual step: {steps}"


def _manual_steps(origin, kind: str, spec) -> str:
    saved = f"/path/to/{origin.file}"
    what = spec
    if kind == "gdrive":
        saved = f"downloads/manual/{origin.file}"
        what = (
            f"open https://drive.google.com/file/d/{spec}/view in a browser (signed in to "
            f"Google if Drive asks), download the file and save it as {saved}"
        )
    held = ", ".join(f"{a} {v}" for a, v in origin.checksums)
    if origin.size is not None:
        held = f"{origin.size:,} bytes" + (f" and {held}" if held else "")
    held = held or (
        "no checksum yet (once it is checked whole, its size and sha256 are recorded in "
        "sources.yaml: commit that change)"
    )
    return (
        f"{what}. Then list the file in sources.local.yaml as `{origin.name}: {saved}` and run "
        f"`dvc repro fetch@{origin.name}`; it will be held to {held}"
    )


# ---- HTTP(S) -----------------------------------------------------------------------


def http_download(
    name: str,
    url: str,
    part: Path,
    size: int | None,
    *,
    headers: dict[str, str] | None = None,
    session=None,
    identity: str | None = None,
    refuse_html: bool = False,
    if_range: bool = True,
    registry_key: str = "the URL of this source",
) -> None:
    """Download `url` into `part`, resuming from its current length with Range requests.

    Connection errors, 5xx, 408 and 429 are retried with exponential backoff
    (Retry-After is honoured); another 4xx stops at once. `size` (when known)
    lets a complete or over-long partial file go straight to verification.
    `identity` names the origin of the bytes (default: the URL); `refuse_html`
    raises HtmlPage instead of writing an HTML answer; `if_range=False` drops the
    If-Range guard when `identity` already pins the content (it then cannot make a
    CDN whose validators vary answer the whole file again). `registry_key` is what a
    404 tells the user to check in sources.yaml.
    """
    import requests
    import urllib3

    if urlparse(url).scheme == "file":
        copy_file(Path(urlparse(url).path), part)
        return
    job = _Transfer(
        name, url, part, identity or url, headers or {}, refuse_html, if_range, registry_key
    )
    job.validator = claim_partial(part, job.identity)
    own_session = session is None
    session = session or requests.Session()
    attempt, use_range = 0, True
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            if size is not None and have >= size:
                return  # complete, or longer than the registry says: verification decides
            try:
                outcome, reason, wait = job.attempt(session, have if use_range else 0)
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as e:
                outcome, reason, wait = "retry", _short(e), None
            if outcome == "done":
                return
            use_range = outcome != "restart"
            now = part.stat().st_size if part.exists() else 0
            attempt = 1 if now > have else attempt + 1  # progress resets the count
            if attempt > RETRIES:
                raise StageError(
                    f"source {name!r}: {url} failed {attempt} times in a row (last: {reason}); "
                    f"the {now:,} bytes received are kept in {part} and "
                    f"`dvc repro fetch@{name}` resumes from there"
                )
            delay = _backoff(attempt, wait)
            print(
                f"source {name!r}: {url}: {reason}; retrying in {delay:.1f} s "
                f"({attempt}/{RETRIES}, {now:,} bytes kept)",
                file=sys.stderr,
            )
            time.sleep(delay)
    finally:
        if own_session:
            session.close()


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): exponential, capped."""
    return min(MAX_BACKOFF_S, max(BACKOFF_S * 2 ** (attempt - 1), retry_after or 0))


@dataclass
class _Transfer:
    """One file being downloaded into `part`; `validator` is what If-Range carries."""

    name: str
    url: str
    part: Path
    identity: str
    headers: dict[str, str]
    refuse_html: bool
    if_range: bool
    registry_key: str
    validator: str | None = None

    def attempt(self, session, offset: int) -> tuple[str, str, float | None]:
        """One GET from `offset`: ("done" | "retry" | "restart", reason, Retry-After)."""
        ask = {**self.headers, "Accept-Encoding": "identity"}
        if offset:
            ask["Range"] = f"bytes={offset}-"
            if self.validator and self.if_range:
                ask["If-Range"] = self.validator
        with session.get(self.url, headers=ask, stream=True, timeout=TIMEOUT_S) as resp:
            status = resp.status_code
            if status == 416 and offset:
                return self._after_416(resp)
            if status in RETRY_STATUSES or status >= 500:
                return "retry", f"HTTP {status}", _retry_after(resp)
            if status not in (200, 206):
                raise Refused(self._refusal(status, resp.reason))
            if self.refuse_html and "html" in resp.headers.get("Content-Type", "").lower():
                text = resp.raw.read(HTML_LIMIT, decode_content=True) or b""
                raise HtmlPage(self.name, self.url, resp.url, text.decode("utf-8", "replace"))
            if status == 206:
                start, total = content_range(resp.headers.get("Content-Range", ""))
                if start != offset:
                    got = resp.headers.get("Content-Range")
                    return "restart", f"asked for bytes {offset}- and got {got!r}", None
                if offset:
                    print(
                        f"source {self.name!r}: resuming {self.part.name} at byte {offset:,}"
                        + (f" of {total:,}" if total else ""),
                        file=sys.stderr,
                    )
            else:
                start, total = 0, _plain_length(resp)
                if offset:
                    print(
                        f"NOTE: source {self.name!r}: {self.url} answered the whole file to a "
                        f"resume request (it ignores Range, or the file changed upstream); it is "
                        f"downloaded again from the start, replacing the {offset:,} bytes kept",
                        file=sys.stderr,
                    )
            # Recorded before the body: a cut transfer resumes with the same If-Range.
            self.validator = _validator(resp) or (self.validator if status == 206 else None)
            _record(self.part, self.identity, self.validator)
            _check_space(self.name, self.url, self.part, start, total)
            _stream(resp, self.part, start, total, self.name)
        got = self.part.stat().st_size
        if total is not None and got < total:
            return "retry", f"connection closed at byte {got:,} of {total:,}", None
        return "done", "", None

    def _refusal(self, status: int, reason: str | None) -> str:
        if status in (404, 410):
            hint = f"the file is not there: check {self.registry_key} in sources.yaml"
        elif status in (401, 403):
            hint = (
                "access is refused (credentials needed or the link expired): fetch the file by "
                f"hand and list it in sources.local.yaml as `{self.name}: /path/to/file`"
            )
        else:
            hint = f"check {self.registry_key} in sources.yaml"
        said = f"HTTP {status} {reason or ''}".rstrip()
        return f"source {self.name!r}: {self.url} answered {said}; {hint}"

    def _after_416(self, resp) -> tuple[str, str, float | None]:
        """Nothing after our offset: the partial is complete, or longer than the file."""
        m = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range", ""))
        total = int(m[1]) if m else None
        have = self.part.stat().st_size
        if total is None or total == have:
            return "done", "", None
        kept = set_aside(self.part)
        print(
            f"NOTE: source {self.name!r}: {self.part.name} had {have:,} bytes but {self.url} "
            f"has {total:,}; it was moved to {kept} and the download starts over",
            file=sys.stderr,
        )
        return "restart", f"partial file longer than the file ({have:,} > {total:,})", None


def content_range(value: str) -> tuple[int | None, int | None]:
    """(first byte, total length) of a `Content-Range: bytes a-b/total` header."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    return int(m[1]), (int(m[3]) if m[3] != "*" else None)


def _plain_length(resp) -> int | None:
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    length = resp.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _validator(resp) -> str | None:
    """A strong ETag or the Last-Modified date: what If-Range may carry."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


def _retry_after(resp) -> float | None:
    value = resp.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _check_space(name: str, url: str, part: Path, start: int, total: int | None) -> None:
    if total is None:
        return
    free = shutil.disk_usage(part.parent).free
    if total - start > free:
        raise StageError(
            f"source {name!r}: {url} needs {total - start:,} more bytes but {part.parent} has "
            f"{free:,} free; free some space and run `dvc repro fetch@{name}` again (the bytes "
            f"already in {part} are kept)"
        )


def _stream(resp, part: Path, start: int, total: int | None, name: str) -> None:
    """Write the body at offset `start` of `part` (truncating what follows).

    Network errors propagate (the caller retries); a failing disk stops the stage.
    """
    try:
        fh = open(part, "r+b" if start and part.exists() else "wb")  # noqa: SIM115
        fh.seek(start)
        fh.truncate()
    except OSError as err:
        raise _write_error(name, part, err) from None
    with fh, progress(total, name) as bar:
        bar.update(start)
        # read1 hands over whatever arrived: bytes received before a cut are written,
        # where read(CHUNK) would drop up to CHUNK of them with the exception.
        while block := resp.raw.read1(CHUNK):
            try:
                fh.write(block)
            except OSError as err:
                raise _write_error(name, part, err) from None
            bar.update(len(block))


def _write_error(name: str, part: Path, err: OSError) -> StageError:
    return StageError(
        f"source {name!r}: writing {part} failed ({err}); the bytes written so far are kept "
        f"and `dvc repro fetch@{name}` resumes from there"
    )


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>", "", text)
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


# ---- Hugging Face ------------------------------------------------------------------


def hf_download(origin, repo: str, path: str, revision: str | None, part: Path) -> dict[str, str]:
    """Download one file of a Hugging Face dataset repo into `part`, resumably.

    huggingface_hub resolves the file (the HEAD on `/resolve/`: commit, ETag,
    size, error codes) and supplies the headers, token included: the token
    comes from HF_TOKEN or the user's login, as huggingface_hub decides, and is
    never printed or written here. The bytes come from the same commit's
    `/resolve/` URL through `http_download`, because huggingface_hub deletes an
    interrupted download's bytes instead of resuming them on the next call.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    meta, endpoint = _hf_metadata(origin, repo, path, revision)
    pinned = hf_hub_url(
        repo, path, repo_type="dataset", revision=meta.commit_hash, endpoint=endpoint
    )
    size = origin.size if origin.size is not None else meta.size
    http_download(
        origin.name,
        pinned,
        part,
        size,
        headers=build_hf_headers(),
        identity=f"hf:{repo}/{path}@{meta.etag}",  # the etag pins the content
        if_range=False,
        registry_key=f"sources.{origin.name}.{origin.profile}.hf",
    )
    announced = {"sha256": meta.etag} if SHA256_HEX.fullmatch(meta.etag) else {}
    if revision is None or not COMMIT_HEX.fullmatch(revision):
        announced["revision"] = meta.commit_hash
    return announced


def _hf_metadata(origin, repo: str, path: str, revision: str | None):
    """huggingface_hub's file metadata (HEAD on /resolve/), retried like a download.

    Errors become StageErrors that say what to do.
    """
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    # Read at call time (huggingface_hub reads it once, at import).
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    url = hf_hub_url(repo, path, repo_type="dataset", revision=revision, endpoint=endpoint)
    attempt = 0
    while True:
        try:
            meta = get_hf_file_metadata(url, endpoint=endpoint)
            break
        except (httpx2.TransportError, HfHubHTTPError) as err:
            status = err.response.status_code if isinstance(err, HfHubHTTPError) else None
            transient = status is None or status in RETRY_STATUSES or status >= 500
            if not transient or attempt >= RETRIES:
                raise StageError(
                    hf_refusal(origin, repo, path, revision, url, endpoint, err)
                ) from None
            attempt += 1
            delay = _backoff(attempt, None)
            reason = f"HTTP {status}" if status else _short(err)
            print(
                f"source {origin.name!r}: {url}: {reason}; retrying in {delay:.1f} s "
                f"({attempt}/{RETRIES})",
                file=sys.stderr,
            )
            time.sleep(delay)
        except Exception as err:  # mapped to an actionable message, or re-raised as is
            raise StageError(hf_refusal(origin, repo, path, revision, url, endpoint, err)) from None
    if not meta.commit_hash or not meta.etag:
        raise StageError(
            f"source {origin.name!r}: {url} did not answer like the Hugging Face Hub (no "
            f"X-Repo-Commit or ETag header): check HF_ENDPOINT and your proxy settings"
        )
    return meta, endpoint


def hf_refusal(origin, repo, path, revision, url, endpoint, err: Exception) -> str:
    """What to do about an error huggingface_hub raised while resolving one file."""
    import httpx2
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    key = f"sources.{origin.name}.{origin.profile}.hf"
    at = f"revision {revision}" if revision else "the default branch"
    where = f"source {origin.name!r}: Hugging Face dataset {repo}, file {path} at {at}"
    login = (
        "log in here with `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN, then "
        f"run `dvc repro fetch@{origin.name}`"
    )
    status = err.response.status_code if isinstance(err, HfHubHTTPError) else None
    if isinstance(err, GatedRepoError):
        return (
            f"{where} is gated (HTTP {status}): accept its terms at {endpoint}/datasets/{repo} "
            f"with your Hugging Face account, {login}"
        )
    if isinstance(err, RevisionNotFoundError):
        return f"{where}: no such revision; check {key}.revision in sources.yaml ({url})"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"{where}: no such file at that revision; check {key}.path in sources.yaml ({url})"
    if status in (401, 403) or isinstance(err, RepositoryNotFoundError):
        return (
            f"{where}: HTTP {status}: the repository does not exist, or it is private or gated; "
            f"check {key}.repo in sources.yaml, and if it is gated accept its terms at "
            f"{endpoint}/datasets/{repo}, {login}"
        )
    if status == 404:
        return f"{where}: not found (HTTP 404); check {key} (repo, path, revision) in sources.yaml"
    if status is not None:
        return (
            f"{where}: the Hub answered HTTP {status} ({url}); try again later with "
            f"`dvc repro fetch@{origin.name}`, which resumes what is already downloaded"
        )
    if isinstance(err, OfflineModeIsEnabled):
        return f"{where}: HF_HUB_OFFLINE is set; unset it to download"
    if isinstance(err, (httpx2.TransportError, OSError)) and not isinstance(err, FileMetadataError):
        return (
            f"{where}: cannot reach {endpoint} ({_short(err)}); check the network or proxy "
            f"(and HF_ENDPOINT if you use a mirror), then run `dvc repro fetch@{origin.name}`, "
            f"which resumes what is already downloaded"
        )
    if isinstance(err, FileMetadataError):
        return f"{where}: {_short(err)}; check HF_ENDPOINT and your proxy settings"
    raise err


# ---- Google Drive --------------------------------------------------------------------


def gdrive_download(origin, file_id: str, part: Path) -> None:
    """Download a Google Drive file: through the Drive API with credentials, else publicly.

    With GDRIVE_CREDENTIALS_DATA set (as for DVC's gdrive remote), PyDrive2 turns the
    credentials into an access token and the file comes from the Drive API. Without it,
    the public download is used, passing the "can't scan for viruses" page. Either way
    the bytes come through `http_download` (resume, retries), under the same identity,
    so a partial file from one route is resumed by the other. Drive answers an HTML page
    when the file cannot be served to an anonymous client (quota exceeded, access needed,
    a folder id): the stage then stops with the manual instruction.
    """
    credentials = os.environ.get(GDRIVE_CREDENTIALS_ENV)
    if credentials:
        gdrive_api_download(origin, file_id, part, credentials)
        return
    import requests

    url = f"{GDRIVE_UC_URL}?{urlencode({'export': 'download', 'id': file_id})}"
    tried = []
    with requests.Session() as session:  # Drive's older confirm flow sets a cookie
        for _ in range(3):
            tried.append(url)
            try:
                http_download(
                    origin.name,
                    url,
                    part,
                    origin.size,
                    session=session,
                    identity=f"gdrive:{file_id}",
                    refuse_html=True,
                    registry_key=f"sources.{origin.name}.{origin.profile}.gdrive.id",
                )
                return
            except HtmlPage as page:
                following = drive_confirm_url(page.text, page.final_url)
                if following is None or following in tried:
                    raise StageError(
                        f"source {origin.name!r} ({origin.file}): Google Drive did not serve "
                        f"file {file_id} ({page.url}): {drive_page_reason(page.text)}. Instead, "
                        f"{_manual_steps(origin, 'gdrive', file_id)}"
                    ) from None
                url = following
    raise StageError(f"{manual_instruction(origin, 'gdrive', file_id)} (tried {tried[-1]})")


def gdrive_api_download(origin, file_id: str, part: Path, credentials: str) -> None:
    """Download `file_id` through the Drive API, authorised by `credentials` (JSON text).

    The token lives in memory only: it is sent in a header, never written or printed.
    """
    token = drive_access_token(origin, credentials)
    query = urlencode({"alt": "media", "supportsAllDrives": "true", "acknowledgeAbuse": "true"})
    try:
        http_download(
            origin.name,
            f"{GDRIVE_API_URL}/{file_id}?{query}",
            part,
            origin.size,
            headers={"Authorization": f"Bearer {token}"},
            identity=f"gdrive:{file_id}",
            refuse_html=True,
            registry_key=f"sources.{origin.name}.{origin.profile}.gdrive.id",
        )
    except HtmlPage as page:
        raise StageError(
            f"source {origin.name!r} ({origin.file}): the Drive API answered a page for file "
            f"{file_id} ({page.url}). Instead, {_manual_steps(origin, 'gdrive', file_id)}"
        ) from None
    except Refused as err:
        raise StageError(
            f"{err}. The Drive API refused file {file_id} to the account in "
            f"{GDRIVE_CREDENTIALS_ENV}: share the file with it, unset the variable to use the "
            f"public download, or {_manual_steps(origin, 'gdrive', file_id)}"
        ) from None


def drive_access_token(origin, credentials: str) -> str:
    """An OAuth access token for the Drive API from a service account key or saved user
    credentials (the JSON DVC's gdrive remote takes in GDRIVE_CREDENTIALS_DATA)."""
    where = f"source {origin.name!r}: {GDRIVE_CREDENTIALS_ENV}"
    try:
        info = json.loads(credentials)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise StageError(
            f"{where} is not JSON: set it to the content of a service account key file "
            f"(or of the user credentials DVC saved), or unset it to use the public download"
        )
    import httplib2
    from oauth2client.client import OAuth2Credentials
    from pydrive2.auth import GoogleAuth

    try:
        if info.get("type") == "service_account":
            auth = GoogleAuth(
                settings={
                    "client_config_backend": "service",
                    "service_config": {"client_json_dict": info, "client_user_email": None},
                    "oauth_scope": [GDRIVE_SCOPE],
                }
            )
            auth.ServiceAuth()
            creds = auth.credentials
        else:
            creds = OAuth2Credentials.from_json(credentials)
        return creds.get_access_token(httplib2.Http(timeout=TIMEOUT_S)).access_token
    except Exception as exc:  # oauth2client raises many kinds; all mean the same here
        raise StageError(
            f"{where}: no access token could be obtained ({_short(exc)}); check the "
            f"credentials, or unset the variable to use the public download"
        ) from None


class _FormFinder(HTMLParser):
    """The forms of a page: action and the name/value of their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[dict[str, str], dict[str, str]]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((attrs, {}))
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1][1][attrs["name"]] = attrs.get("value", "")
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def drive_confirm_url(page: str, page_url: str) -> str | None:
    """The download URL behind Drive's "Download anyway" button, or None if the page has none."""
    finder = _FormFinder()
    finder.feed(page)
    for attrs, fields in finder.forms:
        if attrs.get("id") == "download-form" or "confirm" in fields:
            action = urljoin(page_url, attrs.get("action") or page_url)
            if urlparse(action).scheme in ("http", "https"):
                return f"{action.split('?')[0]}?{urlencode(fields)}"
    for href in finder.links:  # the pre-2024 page: a link carrying confirm=<token>
        if "confirm=" in href and "export=download" in href:
            return urljoin(page_url, href)
    return None


def drive_page_reason(page: str) -> str:
    """Why Drive answered a page instead of the file, in the user's terms."""
    low = page.lower()
    finder = _FormFinder()
    finder.feed(page)
    if "too many users" in low or "quota" in low:
        return (
            "the file's download quota is exceeded (too many downloads recently); Drive lifts "
            "it within a day, or a browser signed in to Google can usually still download it"
        )
    if "servicelogin" in low or "you need access" in low or "request access" in low:
        return "the file is not public (Drive asks to sign in or to request access)"
    if "drive/folders" in low or "folder" in finder.title.lower():
        return "the id is a folder, not a file"
    title = finder.title.strip() or "untitled"
    return f"it answered an HTML page ({title!r}) instead of the file"
