"""How a source file arrives: local copy, HTTP(S) with resume, Hugging Face, Google Drive, manual.

Each transport writes or resumes `<part>`; verification and the final rename
belong to the fetch stage.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

from stages.common import CHUNK, StageError, progress

RETRIES = 5
BACKOFF_S = 1.0
TIMEOUT_S = 60


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
        revision = value.get("revision")
        return (value["repo"], value["path"], revision)
    if kind == "gdrive":
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise StageError(f"{where}: `gdrive` needs an id")
        return value["id"]
    if kind == "manual":
        if not isinstance(value, dict) or not isinstance(value.get("instructions"), str):
            raise StageError(f"{where}: `manual` needs instructions")
        return value["instructions"]
    raise StageError(f"{where}: unknown origin kind {kind!r}")


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


def obtain(kind: str, spec, origin, part: Path) -> None:
    """Write or resume `part` from the origin."""
    if kind == "local":
        src = Path(spec)
        if not src.is_file():
            raise StageError(f"source {origin.name!r}: local file {src} does not exist")
        copy_file(src, part)
    elif kind == "url":
        http_download(origin.name, spec, part, origin.size)
    elif kind == "hf":
        hf_download(origin.name, *spec, part)
    else:
        raise StageError(manual_instruction(origin, kind, spec))


def manual_instruction(origin, kind: str, spec) -> str:
    """What the user must do for a file no transport can fetch."""
    what = (
        f"download Google Drive file https://drive.google.com/file/d/{spec}/view"
        if kind == "gdrive"
        else spec
    )
    held = ", ".join(f"{a} {v}" for a, v in origin.checksums) or "no checksum yet"
    return (
        f"source {origin.name!r} ({origin.file}) needs a manual step: {what}. Then list the "
        f"file in sources.local.yaml as `{origin.name}: /path/to/{origin.file}` and run "
        f"`dvc repro fetch@{origin.name}`; it will be held to {held}"
    )


def http_download(name: str, url: str, part: Path, size: int | None) -> None:
    """Download `url` into `part`, resuming from its current length with Range requests."""
    import requests

    if urlparse(url).scheme == "file":
        copy_file(Path(urlparse(url).path), part)
        return
    part.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have == size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as resp:
                if resp.status_code == 416 and have:
                    return  # nothing left to send: verification decides
                if resp.status_code in (200, 206):
                    append = resp.status_code == 206
                    total = _total_length(resp, have if append else 0)
                    _stream(resp, part, append, total, name)
                    return
                if resp.status_code < 500 and resp.status_code != 429:
                    raise StageError(
                        f"source {name!r}: {url} answered HTTP {resp.status_code}; check the URL "
                        f"in the registry, or fetch the file by hand (see README, manual sources)"
                    )
                reason = f"HTTP {resp.status_code}"
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as err:
            reason = type(err).__name__
        attempt += 1
        if attempt > RETRIES:
            kept = part.stat().st_size if part.exists() else 0
            raise StageError(
                f"source {name!r}: {url} failed {attempt} times ({reason}); {kept:,} bytes "
                f"are kept in {part} and the next `dvc repro` resumes from there"
            )
        time.sleep(BACKOFF_S * 2 ** (attempt - 1))


def _total_length(resp, offset: int) -> int | None:
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _stream(resp, part: Path, append: bool, total: int | None, name: str) -> None:
    mode = "ab" if append else "wb"
    with open(part, mode) as fh, progress(total, name) as bar:
        bar.update(fh.tell())
        for block in resp.iter_content(CHUNK):
            fh.write(block)
            bar.update(len(block))


def hf_download(name: str, repo: str, path: str, revision: str | None, part: Path) -> None:
    """Download one file of a Hugging Face dataset repo (resumable) into `part`.

    The token comes from the environment (HF_TOKEN) or the user's login, as
    huggingface_hub decides; it is never written anywhere by this code.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    local_dir = part.parent / "hf"
    try:
        got = hf_hub_download(
            repo_id=repo,
            filename=path,
            repo_type="dataset",
            revision=revision or "main",
            local_dir=local_dir,
        )
    except HfHubHTTPError as err:
        raise StageError(
            f"source {name!r}: Hugging Face refused {repo}/{path}@{revision or 'main'}: "
            f"{str(err).splitlines()[0]}. If the repo is gated, accept its terms on the Hub and "
            f"log in (`huggingface-cli login`) or set HF_TOKEN"
        ) from None
    os.replace(got, part)
