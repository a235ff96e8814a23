"""Ask every source of a profile, without downloading it, whether its upstream still has it.

For each source of `--profile` in the registry, one probe asks the upstream what it
holds now, reading headers and metadata only (never a file's body):

- Hugging Face: the file's metadata at the pinned revision (size, LFS sha256); an
  unpinned revision with a pinned sha256 is resolved by the file's history, as the
  fetch stage resolves it. A source of parts: each named part's metadata, asked at
  once, or its glob's folder listed once; their total size (and the sha256 of their
  listing, when every part is an LFS file) is what is compared with the pins;
- HTTP(S): a HEAD, or a one-byte `Range: bytes=0-0` GET when the HEAD gives no usable
  answer (size, ETag, Last-Modified);
- Google Drive: with GDRIVE_CREDENTIALS_DATA, the Drive API's file metadata (size,
  md5); without, the first answer of the public download (the file, the "can't scan
  for viruses" page, whose download is then asked for one byte, or a quota or access
  page);
- manual sources: listed in `--local-copies` or not; `local:` files: there or not.
  A source listed in `--local-copies` is taken from that copy by the fetch stage, so
  the copy is checked (there, of the pinned size) instead of the upstream.

`judge` (pure: no I/O) turns what a probe returned into one of the statuses below and
what to do; the probes only ask. `--mirrors` rewrites the URLs asked, as it does for
the fetch stage.

The sources are asked `--jobs` at a time, and the whole run has a `--deadline`: a
source still unanswered then is reported as not answered in time. Before the first
request to a host (or to the proxy in front of it), the host is asked once whether it
takes a connection, name resolution and connect each with a short timeout; a host
that does not resolve, refuses the connection or does not answer is reported once, for
all its sources, and none of them is asked again (a name that does not resolve is not
retried: with no network the whole report comes in seconds). Answers that are real
transient errors (5xx, 408, 429, a connection reset) are retried as the transports
retry them.

One table is printed, a line per source in registry order as the answers arrive
(source, kind, status, what to do). Exit code: 0 when every source is `ok`; 1 when
some source would stop a build (changed, gone, gated, a manual step); else 2 when some
source could not be asked (unreachable, no answer in time), which says nothing yet of
the file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlencode, urlparse

from llava_data import parts, transports
from llava_data.common import StageError, load_params, run_main
from llava_data.origins import Origin
from llava_data.origins import local_copies as local_copies_of

STATUSES = ("ok", "changed", "gone", "gated", "needs a manual step", "unreachable")
# What a probe found -> the status it gives (a "found" file is ok or changed).
STATUS_OF = {
    "missing": "gone",
    "denied": "gated",
    "manual": "needs a manual step",
    "unreachable": "unreachable",
    "no-content": "changed",
}
PROBE_TIMEOUT_S = 15.0  # per request; retries as the transports do (transports.RETRIES)
HEADERS = {"Accept-Encoding": "identity"}
JOBS = 8  # sources asked at once
DEADLINE_S = 60.0  # for the whole run
RESOLVE_TIMEOUT_S = 5.0  # per host: name resolution, then connect, each at most this
CONNECT_TIMEOUT_S = 5.0
COULD_NOT_ASK = ("unreachable",)  # statuses that say nothing yet of the file


@dataclass(frozen=True)
class Probe:
    """What asking one source's upstream returned, before any verdict.

    `outcome`: found (the upstream has a file; `facts` says what it says of it), missing,
    denied, manual (a person must act), unreachable, or no-content (no Hub commit has
    the pinned sha256). `asked` names what was asked; `reason` says what it answered;
    `advice`, when the probe already knows what to do (the transports' own messages).
    `facts` may hold size, sha256, md5, revision, etag, last_modified. `resolved` is a
    Hub commit found for an unpinned revision; `local` marks a file on this machine.
    """

    outcome: str
    asked: str
    facts: dict = field(default_factory=dict)
    reason: str = ""
    advice: str = ""
    resolved: str | None = None
    local: bool = False


@dataclass(frozen=True)
class Row:
    source: str
    kind: str
    status: str
    todo: str


# ---- the pure core ---------------------------------------------------------------------


def judge(origin: Origin, probe: Probe) -> Row:
    """The status of one source and what to do, from what its probe returned."""
    row = _verdict(origin, probe)
    assert row.status in STATUSES, row.status
    return row


def _verdict(origin: Origin, probe: Probe) -> Row:
    name, kind = origin.name, origin.kind
    keep = f"`{name}: /path/to/{origin.file}`"
    if not origin.use:
        return Row(
            name,
            kind,
            "ok",
            f"nothing to do: left out of this profile ({origin.where}.use: false); set it to "
            f"true to use {origin.their_files}",
        )
    if probe.outcome == "found":
        differs = transports.pin_differences(origin, probe.facts)
        if differs:
            return Row(name, kind, "changed", _changed(origin, probe, differs))
        return Row(name, kind, "ok", _ok(origin, probe))
    status = STATUS_OF[probe.outcome]
    if probe.advice:
        return Row(name, kind, status, _join(probe.reason, probe.advice))
    where = transports.origin_key(origin)
    if probe.outcome == "missing":
        if probe.local:
            todo = "put the file there, or fix its path"
        else:
            todo = (
                f"check {where}.{kind} in sources.yaml (the file may have moved), or list a "
                f"copy you have in sources.local.yaml as {keep}"
            )
    elif probe.outcome == "denied":
        todo = (
            f"get access to it (sign in, accept its terms), or download it by hand and list "
            f"it in sources.local.yaml as {keep}"
        )
    elif probe.outcome == "manual":
        todo = transports.manual_steps(origin, kind, origin.spec)
    elif probe.outcome == "unreachable":
        via = (
            "HF_ENDPOINT can point at a Hub mirror"
            if kind == "hf"
            else ("a mirrors.local.yaml can point this URL at a mirror")
        )
        todo = f"check the network and proxy settings ({via}), then run the check again"
    else:
        todo = ""
    return Row(name, kind, status, _join(probe.reason, todo))


def _changed(origin: Origin, probe: Probe, differs: list[str]) -> str:
    held = transports.pinned(origin)
    where = transports.origin_key(origin)
    says = " and ".join(transports.show_fact(f, probe.facts[f]) for f in differs)
    pins = " and ".join(f"{transports.show_fact(f, held[f])} ({where}.{f})" for f in differs)
    head = f"{probe.asked} has {says}; sources.yaml pins {pins}."
    if probe.local:
        return (
            f"{head} Replace it with the pinned file; if the pin is wrong instead: "
            f"{transports.pin_advice(origin, probe.facts, differs)}"
        )
    return f"{head} {transports.pin_advice(origin, probe.facts, differs)}"


def _ok(origin: Origin, probe: Probe) -> str:
    held = transports.pinned(origin)
    same = [transports.show_fact(f, v) for f, v in held.items() if probe.facts.get(f) == v]
    later = [f for f in held if probe.facts.get(f) is None]
    parts = []
    if same:
        parts.append(f"{' and '.join(same)} as pinned")
    if later:
        parts.append(f"{' and '.join(later)} checked once downloaded")
    if not held:
        seen = probe.facts.get("size")
        size = f", {seen:,} bytes now" if isinstance(seen, int) else ""
        parts.append(f"no size or checksum pinned yet: the first fetch pins them{size}")
    if probe.resolved:
        parts.append(f"the fetch pins hf.revision: {probe.resolved}")
    for key, label in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        if probe.facts.get(key):
            parts.append(f"{label} {probe.facts[key]}")
    if probe.reason:
        parts.insert(0, probe.reason)
    return "nothing to do (" + "; ".join(parts) + ")" if parts else "nothing to do"


def _join(reason: str, todo: str) -> str:
    """What happened, then what to do."""
    reason, todo = reason.strip().rstrip("."), todo.strip()
    return f"{reason}: {todo}" if reason and todo else reason or todo


def widths(sources: list[str], kinds: list[str]) -> tuple[int, int, int]:
    """Column widths for these sources, known before any answer (the table streams)."""
    return (
        max(map(len, ["source", *sources])),
        max(map(len, ["kind", *kinds])),
        max(map(len, ["status", *STATUSES])),
    )


HEAD = Row("source", "kind", "status", "what to do")


def line(row: Row, width: tuple[int, int, int]) -> str:
    cells = [row.source.ljust(width[0]), row.kind.ljust(width[1]), row.status.ljust(width[2])]
    return "  ".join([*cells, row.todo]).rstrip() + "\n"


def table(rows: list[Row]) -> str:
    """The rows as one aligned text table."""
    width = widths([r.source for r in rows], [r.kind for r in rows])
    return "".join(line(r, width) for r in [HEAD, *rows])


def exit_code(rows: list[Row]) -> int:
    """0 when every source is ok; 1 when one would stop a build (changed, gone, gated, a
    manual step); else 2 when one could not be asked (what its upstream holds is unknown)."""
    if any(r.status not in ("ok", *COULD_NOT_ASK) for r in rows):
        return 1
    return 2 if any(r.status in COULD_NOT_ASK for r in rows) else 0


def summary(rows: list[Row]) -> str:
    """What the exit code means, in words: which sources would stop a build, which could
    not be asked."""
    stop = [r.source for r in rows if r.status not in ("ok", *COULD_NOT_ASK)]
    unknown = [r.source for r in rows if r.status in COULD_NOT_ASK]
    lines = []
    if stop:
        lines.append(f"{len(stop)} of {len(rows)} sources would stop a build: {', '.join(stop)}")
    if unknown:
        lines.append(
            f"{len(unknown)} of {len(rows)} sources could not be asked (their files are "
            f"neither confirmed nor refused): {', '.join(unknown)}"
        )
    return "\n".join(lines) if lines else f"all {len(rows)} sources are ok"


# ---- the probes ----------------------------------------------------------------------


def _strip_source(message: str, name: str) -> str:
    return message.removeprefix(f"source {name!r}: ").removeprefix(f"source {name!r} ")


class Hosts:
    """Whether each host takes a connection, asked once per run and shared by every
    thread; and the hosts found unreachable since (host -> why).

    `reach(url)` connects once to the host a request to `url` goes to first (the proxy
    the environment sets for it, as requests and huggingface_hub use it, else the URL's
    own host): a name that does not resolve is not retried; a refused, unrouted or
    unanswered connection marks the host too. The threads asking the same host wait
    for the first one's answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: dict[str, threading.Event] = {}
        self._down: dict[str, str] = {}

    def reach(self, url: str) -> str | None:
        """None when the host of `url` takes a connection, else why not (one line)."""
        host, port, label = _first_hop(url)
        key = f"{host}:{port}"
        with self._lock:
            event = self._asked.get(key)
            first = event is None
            if first:
                event = self._asked[key] = threading.Event()
        if first:
            why = _connect(host, port)
            if why:
                self._set(key, f"{label} {why}")
            event.set()
        else:
            event.wait()
        with self._lock:
            return self._down.get(key)

    def not_reached(self) -> list[str]:
        """Why each host found unreachable was, sorted."""
        with self._lock:
            return sorted(self._down.values())

    def down(self, url: str) -> str | None:
        host, port, _ = _first_hop(url)
        with self._lock:
            return self._down.get(f"{host}:{port}")

    def mark(self, url: str, why: str) -> None:
        host, port, _ = _first_hop(url)
        self._set(f"{host}:{port}", why)

    def _set(self, key: str, why: str) -> None:
        with self._lock:
            self._down.setdefault(key, why)


def _first_hop(url: str) -> tuple[str, int, str]:
    """(host, port, how to name it) of the first connection a request to `url` makes."""
    import requests

    parsed = urlparse(url)
    proxies = requests.utils.get_environ_proxies(url)
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if proxy:
        hop = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        port = hop.port or (443 if hop.scheme == "https" else 80)
        return hop.hostname or "", port, f"the proxy {hop.hostname}:{port} (for {parsed.netloc})"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    label = f"{parsed.hostname}:{parsed.port}" if parsed.port else parsed.hostname
    return parsed.hostname or "", port, label or url


def _resolve(host: str, port: int) -> tuple[list, str | None]:
    """The addresses of `host`, or why there are none; a resolver that does not answer
    within RESOLVE_TIMEOUT_S is given up on (its thread is left to finish on its own)."""
    box: dict = {}

    def run() -> None:
        try:
            box["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            box["err"] = err

    worker = threading.Thread(target=run, daemon=True, name=f"resolve {host}")
    worker.start()
    worker.join(RESOLVE_TIMEOUT_S)
    if worker.is_alive():
        return [], f"does not resolve: no answer from the resolver within {RESOLVE_TIMEOUT_S:g} s"
    if "err" in box:
        err = box["err"]
        return [], f"does not resolve ({getattr(err, 'strerror', None) or err})"
    return box["addrs"], None


def _connect(host: str, port: int) -> str | None:
    """None when `host:port` takes a TCP connection (closed at once), else why not."""
    addrs, why = _resolve(host, port)
    if why:
        return why
    end = time.monotonic() + CONNECT_TIMEOUT_S
    reasons = []
    for family, kind, proto, _, address in addrs:
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(address)
            return None
        except ConnectionRefusedError:
            reasons.append("refused the connection")
        except TimeoutError:
            reasons.append(f"took no connection within {CONNECT_TIMEOUT_S:g} s")
        except OSError as err:
            reasons.append(f"could not be connected to ({err.strerror or err})")
    return reasons[0] if reasons else f"took no connection within {CONNECT_TIMEOUT_S:g} s"


def first_url(origin: Origin, local_copy: Path | None) -> str | None:
    """The URL a probe of this source asks first (None: it asks no host)."""
    if local_copy is not None:
        return None
    kind, spec = origin.kind, origin.spec
    if kind == "url" and urlparse(spec).scheme != "file":
        return transports.mirrored(spec)
    if kind == "hf":
        return transports.hf_endpoint()
    if kind == "gdrive":
        api = os.environ.get(transports.GDRIVE_CREDENTIALS_ENV)
        return transports.mirrored(transports.GDRIVE_API_URL if api else transports.GDRIVE_UC_URL)
    return None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def probe(origin: Origin, local_copy: Path | None, hosts: Hosts | None = None) -> Probe:
    """Ask the upstream of one source (or the local copy that replaces it)."""
    hosts = Hosts() if hosts is None else hosts
    if not origin.use:
        return Probe("found", "the registry", reason="left out")
    if local_copy is not None:
        return probe_local(local_copy, listed=True, origin=origin)
    kind, spec = origin.kind, origin.spec
    if kind == "hf" and _hub_offline():
        return Probe("unreachable", kind, reason="HF_HUB_OFFLINE is set, so the Hub is not asked")
    url = first_url(origin, None)
    if url is not None:
        why = hosts.reach(url)
        if why:
            return Probe("unreachable", kind, reason=f"{why}; not asked")
    try:
        if kind == "local":
            return probe_local(Path(spec), listed=False, origin=origin)
        if kind == "url":
            if urlparse(spec).scheme == "file":
                return probe_local(Path(unquote(urlparse(spec).path)), False, origin)
            return probe_http(spec, hosts)
        if kind == "hf":
            return probe_hf(origin, hosts)
        if kind == "gdrive":
            return probe_gdrive(origin, spec, hosts)
    except StageError as err:  # anything a transport raised, as it would stop the fetch
        return Probe("unreachable", kind, reason=_strip_source(str(err), origin.name))
    return Probe("manual", "sources.local.yaml", reason="not listed in sources.local.yaml")


def probe_parts(path: Path, listed: bool, origin: Origin) -> Probe:
    """A folder of a source's parts: every part there (their total size is the fact; a
    glob's parts are the files there that match it)."""
    where = f"the folder {path}" + (" listed in sources.local.yaml" if listed else "")
    origin = origin.listed(parts.folder_names(path))
    missing = [n for n in origin.parts if not (path / n).is_file()]
    if missing or not origin.parts:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        reason = f"{len(missing)} of its {len(origin.parts)} files are not in {path} ({shown})"
        return Probe(
            "manual" if origin.kind == "manual" else "missing",
            where,
            reason=reason if missing else f"no file in {path} matches {origin.file}",
            advice=f"put them there, then run `dvc repro fetch@{origin.name}`",
            local=True,
        )
    total = sum((path / n).stat().st_size for n in origin.parts)
    note = "the fetch uses this folder; the upstream was not asked" if listed else ""
    return Probe("found", where, {"size": total}, reason=note, local=True)


def probe_local(path: Path, listed: bool, origin: Origin) -> Probe:
    if origin.has_parts:
        return probe_parts(path, listed, origin)
    where = f"the copy {path} listed in sources.local.yaml" if listed else f"the local file {path}"
    if not path.is_file():
        if listed:
            return Probe(
                "manual" if origin.kind == "manual" else "missing",
                where,
                reason=f"sources.local.yaml points at {path}, which is not a file",
                advice="fix that line (or remove it to use the origin)",
                local=True,
            )
        return Probe("missing", where, reason=f"{path} does not exist", local=True)
    note = "the fetch uses this copy; the upstream was not asked" if listed else ""
    return Probe("found", where, {"size": path.stat().st_size}, reason=note, local=True)


def _ask(session, method: str, url: str, headers: dict[str, str], hosts: Hosts):
    """One request, retried like a transfer (connection errors, 5xx, 408, 429).

    Returns (response, None) with the body not read (the caller closes it), or
    (None, the last failure) once the retries are spent. A host no request reached
    is marked in `hosts`; the next request to it fails at once. A name that does not
    resolve is not retried.
    """
    import requests
    import urllib3

    if hosts.down(url):
        return None, f"{hosts.down(url)}, a moment ago"
    attempt = 0
    while True:
        try:
            resp = session.request(
                method,
                url,
                headers={**HEADERS, **headers},
                stream=True,
                timeout=PROBE_TIMEOUT_S,
                allow_redirects=True,
            )
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            resp, reason, wait = None, transports._short(err), None
            answered = False
            if transports.is_name_error(err):  # a name that does not resolve: not retried
                hosts.mark(url, f"{urlparse(url).hostname} does not resolve ({reason})")
                return None, reason
        else:
            answered = True
            status = resp.status_code
            if status not in transports.RETRY_STATUSES and status < 500:
                return resp, None
            reason, wait = f"HTTP {status}", transports._retry_after(resp)
            resp.close()
        attempt += 1
        if attempt > transports.RETRIES:
            if not answered:
                hosts.mark(url, reason)
            return None, reason
        time.sleep(transports._backoff(attempt, wait))


def _length(resp) -> int | None:
    """The file's size as an answer gives it: a 206's Content-Range total, a 200's length."""
    if resp.status_code == 206:
        return transports.content_range(resp.headers.get("Content-Range", ""))[1]
    return transports._plain_length(resp)


def _facts(resp) -> dict:
    facts = {"size": _length(resp)}
    if resp.headers.get("ETag"):
        facts["etag"] = resp.headers["ETag"]
    if resp.headers.get("Last-Modified"):
        facts["last_modified"] = resp.headers["Last-Modified"]
    return facts


def _is_html(resp) -> bool:
    return "html" in resp.headers.get("Content-Type", "").lower()


def probe_http(url: str, hosts: Hosts) -> Probe:
    """HEAD the URL; when that gives no size or is refused, GET its first byte."""
    via = transports.mirrored(url)
    asked = transports.shown(url, via)
    with transports.mirror_session() as session:
        head, why = _ask(session, "HEAD", via, {}, hosts)
        if head is None:
            return Probe("unreachable", asked, reason=f"{asked}: {why} (after the retries)")
        head.close()
        if head.status_code in (200, 206) and _length(head) is not None:
            return _answered(asked, head)
        get, why = _ask(session, "GET", via, {"Range": "bytes=0-0"}, hosts)
        if get is None:
            return _answered(asked, head)
        get.close()  # one byte at most was sent; it is not read
        return _answered(asked, get)


def _answered(asked: str, resp) -> Probe:
    status = resp.status_code
    said = f"HTTP {status} {resp.reason or ''}".rstrip()
    if status in (200, 206):
        if _is_html(resp):
            return Probe(
                "missing",
                asked,
                reason=(
                    f"{asked} answers an HTML page, not the file (the file moved, or the site "
                    f"now asks to sign in)"
                ),
            )
        return Probe("found", asked, _facts(resp))
    if status in (401, 403):
        return Probe("denied", asked, reason=f"{asked} answered {said} (access refused)")
    return Probe("missing", asked, reason=f"{asked} answered {said}")


def probe_hf(origin: Origin, hosts: Hosts) -> Probe:
    """The file's metadata on the Hub at the pinned revision (or as the fetch resolves it);
    for a source of parts, its parts' (`probe_hf_parts`)."""
    repo, path, revision = origin.spec
    what = f"{origin.file} in {transports.hf_folder(path) or 'its root'}/"
    what = what if origin.has_parts else f"file {path}"
    asked = f"Hugging Face dataset {repo}, {what} at {revision or 'the default branch'}"
    endpoint = transports.hf_endpoint()
    if hosts.down(endpoint):
        return Probe("unreachable", asked, reason=f"{endpoint}: {hosts.down(endpoint)}")
    try:
        if origin.has_parts:
            return probe_hf_parts(origin, asked)
        meta, _ = transports.hf_resolve(origin, repo, path, revision, timeout=PROBE_TIMEOUT_S)
    except transports.HubError as err:
        outcome = {"gated": "denied", "missing": "missing"}.get(err.outcome, "unreachable")
        if outcome == "unreachable":
            hosts.mark(endpoint, "could not be reached a moment ago")
        return Probe(outcome, asked, advice=_strip_source(str(err), origin.name))
    except transports.NoSuchContent as err:
        return Probe("no-content", asked, advice=_strip_source(str(err), origin.name))
    facts = transports.hf_facts(meta)
    is_commit = revision is not None and transports.COMMIT_HEX.fullmatch(revision)
    resolved = None if is_commit else meta.commit_hash
    if resolved and revision is not None:
        asked = f"{asked} (commit {resolved})"
    return Probe("found", asked, facts, resolved=resolved)


def probe_hf_parts(origin: Origin, asked: str) -> Probe:
    """A source of parts on the Hub, its bodies never asked for: a glob's folder listed
    once (names, sizes, LFS sha256s), a pattern's parts each asked for their metadata
    (HEAD), at once. When the revision is not a commit, the first part's commit is the
    one the fetch pins, and a pattern's other parts are asked at it. The facts are the
    parts' total size and listing sha256, each when every part gives its own."""
    repo, path, revision = origin.spec
    folder = transports.hf_folder(path)
    commit = revision if revision and transports.COMMIT_HEX.fullmatch(revision) else None
    resolved = None

    def head(name: str, at: str | None):
        where = transports.hf_part_path(folder, name)
        return transports._hf_metadata(origin, repo, where, at, timeout=PROBE_TIMEOUT_S)[0]

    if origin.by_glob:
        held = transports.hf_list_folder(origin, repo, folder, revision, PROBE_TIMEOUT_S)
        origin = origin.listed(f.name for f in held)
        if not origin.parts:
            text = transports.no_match(origin, repo, folder, revision, held, None)
            return Probe("missing", asked, advice=_strip_source(text, origin.name))
        by_name = {f.name: f for f in held}
        rows = [(n, by_name[n].size, by_name[n].sha256) for n in origin.parts]
        if commit is None:
            resolved = commit = head(origin.parts[0], revision).commit_hash
    else:
        metas = {}
        if commit is None:
            try:
                metas[origin.parts[0]] = head(origin.parts[0], revision)
            except transports.HubError as err:
                if err.outcome != "missing":
                    raise
                metas[origin.parts[0]] = err
            else:
                resolved = commit = metas[origin.parts[0]].commit_hash
        rest = [n for n in origin.parts if n not in metas]
        metas |= dict(zip(rest, _each(lambda n: head(n, commit or revision), rest), strict=True))
        failed = [m for m in metas.values() if isinstance(m, Exception)]
        gone = [m for m in failed if isinstance(m, transports.HubError) and m.outcome == "missing"]
        if len(gone) < len(failed):  # gated, unreachable: as for one file
            raise next(m for m in failed if m not in gone)
        if gone:  # what the folder holds instead
            at = commit or revision
            held = transports.hf_list_folder(origin, repo, folder, at, PROBE_TIMEOUT_S)
            text = transports.parts_not_there(origin, repo, folder, at, held, None)
            return Probe("missing", asked, advice=_strip_source(text, origin.name))
        rows = [(n, metas[n].size, transports.hf_facts(metas[n])["sha256"]) for n in origin.parts]
    facts = {**parts.upstream_facts(rows), "revision": commit}
    return Probe("found", asked, facts, reason=f"{len(rows)} files", resolved=resolved)


def _each(call, items: list) -> list:
    """`call(item)` for every item, JOBS at a time (`_start`); results in the items' order,
    the exception in place of a call that raised."""
    results: list = [None] * len(items)

    def task(n: int) -> None:
        try:
            results[n] = call(items[n])
        except Exception as err:  # the caller says what each failure means
            results[n] = err

    for thread in _start(len(items), JOBS, task, "part"):
        thread.join()
    return results


def _start(count: int, jobs: int, task, name: str) -> list[threading.Thread]:
    """Run `task(n)` for every n below `count`, `jobs` at a time, on daemon threads (a
    probe the run's deadline leaves behind must not hold the process); return them,
    started."""
    todo = list(range(count))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop(0)
            task(n)

    threads = [
        threading.Thread(target=work, daemon=True, name=f"{name} {k}")
        for k in range(max(1, min(jobs, count)))
    ]
    for thread in threads:
        thread.start()
    return threads


def probe_gdrive(origin: Origin, file_id: str, hosts: Hosts) -> Probe:
    """Drive's metadata of the file (with credentials), else the public download's answer."""
    asked = f"Google Drive file {file_id}"
    credentials = os.environ.get(transports.GDRIVE_CREDENTIALS_ENV)
    with transports.mirror_session() as session:
        if credentials:
            return _drive_api(origin, file_id, credentials, session, asked, hosts)
        return _drive_public(file_id, session, asked, hosts)


def _drive_api(
    origin: Origin, file_id: str, credentials: str, session, asked: str, hosts: Hosts
) -> Probe:
    try:
        token = transports.drive_access_token(origin, credentials)
    except transports.DriveAuthError as err:
        outcome = "denied" if err.outcome == "gated" else "unreachable"
        return Probe(outcome, asked, advice=_strip_source(str(err), origin.name))
    query = urlencode({"fields": "id,name,size,md5Checksum", "supportsAllDrives": "true"})
    url = f"{transports.GDRIVE_API_URL}/{file_id}?{query}"
    auth = {"Authorization": f"Bearer {token}"}
    resp, why = _ask(session, "GET", transports.mirrored(url), auth, hosts)
    if resp is None:
        return Probe("unreachable", asked, reason=f"the Drive API: {why} (after the retries)")
    with resp:
        status = resp.status_code
        if status in (401, 403):
            return Probe(
                "denied",
                asked,
                reason=f"the Drive API refused it (HTTP {status}) to the account in "
                f"{transports.GDRIVE_CREDENTIALS_ENV}",
                advice="share the file with that account, or unset the variable to use the "
                "public download",
            )
        if status != 200:
            return Probe("missing", asked, reason=f"the Drive API answered HTTP {status}")
        try:
            meta = json.loads(resp.raw.read(transports.HTML_LIMIT, decode_content=True))
        except ValueError:
            meta = None
    if not isinstance(meta, dict):
        return Probe("unreachable", asked, reason="the Drive API did not answer JSON")
    if meta.get("size") is None:
        return Probe(
            "manual",
            asked,
            reason="Drive gives it no size (a folder, or a Google Docs file, not a plain file)",
        )
    facts = {"size": int(meta["size"]), "md5": meta.get("md5Checksum")}
    return Probe("found", f"{asked} ({meta.get('name', '?')})", facts)


def _drive_public(file_id: str, session, asked: str, hosts: Hosts) -> Probe:
    url = f"{transports.GDRIVE_UC_URL}?{urlencode({'export': 'download', 'id': file_id})}"
    tried: list[str] = []
    for _ in range(3):
        tried.append(url)
        resp, why = _ask(session, "GET", transports.mirrored(url), {"Range": "bytes=0-0"}, hosts)
        if resp is None:
            return Probe("unreachable", asked, reason=f"Google Drive: {why} (after the retries)")
        with resp:
            if resp.status_code in (200, 206) and not _is_html(resp):
                return Probe("found", asked, _facts(resp))
            if resp.status_code in (401, 403):
                return Probe("denied", asked, reason=f"Drive answered HTTP {resp.status_code}")
            if resp.status_code >= 400:
                return Probe("missing", asked, reason=f"Drive answered HTTP {resp.status_code}")
            raw = resp.raw.read(transports.HTML_LIMIT, decode_content=True) or b""
            page, page_url = raw.decode("utf-8", "replace"), resp.url
        following = transports.drive_confirm_url(page, page_url)
        if following is None or following in tried:
            kind = transports.drive_page_kind(page)
            reason = f"Drive did not serve it: {transports.drive_page_reason(page)}"
            outcome = "denied" if kind == "access" else "manual"
            return Probe(outcome, asked, reason=reason)
        url = following  # the "can't scan for viruses" page: ask its download for a byte
    last = transports.redact(tried[-1])
    return Probe("manual", asked, reason=f"Drive kept answering pages (last: {last})")


# ---- the command -------------------------------------------------------------------------


def origins_of(registry: Path, profile: str, only: list[str] | None = None) -> list[Origin]:
    """The origins of `profile` (those named in `only`), in registry order; validated."""
    sources = load_params(registry, "sources")
    unknown = sorted(set(only or []) - set(sources))
    if unknown:
        raise StageError(f"{registry}: no source {', '.join(unknown)}")
    return [
        Origin.parse(name, entry, profile)
        for name, entry in sources.items()
        if not only or name in only
    ]


def check(
    registry: Path,
    profile: str,
    local_copies: Path | None,
    only: list[str] | None = None,
    jobs: int = JOBS,
    deadline: float = DEADLINE_S,
    on_row=None,
    hosts: Hosts | None = None,
) -> list[Row]:
    """Probe and judge every source of `profile` (or those named in `only`), `jobs` at a
    time, for at most `deadline` seconds in all; rows in registry order.

    `on_row(row)` is called for each row in that order as soon as it and those before
    it are known. A source not answered by the deadline gets a row that says so (its
    thread is left behind: it only reads headers, and the process ends with the report).
    """
    origins = origins_of(registry, profile, only)
    copies = local_copies_of(local_copies)
    hosts = Hosts() if hosts is None else hosts
    rows: list[Row | None] = [None] * len(origins)
    done = threading.Condition()

    def task(n: int) -> None:
        origin = origins[n]
        try:
            row = judge(origin, probe(origin, copies.get(origin.name), hosts))
        except Exception as err:  # one source's surprise must not hide the others
            why = f"the check itself failed on it ({transports._short(err)})"
            row = Row(origin.name, origin.kind, "unreachable", f"{why}: please report it")
        with done:
            rows[n] = row
            done.notify_all()

    # every host is asked at once, so that slow names do not queue behind each other
    urls = {first_url(o, copies.get(o.name)) for o in origins} - {None}
    for url in sorted(urls):
        threading.Thread(target=hosts.reach, args=(url,), daemon=True, name="reach").start()
    _start(len(origins), jobs, task, "probe")
    end = time.monotonic() + deadline
    out: list[Row] = []
    with done:
        while len(out) < len(origins):
            row = rows[len(out)]
            if row is None:
                left = end - time.monotonic()
                if left > 0:
                    done.wait(left)
                    continue
                origin = origins[len(out)]
                row = Row(origin.name, origin.kind, "unreachable", _late(origin, deadline))
            out.append(row)
            if on_row is not None:
                on_row(row)
    return out


def _late(origin: Origin, deadline: float) -> str:
    where = first_url(origin, None)
    asked = f" ({urlparse(where).hostname})" if where else ""
    return (
        f"no answer within the run's {deadline:g} s deadline{asked}: check the network and "
        f"proxy settings, or give it longer (--deadline {max(2 * deadline, 120):g}; with make: "
        f"make check-upstream ARGS='--deadline {max(2 * deadline, 120):g}')"
    )


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, type=Path, help="params file holding `sources`")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--local-copies", type=Path, help="YAML: source name -> existing file")
    ap.add_argument("--mirrors", type=Path, help="YAML: URL prefix -> mirror base")
    ap.add_argument("--source", action="append", help="check only this source (repeatable)")
    ap.add_argument("--jobs", type=int, default=JOBS, help=f"sources asked at once ({JOBS})")
    ap.add_argument(
        "--deadline", type=positive, default=DEADLINE_S, help=f"seconds for it all ({DEADLINE_S:g})"
    )
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")

    transports.use_mirrors(args.mirrors)
    origins = origins_of(args.registry, args.profile, args.source)
    width = widths([o.name for o in origins], [o.kind for o in origins])
    sys.stdout.write(line(HEAD, width))
    sys.stdout.flush()

    def show(row: Row) -> None:
        sys.stdout.write(line(row, width))
        sys.stdout.flush()

    hosts = Hosts()
    rows = check(
        args.registry,
        args.profile,
        args.local_copies,
        args.source,
        args.jobs,
        args.deadline,
        show,
        hosts,
    )
    for why in hosts.not_reached():
        n = sum(r.todo.startswith(why) for r in rows)
        print(f"not reached: {why} ({n} source{'s' * (n != 1)} not asked)", file=sys.stderr)
    print(summary(rows), file=sys.stderr)
    return exit_code(rows)


def _main(argv=None) -> None:
    code = main(argv)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(run_main(_main))
