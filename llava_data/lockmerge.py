"""A git merge driver for dvc.lock: two branches that each rebuilt other stages merge cleanly.

Registered by `make merge-driver` (git config `merge.dvc-lock.driver`; `.gitattributes`
names it for dvc.lock), git calls it as `python -m llava_data.lockmerge %O %A %B`: the
common ancestor's lock, ours (the result is written here) and theirs. Per stage:
- both sides the same, or only one side changed it: that side's entry (a stage one side
  removed and the other left alone is removed);
- both sides changed it differently: ours, with its `cmd` replaced by a marker, so that
  `dvc status` names it ("changed command") and `make repro` rebuilds it and writes its
  entry afresh.
Stages keep their place; a stage only theirs has goes after the stage it follows there.
The file is written by DVC's own YAML writer, so after `make repro` the lock is byte for
byte what DVC writes. Exit 0 (the merge goes on); stages marked are named on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dvc.utils.serialize import dump_yaml, parse_yaml_for_update

REBUILD = "changed on both sides of a git merge: `make repro` rebuilds this stage"


def merge(base: dict, ours: dict, theirs: dict) -> tuple[dict, list[str]]:
    """The merged lock and the names of the stages marked for a rebuild."""
    b, o, t = (dict((x or {}).get("stages") or {}) for x in (base, ours, theirs))
    order = list(o)
    for name in t:  # theirs' new stages after the stage they follow in theirs
        if name not in order:
            before = list(t)[: list(t).index(name)]
            at = max((order.index(p) + 1 for p in before if p in order), default=len(order))
            order.insert(at, name)
    stages, marked = {}, []
    for name in order:
        mine, yours, was = o.get(name), t.get(name), b.get(name)
        if mine == yours:
            chosen = mine
        elif mine == was:
            chosen = yours
        elif yours == was:
            chosen = mine
        else:
            chosen = dict(mine if mine is not None else yours)
            chosen["cmd"] = REBUILD
            marked.append(name)
        if chosen is not None:
            stages[name] = chosen
    merged = dict(ours or {})
    merged["stages"] = stages
    return merged, marked


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        print("usage: python -m llava_data.lockmerge ANCESTOR OURS THEIRS", file=sys.stderr)
        return 2
    paths = [Path(p) for p in argv[:3]]
    base, ours, theirs = (
        parse_yaml_for_update(p.read_text(encoding="utf-8"), str(p)) if p.stat().st_size else {}
        for p in paths
    )
    merged, marked = merge(base, ours, theirs)
    dump_yaml(paths[1], merged)
    if marked:
        names = ", ".join(marked)
        print(
            f"dvc.lock: {len(marked)} stage(s) changed on both sides, marked for a rebuild "
            f"({names}); run `make repro`, then commit dvc.lock",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
