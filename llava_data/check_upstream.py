"""Ask every source of a profile, without downloading it, whether its upstream still has it.

For each source of `--profile` in the registry, one probe asks the upstream what it
holds now, reading headers and metadata only (never a file's body):

- Hugging Face: the file's metadata at the pinned revision (size, LFS sha256); an
  unpinned revision with a pinned sha256 is resolved by the file's history, as the
  fetch stage resolves it;
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
what to do; the probes only ask. One table is printed (source, kind, status, what to
do); the exit code is 1 when any source is not `ok`, i.e. when a build would stop.
`--mirrors` rewrites the URLs asked, as it does for the fetch stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlencode, urlparse

from llava_data import transports
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
        todo = (
            "check the network and proxy settings (a mirrors.local.yaml can point this URL at "
            "a mirror), then run the check again"
        )
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


def table(rows: list[Row]) -> str:
    """The rows as one aligned text table."""
    head = Row("source", "kind", "status", "what to do")
    widths = [max(len(getattr(r, f)) for r in [head, *rows]) for f in ("source", "kind", "status")]
    lines = []
    for r in [head, *rows]:
        cells = [r.source.ljust(widths[0]), r.kind.ljust(widths[1]), r.status.ljust(widths[2])]
        lines.append("  ".join([*cells, r.todo]).rstrip())
    return "\n".join(lines) + "\n"


def exit_code(rows: list[Row]) -> int:
    """0 when every source is ok (a build would not stop on one), else 1."""
    return 0 if all(r.status == "ok" for r in rows) else 1


# ---- the probes ----------------------------------------------------------------------


def _strip_source(message: str, name: str) -> str:
    return message.removeprefix(f"source {name!r}: ").removeprefix(f"source {name!r} ")


class Down(dict):
    """Hosts that could not be reached in this run (host -> why): the sources after the
    first on such a host are not retried all over again."""

    def ask(self, url: str) -> str | None:
        return self.get(urlparse(url).netloc)

    def mark(self, url: str, why: str) -> None:
        self[urlparse(url).netloc] = why


def probe(origin: Origin, local_copy: Path | None, down: Down | None = None) -> Probe:
    """Ask the upstream of one source (or the local copy that replaces it)."""
    down = Down() if down is None else down
    if local_copy is not None:
        return probe_local(local_copy, listed=True, origin=origin)
    kind, spec = origin.kind, origin.spec
    try:
        if kind == "local":
            return probe_local(Path(spec), listed=False, origin=origin)
        if kind == "url":
            if urlparse(spec).scheme == "file":
                return probe_local(Path(unquote(urlparse(spec).path)), False, origin)
            return probe_http(spec, down)
        if kind == "hf":
            return probe_hf(origin, down)
        if kind == "gdrive":
            return probe_gdrive(origin, spec, down)
    except StageError as err:  # anything a transport raised, as it would stop the fetch
        return Probe("unreachable", kind, reason=_strip_source(str(err), origin.name))
    return Probe("manual", "sources.local.yaml", reason="not listed in sources.local.yaml")


def probe_local(path: Path, listed: bool, origin: Origin) -> Probe:
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


def _ask(session, method: str, url: str, headers: dict[str, str], down: Down):
    """One request, retried like a transfer (connection errors, 5xx, 408, 429).

    Returns (response, None) with the body not read (the caller closes it), or
    (None, the last failure) once the retries are spent. A host no request reached
    is marked in `down`; the next request to it fails at once.
    """
    import requests
    import urllib3

    if down.ask(url):
        return None, f"{down.ask(url)}, a moment ago"
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
                down.mark(url, reason)
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


def probe_http(url: str, down: Down) -> Probe:
    """HEAD the URL; when that gives no size or is refused, GET its first byte."""
    via = transports.mirrored(url)
    asked = transports.shown(url, via)
    with transports.mirror_session() as session:
        head, why = _ask(session, "HEAD", via, {}, down)
        if head is None:
            return Probe("unreachable", asked, reason=f"{asked}: {why} (after the retries)")
        head.close()
        if head.status_code in (200, 206) and _length(head) is not None:
            return _answered(asked, head)
        get, why = _ask(session, "GET", via, {"Range": "bytes=0-0"}, down)
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


def probe_hf(origin: Origin, down: Down) -> Probe:
    """The file's metadata on the Hub at the pinned revision (or as the fetch resolves it)."""
    repo, path, revision = origin.spec
    asked = f"Hugging Face dataset {repo}, file {path} at {revision or 'the default branch'}"
    endpoint = transports.hf_endpoint()
    if down.ask(endpoint):
        return Probe("unreachable", asked, reason=f"{endpoint}: {down.ask(endpoint)}")
    try:
        meta, _ = transports.hf_resolve(origin, repo, path, revision, timeout=PROBE_TIMEOUT_S)
    except transports.HubError as err:
        outcome = {"gated": "denied", "missing": "missing"}.get(err.outcome, "unreachable")
        if outcome == "unreachable":
            down.mark(endpoint, "could not be reached a moment ago")
        return Probe(outcome, asked, advice=_strip_source(str(err), origin.name))
    except transports.NoSuchContent as err:
        return Probe("no-content", asked, advice=_strip_source(str(err), origin.name))
    facts = transports.hf_facts(meta)
    is_commit = revision is not None and transports.COMMIT_HEX.fullmatch(revision)
    resolved = None if is_commit else meta.commit_hash
    if resolved and revision is not None:
        asked = f"{asked} (commit {resolved})"
    return Probe("found", asked, facts, resolved=resolved)


def probe_gdrive(origin: Origin, file_id: str, down: Down) -> Probe:
    """Drive's metadata of the file (with credentials), else the public download's answer."""
    asked = f"Google Drive file {file_id}"
    credentials = os.environ.get(transports.GDRIVE_CREDENTIALS_ENV)
    with transports.mirror_session() as session:
        if credentials:
            return _drive_api(origin, file_id, credentials, session, asked, down)
        return _drive_public(file_id, session, asked, down)


def _drive_api(
    origin: Origin, file_id: str, credentials: str, session, asked: str, down: Down
) -> Probe:
    try:
        token = transports.drive_access_token(origin, credentials)
    except transports.DriveAuthError as err:
        outcome = "denied" if err.outcome == "gated" else "unreachable"
        return Probe(outcome, asked, advice=_strip_source(str(err), origin.name))
    query = urlencode({"fields": "id,name,size,md5Checksum", "supportsAllDrives": "true"})
    url = f"{transports.GDRIVE_API_URL}/{file_id}?{query}"
    auth = {"Authorization": f"Bearer {token}"}
    resp, why = _ask(session, "GET", transports.mirrored(url), auth, down)
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


def _drive_public(file_id: str, session, asked: str, down: Down) -> Probe:
    url = f"{transports.GDRIVE_UC_URL}?{urlencode({'export': 'download', 'id': file_id})}"
    tried: list[str] = []
    for _ in range(3):
        tried.append(url)
        resp, why = _ask(session, "GET", transports.mirrored(url), {"Range": "bytes=0-0"}, down)
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


def check(
    registry: Path, profile: str, local_copies: Path | None, only: list[str] | None = None
) -> list[Row]:
    """Probe and judge every source of `profile` (or those named in `only`)."""
    sources = load_params(registry, "sources")
    unknown = sorted(set(only or []) - set(sources))
    if unknown:
        raise StageError(f"{registry}: no source {', '.join(unknown)}")
    origins = [
        Origin.parse(name, entry, profile)
        for name, entry in sources.items()
        if not only or name in only
    ]
    copies = local_copies_of(local_copies)
    down = Down()
    return [judge(origin, probe(origin, copies.get(origin.name), down)) for origin in origins]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, type=Path, help="params file holding `sources`")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--local-copies", type=Path, help="YAML: source name -> existing file")
    ap.add_argument("--mirrors", type=Path, help="YAML: URL prefix -> mirror base")
    ap.add_argument("--source", action="append", help="check only this source (repeatable)")
    args = ap.parse_args(argv)

    transports.use_mirrors(args.mirrors)
    rows = check(args.registry, args.profile, args.local_copies, args.source)
    sys.stdout.write(table(rows))
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        print(
            f"{len(bad)} of {len(rows)} sources would stop a build: "
            f"{', '.join(r.source for r in bad)}",
            file=sys.stderr,
        )
    else:
        print(f"all {len(rows)} sources are ok", file=sys.stderr)
    return exit_code(rows)


def _main(argv=None) -> None:
    code = main(argv)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(run_main(_main))
