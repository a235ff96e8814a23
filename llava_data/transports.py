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

Before a byte is written, the file the upstream offers is checked against what the
registry pins: the size of the first answer of an HTTP(S) or Drive transfer, the size
and LFS sha256 the Hub announces. A file that is not the pinned one is refused
(`NotPinned`) with nothing downloaded. A Hub file whose sha256 is pinned but whose
revision is not is looked for in the file's history (`hf_find_revision`). A source of
parts in a Hub folder is listed through `list_repo_tree`, every part at one commit
(`hf_parts`), and each part downloads as a file of its own.

`use_mirrors` reads a per-machine table of URL prefixes and the bases that replace
them (a proxy, a lab's mirror, a test's loopback server): every URL the HTTP(S) and
Google Drive transports ask for, redirects and OAuth token URLs included, is
rewritten by its longest matching prefix. The Hub is not: it follows HF_ENDPOINT.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlparse

import yaml

from llava_data import parts
from llava_data.common import CHUNK, StageError, progress

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

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotPinned(StageError):
    """The upstream offers another file than the pinned one; nothing was downloaded.

    `upstream` holds what the upstream says now (size, sha256, revision), `differs` the
    pinned facts it contradicts.
    """

    def __init__(self, message: str, upstream: dict, differs: list[str]) -> None:
        super().__init__(message)
        self.upstream, self.differs = upstream, differs


class HubError(StageError):
    """The Hub refused or could not be asked; `outcome` is gated, missing or unreachable."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class NoSuchContent(StageError):
    """No commit of a Hub file's history has the pinned sha256.

    `tried` lists (commit, sha256 seen or None: absent or not an LFS file).
    """

    def __init__(self, message: str, tried: list[tuple[str, str | None]]) -> None:
        super().__init__(message)
        self.tried = tried


class DriveAuthError(StageError):
    """No Drive access token; `outcome` is gated (refused) or unreachable."""

    def __init__(self, message: str, outcome: str = "gated") -> None:
        super().__init__(message)
        self.outcome = outcome


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


# ---- mirrors (per machine) -------------------------------------------------------

# (prefix, base) pairs, longest prefix first; set by `use_mirrors`.
_MIRRORS: tuple[tuple[str, str], ...] = ()
MIRRORS_EXAMPLE = (
    '"http://images.cocodataset.org/": "http://mirror.my-lab.org/coco/"  (one line per prefix)'
)


def use_mirrors(path: Path | str | None) -> None:
    """Rewrite outgoing URLs by the table in `path` (a YAML mapping: URL prefix -> base).

    None or a missing file means no mirrors; a malformed file is a StageError naming it.
    """
    global _MIRRORS
    _MIRRORS = load_mirrors(Path(path)) if path is not None else ()


def load_mirrors(path: Path) -> tuple[tuple[str, str], ...]:
    """The (prefix, base) pairs of a mirrors file, longest prefix first."""
    if not path.exists():
        return ()
    fix = f"fix {path} (or delete it to use no mirror), then run the command again"
    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageError(f"mirrors file {path} cannot be read as YAML ({first}); {fix}") from None
    if table is None:
        return ()
    if not isinstance(table, dict):
        raise StageError(
            f"mirrors file {path} must map URL prefixes to the bases that replace them, e.g. "
            f"{MIRRORS_EXAMPLE}; it holds a {type(table).__name__}; {fix}"
        )
    pairs = []
    for prefix, base in table.items():
        for role, value in (("prefix", prefix), ("base", base)):
            if not isinstance(value, str) or not _is_http_url(value):
                raise StageError(
                    f"mirrors file {path}: {role} {redact(str(value))!r} (of the line for "
                    f"{redact(str(prefix))!r}) is not an http(s):// URL; {fix}"
                )
        pairs.append((prefix, base))
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0])))


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def mirrored(url: str) -> str:
    """`url` rewritten by the longest matching mirror prefix (itself when none matches)."""
    for prefix, base in _MIRRORS:
        if url.startswith(prefix):
            return base + url[len(prefix) :]
    return url


def redact(text: str) -> str:
    """`text` with the user:password of any URL in it replaced by ***."""
    return re.sub(r"(//)[^/@\s:]+:[^/@\s]*@", r"\1***@", text)


def shown(url: str, via: str) -> str:
    """How a message names a URL asked through a mirror (credentials never shown)."""
    return url if via == url else f"{url} (through the mirror {redact(via)})"


_SESSION_CLASS = None


def mirror_session():
    """A requests Session whose redirects are rewritten by the mirrors too."""
    global _SESSION_CLASS
    if _SESSION_CLASS is None:
        import requests

        class MirrorSession(requests.Session):
            def get_redirect_target(self, resp):
                target = super().get_redirect_target(resp)
                if target:
                    absolute = urljoin(resp.url, target)
                    if mirrored(absolute) != absolute:
                        return mirrored(absolute)
                return target

        _SESSION_CLASS = MirrorSession
    return _SESSION_CLASS()


# ---- what the registry pins, and a file that is not it ------------------------------

PINNED_FACTS = ("size", "sha256", "md5")


def origin_key(origin) -> str:
    """The registry key of an origin, `sources.<name>.<profile>`."""
    return getattr(origin, "where", None) or f"sources.{origin.name}.{origin.profile}"


def confidence(origin, fact: str) -> str:
    """How surely the registry knows `fact`: published (the default), mirror or assumed."""
    method = getattr(origin, "confidence", None)
    if callable(method):
        return method(fact)
    known = getattr(origin, "known", None) or {}
    return dict(known).get(fact, "published")


def pinned(origin) -> dict:
    """The size and checksums the registry pins for `origin` (unpinned ones left out)."""
    held = dict(origin.checksums)
    if origin.size is not None:
        held["size"] = origin.size
    return {fact: held[fact] for fact in PINNED_FACTS if fact in held}


def pin_differences(origin, upstream: dict) -> list[str]:
    """The pinned facts that what the upstream says now (`upstream`) contradicts."""
    return [
        fact
        for fact, value in pinned(origin).items()
        if upstream.get(fact) is not None and upstream[fact] != value
    ]


def show_fact(fact: str, value) -> str:
    if value is None:
        return f"no {fact}"
    return f"{value:,} bytes" if fact == "size" else f"{fact} {value}"


def pin_advice(origin, upstream: dict, differs: list[str]) -> str:
    """What to do about a pinned fact the upstream contradicts (the wording fetch and
    check_upstream share): a note for each value that is only from a mirror or assumed,
    and how to update the pins if the upstream changed on purpose."""
    where = origin_key(origin)
    text = []
    for fact in differs:
        how = confidence(origin, fact)
        if how in ("mirror", "assumed"):
            said = "comes from a mirror or a user listing" if how == "mirror" else "is assumed"
            text.append(
                f"The pinned {fact} {said} ({where}.known.{fact}: {how}), not read on the "
                f"upstream's own page, and may be wrong: the real file's {fact} is what the "
                f"upstream now says, {show_fact(fact, upstream[fact])}."
            )
    sets = ", ".join(
        f"`{fact}: {upstream[fact] if upstream.get(fact) is not None else 'null'}`"
        for fact in pinned(origin)
    )
    text.append(
        f"If the upstream changed on purpose, update the pin in sources.yaml: set {sets} in "
        f"{where} (a null is pinned by the next fetch from the bytes it downloads), then run "
        f"`dvc repro fetch@{origin.name}`. If it did not, the origin no longer serves the "
        f"pinned file: find where that file is now, or list a good copy in sources.local.yaml "
        f"as `{origin.name}: {copy_path(origin)}`."
    )
    return " ".join(text)


def copy_path(origin) -> str:
    """How a message shows the path of a copy in sources.local.yaml: a file, or the folder
    of a source of parts."""
    many = getattr(origin, "has_parts", False)
    return f"/path/to/{origin.name}/" if many else f"/path/to/{origin.file}"


def not_pinned(origin, what: str, upstream: dict, differs: list[str], how: str = "") -> NotPinned:
    """The refusal of a file that is not the pinned one, before a byte is written."""
    where = origin_key(origin)
    says = " and ".join(show_fact(fact, upstream[fact]) for fact in differs)
    pins = " and ".join(
        f"{show_fact(fact, pinned(origin)[fact])} ({where}.{fact})" for fact in differs
    )
    message = (
        f"source {origin.name!r}: {what} now has {says}{f' ({how})' if how else ''}, but "
        f"sources.yaml pins {pins}. This is not the pinned file, so nothing was downloaded. "
        f"{pin_advice(origin, upstream, differs)}"
    )
    return NotPinned(message, upstream, differs)


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
    no record (older code wrote it) is adopted. Nothing is written here: the record
    is written with the first bytes (`_Transfer.attempt`), so a file refused before
    its transfer leaves no trace.
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
    return record.get("validator") if same and part.exists() else None


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
        http_download(origin.name, spec, part, origin.size, registry_key=key, origin=origin)
        return {}
    if kind == "hf":
        return hf_download(origin, *spec, part)
    if kind == "gdrive":
        gdrive_download(origin, spec, part)
        return {}
    raise StageError(manual_instruction(origin, kind, spec))


def manual_instruction(origin, kind: str, spec) -> str:
    """What the user must do for a file no transport can fetch."""
    steps = manual_steps(origin, kind, spec)
    return f"source {origin.name!r} ({origin.shown_file}) needs a manual step: {steps}"


def manual_steps(origin, kind: str, spec) -> str:
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
    if origin.has_parts:
        many = f"the files matching {origin.file}"
        many = f"its {len(origin.parts)} files" if origin.parts else many
        saved, thing = f"/path/to/{origin.name}/", f"the folder of {many}"
        held = held and f"{held} (the parts' total, and the sha256 of their sha256sum listing)"
        held = held or (
            "no checksum yet (once every file reads whole, the total size and the sha256 of "
            "the files' sha256sum listing are recorded in sources.yaml: commit that change)"
        )
    else:
        thing = "the file"
        held = held or (
            "no checksum yet (once it is checked whole, its size and sha256 are recorded in "
            "sources.yaml: commit that change)"
        )
    return (
        f"{what}. Then list {thing} in sources.local.yaml as `{origin.name}: {saved}` and run "
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
    origin=None,
    mirror: bool = True,
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

    With `origin` (the registry entry), the first answer's length (Content-Length of a
    200, the total of a 206's Content-Range) is checked against the pinned size before
    a byte is written: another length raises `NotPinned`. The URL and every redirect
    are rewritten by the mirrors (`mirror=False` keeps the first URL as it is).
    """
    import requests
    import urllib3

    if urlparse(url).scheme == "file":
        copy_file(Path(urlparse(url).path), part)
        return
    job = _Transfer(
        name,
        url,
        part,
        identity or url,
        headers or {},
        refuse_html,
        if_range,
        registry_key,
        origin=origin,
        via=mirrored(url) if mirror else url,
    )
    job.validator = claim_partial(part, job.identity)
    own_session = session is None
    session = session or mirror_session()
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
                    f"source {name!r}: {shown(url, job.via)} failed {attempt} times in a row "
                    f"(last: {reason}); "
                    f"the {now:,} bytes received are kept in {part} and "
                    f"`dvc repro fetch@{name}` resumes from there"
                )
            delay = _backoff(attempt, wait)
            print(
                f"source {name!r}: {shown(url, job.via)}: {reason}; retrying in {delay:.1f} s "
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
    origin: object = None  # the registry entry whose pinned size the first answer must have
    via: str = ""  # the URL asked (the mirrored one)

    def attempt(self, session, offset: int) -> tuple[str, str, float | None]:
        """One GET from `offset`: ("done" | "retry" | "restart", reason, Retry-After)."""
        ask = {**self.headers, "Accept-Encoding": "identity"}
        if offset:
            ask["Range"] = f"bytes={offset}-"
            if self.validator and self.if_range:
                ask["If-Range"] = self.validator
        with session.get(self.via or self.url, headers=ask, stream=True, timeout=TIMEOUT_S) as resp:
            status = resp.status_code
            if status == 416 and offset:
                return self._after_416(resp)
            if status in RETRY_STATUSES or status >= 500:
                return "retry", f"HTTP {status}", _retry_after(resp)
            if status not in (200, 206):
                raise Refused(self._refusal(status, resp.reason), status)
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
            self._check_pin(total, status, offset)
            # Recorded before the body: a cut transfer resumes with the same If-Range.
            self.validator = _validator(resp) or (self.validator if status == 206 else None)
            _record(self.part, self.identity, self.validator)
            _check_space(self.name, self.url, self.part, start, total)
            _stream(resp, self.part, start, total, self.name)
        got = self.part.stat().st_size
        if total is not None and got < total:
            return "retry", f"connection closed at byte {got:,} of {total:,}", None
        return "done", "", None

    def _check_pin(self, total: int | None, status: int, offset: int) -> None:
        """Refuse, before a byte is written, a file whose length is not the pinned size."""
        if self.origin is None or total is None:
            return
        upstream = {"size": total}
        differs = pin_differences(self.origin, upstream)
        if not differs:
            return
        how = "the Content-Length of its answer" if status == 200 else "the total its 206 gives"
        err = not_pinned(self.origin, shown(self.url, self.via or self.url), upstream, differs, how)
        if offset:
            err.args = (
                f"{err} The {offset:,} bytes kept in {self.part} from an earlier run are left "
                f"as they are.",
            )
        raise err

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
        return (
            f"source {self.name!r}: {shown(self.url, self.via or self.url)} answered {said}; {hint}"
        )

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


def is_name_error(err: BaseException) -> bool:
    """Whether a connection error is a name that did not resolve (getaddrinfo's errors
    carry negative errnos: "Name or service not known", "Temporary failure in name
    resolution"), however deeply requests, urllib3 or httpx wrapped it."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, socket.gaierror):
            return True
        if re.search(r"\[Errno -\d+\]|NameResolutionError", str(err)):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def _short(err: Exception) -> str:
    """An exception in one short line: its type and, for a network error, the root cause
    (e.g. "Connection refused") rather than the pool's whole story."""
    text = str(err).splitlines()[0] if str(err) else ""
    text = redact(re.sub(r"<[^>]*object at 0x[0-9a-f]+>", "", text))
    cause = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if cause:
        text = cause[1].strip().rstrip(".")
    elif re.search(r"timed out", text, re.IGNORECASE):
        text = "timed out"
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

    Before the transfer, the size and LFS sha256 the Hub announces are checked against
    the registry's pins (`NotPinned` if they differ). An unpinned revision with a pinned
    sha256 is the newest commit whose file has that sha256 (`hf_resolve`); the commit
    used is returned as "revision" for the fetch stage to pin.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    meta, endpoint = hf_resolve(origin, repo, path, revision)
    upstream = hf_facts(meta)
    differs = pin_differences(origin, upstream)
    if differs:
        what = f"Hugging Face dataset {repo}, file {path} at commit {meta.commit_hash}"
        raise not_pinned(origin, what, upstream, differs, "as the Hub announces it")
    pinned_url = hf_hub_url(
        repo, path, repo_type="dataset", revision=meta.commit_hash, endpoint=endpoint
    )
    size = origin.size if origin.size is not None else meta.size
    http_download(
        origin.name,
        pinned_url,
        part,
        size,
        headers=build_hf_headers(),
        identity=f"hf:{repo}/{path}@{meta.etag}",  # the etag pins the content
        if_range=False,
        registry_key=f"sources.{origin.name}.{origin.profile}.hf",
        origin=origin,
        mirror=False,  # the Hub is HF_ENDPOINT; its CDN redirects may still be mirrored
    )
    announced = {"sha256": meta.etag} if SHA256_HEX.fullmatch(meta.etag) else {}
    if revision is None or not COMMIT_HEX.fullmatch(revision):
        announced["revision"] = meta.commit_hash
    return announced


def hf_facts(meta) -> dict:
    """What the Hub says of a file: size, sha256 (LFS files only), revision (its commit)."""
    return {
        "size": meta.size,
        "sha256": meta.etag if SHA256_HEX.fullmatch(meta.etag or "") else None,
        "revision": meta.commit_hash,
    }


def hf_endpoint() -> str:
    """The Hub to ask: HF_ENDPOINT, read at call time (huggingface_hub reads it at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hf_resolve(origin, repo: str, path: str, revision: str | None, timeout: float | None = None):
    """The Hub's metadata (commit, ETag, size) of the file this origin means.

    At `revision`; but when the revision is not a commit (null, a branch, a tag) and the
    registry pins a sha256 that the file at that revision does not have, at the newest
    commit of its history whose file has it (`hf_find_revision`). Returns (meta, endpoint).
    """
    meta, endpoint = _hf_metadata(origin, repo, path, revision, timeout)
    want = dict(origin.checksums).get("sha256")
    is_commit = revision is not None and COMMIT_HEX.fullmatch(revision)
    if want and not is_commit and SHA256_HEX.fullmatch(meta.etag) and meta.etag != want:
        commit = hf_find_revision(origin, repo, path, revision, want, endpoint, timeout)
        meta, endpoint = _hf_metadata(origin, repo, path, commit, timeout)
    return meta, endpoint


def hf_find_revision(
    origin,
    repo: str,
    path: str,
    revision: str | None,
    sha256: str,
    endpoint: str,
    timeout: float | None = None,
) -> str:
    """The newest commit of `revision`'s history (default branch: None) whose `path` has
    LFS sha256 `sha256`.

    huggingface_hub's `list_repo_commits` lists the history, newest first; `get_paths_info`
    (with `expand`, which names the commit that last changed the file) reads the file at
    a commit, so the commits that did not change it are skipped. `NoSuchContent` lists
    the commits tried and the sha256 seen at each.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint)
    _cap_hub_timeouts(timeout or TIMEOUT_S)
    branch = revision or "main"
    commits = _hf_call(
        origin,
        repo,
        path,
        revision,
        lambda: api.list_repo_commits(repo, repo_type="dataset", revision=branch),
        retry=False,  # huggingface_hub retries this call itself
    )
    order = {c.commit_id: n for n, c in enumerate(commits)}
    tried: list[tuple[str, str | None]] = []
    n = 0
    while n < len(commits):
        commit = commits[n].commit_id
        infos = _hf_call(
            origin,
            repo,
            path,
            commit,
            lambda commit=commit: api.get_paths_info(
                repo, [path], repo_type="dataset", revision=commit, expand=True
            ),
        )
        info = next((i for i in infos if isinstance(i, RepoFile) and i.path == path), None)
        seen = info.lfs.sha256 if info is not None and info.lfs is not None else None
        tried.append((commit, seen))
        if seen == sha256:
            print(
                f"NOTE: source {origin.name!r}: {repo}/{path} at {branch} is not the pinned file "
                f"(sha256 {sha256}); commit {commit} has it and is used",
                file=sys.stderr,
            )
            return commit
        n += 1
        last = info.last_commit.oid if info is not None and info.last_commit else None
        if last in order:  # the commits in between did not change the file
            n = max(n, order[last] + 1)
    raise NoSuchContent(_no_such_content(origin, repo, path, branch, sha256, tried), tried)


def _no_such_content(origin, repo, path, branch, sha256, tried) -> str:
    where = origin_key(origin)
    listed = [f"{c} ({f'sha256 {seen}' if seen else 'no such LFS file'})" for c, seen in tried]
    if len(listed) > 20:
        listed = listed[:20] + [f"and {len(listed) - 20} more"]
    return (
        f"source {origin.name!r}: no commit of Hugging Face dataset {repo} ({branch}) has "
        f"{path} with the pinned sha256 {sha256} ({where}.sha256); nothing was downloaded. "
        f"Commits tried, newest first (those that did not change the file skipped): "
        f"{'; '.join(listed) or 'none'}. {pin_advice(origin, {}, [])} If the file you want "
        f"is at a known commit, set {where}.hf.revision to it."
    )


_HUB_TIMEOUT_S = [float(TIMEOUT_S)]


def _cap_hub_timeouts(seconds: float) -> None:
    """Give huggingface_hub's shared client a timeout where a call sets none.

    Its API calls (commits, paths-info) pass no timeout, so a Hub that stops answering
    would hang the stage; an event hook sets one on each request that has none.
    """
    from huggingface_hub.utils import get_session

    _HUB_TIMEOUT_S[0] = float(seconds)
    hooks = get_session().event_hooks["request"]
    if _timeout_hook not in hooks:
        hooks.append(_timeout_hook)


def _timeout_hook(request) -> None:
    timeout = request.extensions.get("timeout") or {}
    if all(value is None for value in timeout.values()):
        keys = ("connect", "read", "write", "pool")
        request.extensions["timeout"] = dict.fromkeys(keys, _HUB_TIMEOUT_S[0])


def _hf_call(origin, repo, path, revision, call, retry: bool = True):
    """`call()` (a huggingface_hub request), retried like a download on transient errors.

    Errors become HubErrors that say what to do.
    """
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = hf_endpoint()
    attempt = 0
    while True:
        try:
            return call()
        except (httpx2.TransportError, HfHubHTTPError) as err:
            status = err.response.status_code if isinstance(err, HfHubHTTPError) else None
            transient = status is None or status in RETRY_STATUSES or status >= 500
            if not retry or not transient or attempt >= RETRIES:
                raise _hub_error(origin, repo, path, revision, endpoint, err) from None
            attempt += 1
            delay = _backoff(attempt, None)
            reason = f"HTTP {status}" if status else _short(err)
            print(
                f"source {origin.name!r}: Hugging Face dataset {repo}: {reason}; retrying in "
                f"{delay:.1f} s ({attempt}/{RETRIES})",
                file=sys.stderr,
            )
            time.sleep(delay)
        except Exception as err:  # mapped to an actionable message, or re-raised as is
            raise _hub_error(origin, repo, path, revision, endpoint, err) from None


def _hub_error(origin, repo, path, revision, endpoint, err: Exception) -> HubError:
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo, path, repo_type="dataset", revision=revision, endpoint=endpoint)
    message = hf_refusal(origin, repo, path, revision, url, endpoint, err)
    return HubError(message, hf_outcome(err))


def _hf_metadata(origin, repo: str, path: str, revision: str | None, timeout=None):
    """huggingface_hub's file metadata (HEAD on /resolve/), retried like a download.

    Errors become HubErrors that say what to do.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    endpoint = hf_endpoint()
    url = hf_hub_url(repo, path, repo_type="dataset", revision=revision, endpoint=endpoint)
    wait = constants.HF_HUB_ETAG_TIMEOUT if timeout is None else timeout
    meta = _hf_call(
        origin,
        repo,
        path,
        revision,
        lambda: get_hf_file_metadata(url, endpoint=endpoint, timeout=wait),
    )
    if not meta.commit_hash or not meta.etag:
        raise HubError(
            f"source {origin.name!r}: {url} did not answer like the Hugging Face Hub (no "
            f"X-Repo-Commit or ETag header): check HF_ENDPOINT and your proxy settings",
            "unreachable",
        )
    return meta, endpoint


def hf_outcome(err: Exception) -> str:
    """What a huggingface_hub error means for a build: gated, missing or unreachable."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return "gated"
    missing = (RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
    if isinstance(err, missing):
        return "missing"
    status = err.response.status_code if isinstance(err, HfHubHTTPError) else None
    if status in (404, 410):
        return "missing"
    if status in (401, 403):
        return "gated"
    return "unreachable"  # 5xx or 429 after the retries, the network, a proxy


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


# ---- Hugging Face: a folder of parts ---------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub folder as the tree listing gives it (`sha256`: LFS files only)."""

    name: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class HubParts:
    """A source of parts on the Hub: the one commit every part is taken at, and its parts
    there in the source's order, as the folder's listing describes them."""

    commit: str
    files: tuple[HubFile, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)

    @property
    def facts(self) -> dict:
        """What the Hub says of the source: total size, listing sha256 (every part an LFS
        file), revision."""
        rows = ((f.name, f.size, f.sha256) for f in self.files)
        return {**parts.upstream_facts(rows), "revision": self.commit}

    def file(self, name: str) -> HubFile:
        return next(f for f in self.files if f.name == name)


def hf_folder(path: str) -> str:
    """The folder of an `hf.path` of parts ("" for the repository's root)."""
    return path.rpartition("/")[0]


def hf_part_path(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def hf_list_folder(
    origin, repo: str, folder: str, revision: str | None, timeout: float | None = None
) -> list[HubFile]:
    """The files directly in `folder` of dataset `repo` at `revision`, sorted by name: one
    tree listing through huggingface_hub's `list_repo_tree` (its pages followed). A folder
    that is not there is a HubError naming it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=hf_endpoint())
    _cap_hub_timeouts(timeout or TIMEOUT_S)

    def call():
        try:
            tree = api.list_repo_tree(
                repo, path_in_repo=folder or None, revision=revision, repo_type="dataset"
            )
            return list(tree)
        except RemoteEntryNotFoundError:
            return None

    # messages name the registry's hf.path; huggingface_hub retries this call itself
    entries = _hf_call(origin, repo, origin.spec[1], revision, call, retry=False)
    if entries is None:
        at = f"revision {revision}" if revision else "the default branch"
        raise HubError(
            f"source {origin.name!r}: Hugging Face dataset {repo} has no folder {folder!r} at "
            f"{at}; check {origin_key(origin)}.hf.path in sources.yaml",
            "missing",
        )
    files = [
        HubFile(e.path.rpartition("/")[2], e.size, e.lfs.sha256 if e.lfs else None)
        for e in entries
        if isinstance(e, RepoFile)
    ]
    return sorted(files, key=lambda f: f.name)


def hf_parts(origin, timeout: float | None = None, line: str | None = None) -> HubParts:
    """Where a source of parts (`origin.parts` named by a pattern, or `origin.file` a glob)
    stands on the Hub, every part at one commit: the pinned revision when it is a commit,
    else the commit its first part resolves to (a HEAD). That commit's folder is listed
    once (sizes, LFS sha256s); a part it lacks, or a glob that matches nothing, is a
    StageError listing what the folder holds there and which registry line (`line`, e.g.
    "sources.yaml lines 12 and 14") to change."""
    repo, path, revision = origin.spec
    folder = hf_folder(path)
    commit = revision if revision is not None and COMMIT_HEX.fullmatch(revision) else None
    if commit is None:
        first = origin.parts[:1]
        if not first:  # a glob: the first file matching it at the revision
            held = hf_list_folder(origin, repo, folder, revision, timeout)
            first = origin.listed(f.name for f in held).parts[:1]
            if not first:
                raise StageError(no_match(origin, repo, folder, revision, held, line))
        try:
            meta, _ = _hf_metadata(origin, repo, hf_part_path(folder, first[0]), revision, timeout)
        except HubError as err:
            if err.outcome != "missing" or not origin.parts:
                raise
            held = hf_list_folder(origin, repo, folder, revision, timeout)  # says a bad revision
            raise StageError(parts_not_there(origin, repo, folder, revision, held, line)) from None
        commit = meta.commit_hash
    held = hf_list_folder(origin, repo, folder, commit, timeout)
    named = origin.listed(f.name for f in held).parts
    if not named:
        raise StageError(no_match(origin, repo, folder, commit, held, line))
    by_name = {f.name: f for f in held}
    if any(n not in by_name for n in named):
        raise StageError(parts_not_there(origin, repo, folder, commit, held, line))
    return HubParts(commit, tuple(by_name[n] for n in named))


def _where_to_fix(origin, line: str | None) -> str:
    at = f", {line}" if line else ""
    return f"sources.{origin.name}.file and {origin_key(origin)}{at}"


def parts_not_there(origin, repo, folder, revision, held, line) -> str:
    """The message for parts named by a pattern that the Hub's folder does not hold."""
    names = {f.name for f in held}
    missing = [n for n in origin.parts if n not in names]
    at = f"commit {revision}" if revision else "the default branch"
    alike = parts.like(origin.file, names)
    head = origin.file.split("{", 1)[0]
    glob = f"{head}*{Path(origin.file).suffix}"
    return (
        f"source {origin.name!r}: Hugging Face dataset {repo} at {at} lacks {len(missing)} of "
        f"the {len(origin.parts)} parts the registry names in {folder or 'its root'}/: "
        f"{parts.shown_names(missing, 5)}; nothing was downloaded. That folder holds "
        f"{len(alike)} files that look like parts: {parts.shown_names(alike)}. Change "
        f"{_where_to_fix(origin, line)}, to name them: `file` (a pattern with one integer "
        f"field, and the same name at the end of hf.path) and `parts: [first, last]`, or, "
        f'when no pattern fits, a glob, `file: "{glob}"` with `parts: glob`, its parts the '
        f"files matching it. Then run `dvc repro fetch@{origin.name}`"
    )


def no_match(origin, repo, folder, revision, held, line) -> str:
    """The message for a glob of parts that no file of the Hub's folder matches."""
    at = f"commit {revision}" if revision else "the default branch"
    alike = parts.like(origin.file, [f.name for f in held])
    return (
        f"source {origin.name!r}: no file of Hugging Face dataset {repo}'s folder "
        f"{folder or '(the root)'} matches {origin.file!r} at {at}; nothing was downloaded. "
        f"It holds {parts.shown_names(alike)}. Fix the glob, `file` and the end of hf.path, "
        f"or hf.revision ({_where_to_fix(origin, line)}), then run "
        f"`dvc repro fetch@{origin.name}`"
    )


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
    url = f"{GDRIVE_UC_URL}?{urlencode({'export': 'download', 'id': file_id})}"
    tried = []
    with mirror_session() as session:  # Drive's older confirm flow sets a cookie
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
                    origin=origin,
                )
                return
            except HtmlPage as page:
                following = drive_confirm_url(page.text, page.final_url)
                if following is None or following in tried:
                    raise StageError(
                        f"source {origin.name!r} ({origin.file}): Google Drive did not serve "
                        f"file {file_id} ({page.url}): {drive_page_reason(page.text)}. Instead, "
                        f"{manual_steps(origin, 'gdrive', file_id)}"
                    ) from None
                url = following
    raise StageError(f"{manual_instruction(origin, 'gdrive', file_id)} (tried {redact(tried[-1])})")


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
            origin=origin,
        )
    except HtmlPage as page:
        raise StageError(
            f"source {origin.name!r} ({origin.file}): the Drive API answered a page for file "
            f"{file_id} ({page.url}). Instead, {manual_steps(origin, 'gdrive', file_id)}"
        ) from None
    except Refused as err:
        raise StageError(
            f"{err}. The Drive API refused file {file_id} to the account in "
            f"{GDRIVE_CREDENTIALS_ENV}: share the file with it, unset the variable to use the "
            f"public download, or {manual_steps(origin, 'gdrive', file_id)}"
        ) from None


def drive_access_token(origin, credentials: str) -> str:
    """An OAuth access token for the Drive API from a service account key or saved user
    credentials (the JSON DVC's gdrive remote takes in GDRIVE_CREDENTIALS_DATA).

    The token URL they name (Google's by default) is rewritten by the mirrors.
    """
    from oauth2client import GOOGLE_TOKEN_URI

    where = f"source {origin.name!r}: {GDRIVE_CREDENTIALS_ENV}"
    try:
        info = json.loads(credentials)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise DriveAuthError(
            f"{where} is not JSON: set it to the content of a service account key file "
            f"(or of the user credentials DVC saved), or unset it to use the public download"
        )
    import httplib2
    from oauth2client.client import HttpAccessTokenRefreshError, OAuth2Credentials
    from pydrive2.auth import GoogleAuth

    token_uri = info.get("token_uri") or GOOGLE_TOKEN_URI
    if mirrored(token_uri) != token_uri:
        info = {**info, "token_uri": mirrored(token_uri)}
        credentials = json.dumps(info)
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
        refused = isinstance(exc, HttpAccessTokenRefreshError) or not isinstance(
            exc, (OSError, httplib2.HttpLib2Error)
        )
        raise DriveAuthError(
            f"{where}: no access token could be obtained ({_short(exc)}); check the "
            f"credentials (and the network, if Google's token URL "
            f"{redact(mirrored(token_uri))} cannot be reached), or unset the variable to use "
            f"the public download",
            "gated" if refused else "unreachable",
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


def drive_page_kind(page: str) -> str:
    """What a page Drive answered instead of a file means: quota, access, folder or page."""
    low = page.lower()
    finder = _FormFinder()
    finder.feed(page)
    if "too many users" in low or "quota" in low:
        return "quota"
    if "servicelogin" in low or "you need access" in low or "request access" in low:
        return "access"
    if "drive/folders" in low or "folder" in finder.title.lower():
        return "folder"
    return "page"


def drive_page_reason(page: str) -> str:
    """Why Drive answered a page instead of the file, in the user's terms."""
    kind = drive_page_kind(page)
    if kind == "quota":
        return (
            "the file's download quota is exceeded (too many downloads recently); Drive lifts "
            "it within a day, or a browser signed in to Google can usually still download it"
        )
    if kind == "access":
        return "the file is not public (Drive asks to sign in or to request access)"
    if kind == "folder":
        return "the id is a folder, not a file"
    finder = _FormFinder()
    finder.feed(page)
    title = finder.title.strip() or "untitled"
    return f"it answered an HTML page ({title!r}) instead of the file"
