"""Split the published mix1M into its components and compare them with their upstream files.

Reads the mix1M file and the upstream files named by `--compare component=folder`
(fetch output folders), assigns each record to a component by the prefix of its
image path (`split.prefixes`, `split.text_only`), and writes an index of the
records (byte spans, component, digest) for the mix stage plus metrics: records
per component, and per compared component how many records are identical, only
in mix1M or only in the upstream file.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava_data import jsonscan, mixcore
from llava_data.common import StageError, atomic_path, load_params, only_file, run_main, write_json


@dataclass(frozen=True)
class SplitParams:
    """`split.*`: image-path prefix -> component, and the component of text-only records."""

    prefixes: dict[str, str]
    text_only: str

    @classmethod
    def parse(cls, raw: dict) -> SplitParams:
        if not isinstance(raw, dict) or not isinstance(raw.get("prefixes"), dict):
            raise StageError(
                "params.yaml: split.prefixes must map image-path prefixes to components"
            )
        for prefix, component in raw["prefixes"].items():
            if not isinstance(prefix, str) or not prefix.endswith("/"):
                raise StageError(f"params.yaml: split.prefixes key {prefix!r} must end with '/'")
            if not isinstance(component, str) or not component:
                raise StageError(f"params.yaml: split.prefixes.{prefix} must name a component")
        if not isinstance(raw.get("text_only"), str):
            raise StageError("params.yaml: split.text_only must name a component")
        return cls(dict(raw["prefixes"]), raw["text_only"])

    @property
    def components(self) -> list[str]:
        """Every component name, sorted."""
        return sorted({*self.prefixes.values(), self.text_only})


def parse_compare(pairs: list[str], components: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or name not in components:
            raise StageError(f"--compare {pair!r}: expected <component>=<fetch folder>")
        out[name] = Path(folder)
    return out


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (np.load reads it) whose bytes depend only on the arrays.

    np.savez writes zip64 headers whose fields vary between Python patch releases, so two
    machines would hash the same index differently: here every member is stored with
    fixed metadata.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o100644 << 16
            zf.writestr(info, buf.getvalue())


def save_index(
    path: Path, index: jsonscan.RecordIndex, codes: np.ndarray, names: list[str]
) -> None:
    """The record index the mix stage reads: spans, ids, digests and component codes."""
    ids = [i.encode("utf-8") for i in index.ids]
    save_npz(
        path,
        {
            "offsets": index.offsets,
            "lengths": index.lengths,
            "id_was_int": index.id_was_int,
            "ids_blob": np.frombuffer(b"".join(ids), dtype=np.uint8),
            "ids_len": np.array([len(i) for i in ids], dtype=np.int64),
            "digests": index.digests,
            "canonical_lengths": index.canonical_lengths,
            "is_canonical": index.is_canonical,
            "file_size": np.int64(index.file_size),
            "components": codes,
            "component_names": np.array(names),
        },
    )


def load_index(path: Path, source: Path) -> tuple[jsonscan.RecordIndex, np.ndarray, list[str]]:
    """What `save_index` wrote: the index of `source`, component codes and names."""
    with np.load(path) as npz:
        blob = npz["ids_blob"].tobytes()
        ends = np.cumsum(npz["ids_len"]).tolist()
        starts = [0, *ends[:-1]]
        index = jsonscan.RecordIndex(
            path=source,
            offsets=npz["offsets"],
            lengths=npz["lengths"],
            ids=[blob[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)],
            id_was_int=npz["id_was_int"],
            images=[],
            digests=npz["digests"],
            canonical_lengths=npz["canonical_lengths"],
            is_canonical=npz["is_canonical"],
            file_size=int(npz["file_size"]),
        )
        return index, npz["components"], [str(n) for n in npz["component_names"]]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", required=True, type=Path, help="fetch output folder of mix1M")
    ap.add_argument("--compare", action="append", default=[], help="component=fetch folder")
    ap.add_argument("--params", required=True)
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--metrics", required=True, type=Path)
    args = ap.parse_args(argv)

    sparams = SplitParams.parse(load_params(args.params, "split"))
    components = sparams.components
    compare_with = parse_compare(args.compare, components)

    names = sorted(compare_with)
    # the upstream files are scanned in a second process while this one scans mix1M
    index, *upstreams = jsonscan.scan_many(
        [only_file(args.mix), *(only_file(compare_with[n]) for n in names)], digests=True
    )
    assigned = mixcore.assign_components(
        index.images, sparams.prefixes, sparams.text_only, ids=index.ids
    )
    code_of = {name: k for k, name in enumerate(components)}
    codes = np.array([code_of[c] for c in assigned], dtype=np.uint8)
    counts = {name: int((codes == k).sum()) for k, name in enumerate(components)}
    comparison = {
        name: mixcore.compare(index.digests[codes == code_of[name]], upstream.digests)
        for name, upstream in zip(names, upstreams, strict=True)
    }
    save_index(args.index, index, codes, components)
    write_json(
        args.metrics,
        {
            "records": len(index),
            "text_only": sum(1 for image in index.images if image is None),
            "ids_integer": int(index.id_was_int.sum()),
            "components": counts,
            "compared_with_upstream": comparison,
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
