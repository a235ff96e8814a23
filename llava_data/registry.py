"""Write back to the source registry what a first download learned: size, sha256, commit.

The registry keeps one line per origin (`    full: {url: ..., size: null, sha256: null}`);
only `null` values on that one line are filled in, so comments, order and every
other line stay byte-identical and the change reads clearly in `git diff`.
"""

from __future__ import annotations

import re
from pathlib import Path

from llava_data.common import StageError, atomic_path

FIELDS = ("size", "sha256", "revision")


def _line_of(lines: list[str], name: str, key: str, one_line: bool = False) -> int | None:
    """The index of `sources.<name>.<key>`'s line in `lines` (with `one_line`, only a
    `{...}` value on that line), or None."""
    in_source = False
    value = r"\{" if one_line else ""
    for n, line in enumerate(lines):
        if re.match(rf"^  {re.escape(name)}:\s*$", line):
            in_source = True
        elif in_source and re.match(r"^  \S", line):
            break
        elif in_source and re.match(rf"^    {re.escape(key)}:\s*{value}", line):
            return n
    return None


def fill_nulls(text: str, name: str, profile: str, learned: dict[str, str | int]) -> str:
    """`text` with the `null`s of `learned`'s keys filled on `sources.<name>.<profile>`'s line."""
    lines = text.splitlines(keepends=True)
    n = _line_of(lines, name, profile, one_line=True)
    if n is None:
        raise StageError(
            f"the registry has no one-line `sources.{name}.{profile}` entry to record {learned} in"
        )
    line = lines[n]
    for key, value in learned.items():
        if key not in FIELDS:
            raise ValueError(f"cannot record {key!r}")
        line = re.sub(rf"\b{key}: null\b", f"{key}: {value}", line, count=1)
    lines[n] = line
    return "".join(lines)


def entry_lines(registry: Path | None, name: str, profile: str) -> str | None:
    """Where `sources.<name>.file` and `sources.<name>.<profile>` stand in the registry
    file, for a message: "sources.yaml lines 184 and 187" (None when it cannot say)."""
    try:
        lines = registry.read_text(encoding="utf-8").splitlines() if registry else []
    except OSError:
        return None
    found = [_line_of(lines, name, "file"), _line_of(lines, name, profile, one_line=True)]
    numbers = [str(n + 1) for n in found if n is not None]
    if not numbers:
        return None
    return f"{registry} line{'s' * (len(numbers) > 1)} {' and '.join(numbers)}"


def record(
    registry: Path, name: str, profile: str, learned: dict[str, str | int]
) -> dict[str, str | int]:
    """Fill what was learned into the registry file, atomically; return what was filled.

    A key whose value on that line is not `null` (or that the line lacks) is left out of
    the result, so the caller can say what still has to be recorded by hand.
    """
    text = registry.read_text(encoding="utf-8")
    updated, filled = text, {}
    for key, value in learned.items():
        new = fill_nulls(updated, name, profile, {key: value})
        if new != updated:
            filled[key] = value
        updated = new
    if updated != text:
        with atomic_path(registry) as tmp:
            tmp.write_text(updated, encoding="utf-8")
    return filled
