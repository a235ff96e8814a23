"""Post the data review on its pull request as one comment, updated on every later push.

`python -m llava_data.review_comment --report review/report.md --pr N` finds the comment
that begins with the review's marker (`llava_data.review.MARKER`) among the pull request's
comments and edits it, or adds it if there is none. GitHub's REST API: GITHUB_API_URL
(default https://api.github.com), GITHUB_REPOSITORY (owner/name) and GITHUB_TOKEN, as a
GitHub Actions job has them. The token goes in the Authorization header only: no message
of this module prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import requests

from llava_data.common import StageError, run_main
from llava_data.review import MARKER

LIMIT = 65536  # GitHub's largest comment body, in characters
TIMEOUT = 30


def body_of(report: str, link: str | None = None) -> str:
    """The comment: the report, cut to GitHub's limit with a note where it was cut."""
    if not report.startswith(MARKER):
        report = f"{MARKER}\n{report}"
    if len(report) <= LIMIT:
        return report
    note = "\n\n…the report is longer than a comment can be" + (
        f"; the whole report: {link}" if link else "; the whole report is the job's artifact"
    )
    return report[: LIMIT - len(note)] + note


def post(api: str, repo: str, pr: int, token: str, body: str, session=None) -> tuple[str, int]:
    """("updated" | "created", the comment's id)."""
    http = session or requests.Session()
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    url = f"{api.rstrip('/')}/repos/{repo}/issues/{pr}/comments"
    found = None
    page = f"{url}?per_page=100"
    while page and found is None:
        resp = _call(http, "GET", page, headers)
        found = next((c for c in resp.json() if str(c.get("body", "")).startswith(MARKER)), None)
        page = resp.links.get("next", {}).get("url")
    if found is not None:
        edit = f"{api.rstrip('/')}/repos/{repo}/issues/comments/{found['id']}"
        return "updated", _call(http, "PATCH", edit, headers, {"body": body}).json()["id"]
    return "created", _call(http, "POST", url, headers, {"body": body}).json()["id"]


def _call(http, method: str, url: str, headers: dict, payload: dict | None = None):
    try:
        resp = http.request(method, url, headers=headers, json=payload, timeout=TIMEOUT)
    except requests.RequestException as err:
        raise StageError(
            f"{method} {url}: {type(err).__name__}; the comment was not posted"
        ) from None
    if resp.status_code >= 400:
        hint = " (the token needs `pull-requests: write`)" if resp.status_code in (401, 403) else ""
        raise StageError(
            f"{method} {url}: HTTP {resp.status_code}{hint}; the comment was not posted"
        )
    return resp


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--pr", type=int, required=True, help="the pull request's number")
    ap.add_argument("--link", help="where the whole report can be read, if it is cut")
    args = ap.parse_args(argv)
    missing = [v for v in ("GITHUB_REPOSITORY", "GITHUB_TOKEN") if not os.environ.get(v)]
    if missing:
        raise StageError(f"{' and '.join(missing)} not set: the comment was not posted")
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    body = body_of(args.report.read_text(encoding="utf-8"), args.link)
    how, cid = post(api, os.environ["GITHUB_REPOSITORY"], args.pr, os.environ["GITHUB_TOKEN"], body)
    print(f"review comment {cid} {how} on pull request #{args.pr}")


if __name__ == "__main__":
    sys.exit(run_main(main))
