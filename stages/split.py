"""Split an annotation file into its parts (`splits.<name>`) and compare them with upstream.

Reads the file in `--file` (a fetch output folder), the reference files its rules are
`shared_with` (`--reference name=folder`) and the upstream files of parts to compare
(`--compare part=folder`); names the part of every record (`llava_data.splitting`), and
writes the index the mix stage reads plus metrics: records per part, measured against
published where the params give the published count, what placed them, and per compared
part how many records are identical, only here or only upstream. With `--versus
name=index`, it also reports which records of that other split are not in this file
(replaced) and which of this file's are new, and for each replaced record the new
record on the same image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from llava_data import jsonscan, mixcore, splitting
from llava_data.common import (
    StageError,
    load_params,
    named_folders,
    only_file,
    run_main,
    write_json,
    write_report,
)


def replacements(old: splitting.SplitIndex, new_index, new_parts: np.ndarray):
    """(metrics, report rows): the records of `old` missing from the new file, by old part,
    the new file's records missing from `old`, by new part, and per missing old record the
    new records on its (first) image."""
    old_keys = [d.tobytes() for d in old.index.digests]
    new_keys = [d.tobytes() for d in new_index.digests]
    old_set, new_set = set(old_keys), set(new_keys)
    gone = [i for i, k in enumerate(old_keys) if k not in new_set]
    added = [i for i, k in enumerate(new_keys) if k not in old_set]
    on_image: dict[str, list[int]] = {}
    for i in added:
        first = splitting.first_image(new_index.images[i])
        if first is not None:
            on_image.setdefault(first, []).append(i)
    old_images = _images_of(old.index, gone)
    rows, replaced_by = [], {}
    for i, image in zip(gone, old_images, strict=True):
        old_part = old.parts[old.codes[i]]
        matches = on_image.get(image or "", [])
        for j in matches or [None]:
            new_part = "" if j is None else str(new_parts[j])
            rows.append(
                (
                    old.index.ids[i],
                    old_part,
                    image or "",
                    "" if j is None else new_index.ids[j],
                    new_part,
                )
            )
            key = f"{old_part} -> {new_part or '(nothing on that image)'}"
            replaced_by[key] = replaced_by.get(key, 0) + 1
    count = lambda parts: {p: parts.count(p) for p in sorted(set(parts))}  # noqa: E731
    metrics = {
        "replaced": count([old.parts[old.codes[i]] for i in gone]),
        "added": count([str(new_parts[i]) for i in added]),
        "replaced_by": dict(sorted(replaced_by.items())),
    }
    return metrics, rows


def _images_of(index: jsonscan.RecordIndex, rows: list[int]) -> list[str | None]:
    """The first image of each record `rows` of an index that holds no images (read back)."""
    out = []
    for _, obj in jsonscan.iter_records(index, rows):
        image = obj.get("image")
        out.append(splitting.first_image(tuple(image) if isinstance(image, list) else image))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", required=True, help="the name of the split in params.yaml")
    ap.add_argument("--file", required=True, type=Path, help="fetch output folder to split")
    ap.add_argument("--reference", action="append", default=[], help="name=fetch folder")
    ap.add_argument("--compare", action="append", default=[], help="part=fetch folder")
    ap.add_argument("--versus", help="name=index of another split, to report replacements")
    ap.add_argument("--replaced", type=Path, help="TSV of replaced records (with --versus)")
    ap.add_argument("--params", required=True)
    ap.add_argument("--profile", required=True, help="whose published counts to compare with")
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    args = ap.parse_args(argv)

    spec = splitting.SplitSpec.parse(args.split, load_params(args.params, f"splits.{args.split}"))
    references = named_folders(args.reference, "--reference")
    compare_with = named_folders(args.compare, "--compare")
    for part in compare_with:
        if part not in spec.parts:
            raise StageError(f"--compare {part}: not a part of split {spec.name} ({spec.parts})")
    missing = [r for r in spec.references if r not in references]
    if missing:
        raise StageError(f"split {spec.name}: its rules need --reference for {missing}")
    if bool(args.versus) != bool(args.replaced):
        raise StageError("--versus and --replaced go together")

    refs = sorted(references)
    compared = sorted(compare_with)
    # the other files are scanned in a second process while this one scans the split's file
    index, *others = jsonscan.scan_many(
        [only_file(args.file)]
        + [only_file(references[r]) for r in refs]
        + [only_file(compare_with[p]) for p in compared],
        digests=True,
    )
    ref_index, upstreams = others[: len(refs)], others[len(refs) :]
    prefix_of = {r.shared_with: r.image_prefix for r in spec.rules if r.shared_with}
    ref_digests = {
        name: splitting.reference_digests(idx, prefix_of[name])
        for name, idx in zip(refs, ref_index, strict=True)
    }
    assigned, evidence = splitting.assign(spec, index, ref_digests)
    parts = spec.parts
    code_of = {name: k for k, name in enumerate(parts)}
    codes = np.array([code_of[c] for c in assigned], dtype=np.uint8)
    counts = {name: int((codes == k).sum()) for k, name in enumerate(parts)}
    metrics = {
        "records": len(index),
        "text_only": sum(1 for image in index.images if image is None),
        "ids_integer": int(index.id_was_int.sum()),
        "parts": counts,
    }
    published = spec.published.get(args.profile)
    if published:
        metrics["published"] = dict(published)
        metrics["measured_minus_published"] = {p: counts[p] - n for p, n in published.items()}
        metrics["exact"] = all(counts[p] == n for p, n in published.items())
    metrics["evidence"] = {p: evidence[p] for p in parts if p in evidence}
    if compared:
        metrics["compared_with_upstream"] = {
            p: mixcore.compare(index.digests[codes == code_of[p]], up.digests)
            for p, up in zip(compared, upstreams, strict=True)
        }
    if args.versus:
        name, index_path = next(iter(named_folders([args.versus], "--versus").items()))
        metrics[f"versus_{name}"], rows = replacements(
            splitting.load_index(index_path), index, assigned
        )
        write_report(
            args.replaced,
            rows,
            (f"{name}_id", f"{name}_part", "image", f"{spec.name}_id", f"{spec.name}_part"),
        )
    splitting.save_index(args.index, index, codes, parts)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    sys.exit(run_main(main))
