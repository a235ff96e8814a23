"""A built recipe as the shards trainers stream from: WebDataset, Parquet, LLaMA-Factory.

The records come from the recipe's part files, in the order of its data YAML (part by
part, each part in the recipe's order): the records LLaVA-NeXT's loader reads from it,
with the part each came from. Images are read from the data root. Every writer gives the
same bytes for the same records on any machine:

- WebDataset (`write_webdataset`): tar shards `<recipe>-000000.tar`, ... of at most
  `shard_bytes` (a sample larger than that gets a shard of its own), each sample the
  record's JSON (`<key>.json`) and its images (`<key>.<ext>`, or `<key>.<i>.<ext>` for
  the i-th image of a multi-image record); the key is the record's position and its id,
  made safe (letters, digits, `_`, `-`: no dot, no slash). Members have mtime 0, owner 0,
  no owner names, mode 0644, USTAR headers. Plus `<recipe>.wids.json`, the `wids` index
  (shard file names relative to it, their sample counts and sizes).
- Parquet (`write_parquet`): per part, `<part>/train-0000i-of-0000n.parquet` of at most
  `shard_bytes` of images each, in row groups of `row_group_rows` rows, with the schema
  lmms-lab publishes: `id` (string), `image` (the `datasets` Image feature: the bytes and
  the path), `conversations` (list of from/value), `data_source` (the part), plus
  `images` (a list of Image) holding the images of a multi-image record (whose `image`
  is then null). The `datasets` features are in the schema metadata; Parquet has no
  writer timestamps. A dataset card (`README.md`) names one config per part and `all`.
- LLaMA-Factory (`write_llamafactory`): `<recipe>.json` in its sharegpt format
  (`messages` of role/content with roles user/assistant, `images` relative to the data
  root, which is its `media_dir`) and `dataset_info.json` with the entry naming it.

Text-only records carry no image in any format; a record's images are all exported.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from llava_data import jsonscan
from llava_data.common import StageError, dumps_json

FORMATS = ("webdataset", "parquet", "llamafactory")
SAFE = re.compile(r"[^A-Za-z0-9_-]+")
ROLES = {"human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class ExportParams:
    """`exports.*`: which recipes and formats, the shard size and Parquet row groups."""

    recipes: tuple[str, ...]
    formats: tuple[str, ...]
    shard_bytes: int
    row_group_rows: int

    @classmethod
    def parse(cls, raw: object, recipes: list[str]) -> ExportParams:
        where = "params.yaml: exports"
        if not isinstance(raw, dict):
            raise StageError(f"{where}: a mapping (recipes, formats, shard_bytes, row_group_rows)")
        names, formats = raw.get("recipes"), raw.get("formats")
        if not isinstance(names, list) or not all(n in recipes for n in names):
            raise StageError(f"{where}.recipes: a list of recipes ({', '.join(recipes)})")
        if not isinstance(formats, list) or not all(f in FORMATS for f in formats):
            raise StageError(f"{where}.formats: a list of {', '.join(FORMATS)}")
        numbers = {}
        for key in ("shard_bytes", "row_group_rows"):
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StageError(f"{where}.{key}: a whole number >= 1, got {value!r}")
            numbers[key] = value
        return cls(tuple(names), tuple(formats), **numbers)


@dataclass
class Record:
    record: dict  # as in the training file
    part: str

    @property
    def images(self) -> list[str]:
        image = self.record.get("image")
        if image is None:
            return []
        return [image] if isinstance(image, str) else list(image)


def recipe_records(yaml_path: Path) -> Iterator[Record]:
    """The records of a recipe's data YAML, part by part, with their part (file stem)."""
    spec = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    for dataset in spec["datasets"]:
        if dataset.get("sampling_strategy", "all") != "all":
            raise StageError(f"{yaml_path}: {dataset} is not `all`; rebuild the recipe")
        path = Path(dataset["json_path"])
        index = jsonscan.scan(path)  # one record in memory at a time, whatever the part's size
        for _, record in jsonscan.iter_records(index, range(len(index))):
            yield Record(record, path.stem)


def read_image(data_root: Path, rel: str, record: dict) -> bytes:
    path = data_root / rel
    try:
        return path.read_bytes()
    except OSError as err:
        raise StageError(
            f"record {record.get('id')!r}: image {path} cannot be read ({err.strerror}); "
            f"the recipe's validation checked it, so the tree changed since: run `dvc repro`"
        ) from None


def sample_key(position: int, record: dict) -> str:
    """The WebDataset key of a record: its position and its id, with no dot or slash."""
    safe = SAFE.sub("_", str(record.get("id", "")))[:80].strip("_")
    return f"{position:09d}_{safe}" if safe else f"{position:09d}"


def _extension(rel: str) -> str:
    suffix = Path(rel).suffix.lower().lstrip(".")
    return SAFE.sub("", suffix) or "bin"


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def write_webdataset(records, data_root: Path, out: Path, name: str, shard_bytes: int) -> dict:
    """Tar shards and the wids index into the folder `out`; returns counts."""
    shards: list[dict] = []
    tar = None
    size = 0

    def close() -> None:
        nonlocal tar
        if tar is not None:
            tar.close()
            path = out / shards[-1]["url"]
            shards[-1]["filesize"] = path.stat().st_size
            tar = None

    for n, rec in enumerate(records):
        key = sample_key(n, rec.record)
        members = [(f"{key}.json", orjson.dumps(rec.record))]
        images = rec.images
        for i, rel in enumerate(images):
            tag = f"{i}." if len(images) > 1 else ""
            members.append(
                (f"{key}.{tag}{_extension(rel)}", read_image(data_root, rel, rec.record))
            )
        sample_size = sum(512 + -(-len(d) // 512) * 512 for _, d in members)
        if tar is None or (size + sample_size > shard_bytes and shards[-1]["nsamples"]):
            close()
            shards.append({"url": f"{name}-{len(shards):06d}.tar", "nsamples": 0, "filesize": 0})
            tar = tarfile.open(out / shards[-1]["url"], "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed by close())
            size = 0
        for member, data in members:
            tar.addfile(*_member(member, data))
        shards[-1]["nsamples"] += 1
        size += sample_size
    close()
    index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name}
    index["shardlist"] = shards
    (out / f"{name}.wids.json").write_text(dumps_json(index), encoding="utf-8")
    return {"samples": sum(s["nsamples"] for s in shards), "shards": len(shards)}


_STRING = {"dtype": "string", "_type": "Value"}
# The `datasets` features of the Parquet export, as datasets writes them into the schema
# metadata (a test checks that datasets.Features gives the same schema): written here so
# that the export stage does not import datasets.
FEATURES = {
    "id": _STRING,
    "image": {"_type": "Image"},
    "conversations": {"feature": {"from": _STRING, "value": _STRING}, "_type": "List"},
    "data_source": _STRING,
    "images": {"feature": {"_type": "Image"}, "_type": "List"},
}


def arrow_schema():
    """The Parquet export's Arrow schema, with the `datasets` features in its metadata."""
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("image", image),
            ("conversations", pa.list_(turn)),
            ("data_source", pa.string()),
            ("images", pa.list_(image)),
        ]
    )
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": FEATURES}})})


def _row(rec: Record, data_root: Path) -> tuple[dict, int]:
    images = [{"bytes": read_image(data_root, rel, rec.record), "path": rel} for rel in rec.images]
    row = {
        "id": str(rec.record.get("id")),
        "image": images[0] if len(images) == 1 else None,
        "conversations": [
            {"from": t.get("from"), "value": t.get("value")}
            for t in rec.record.get("conversations", [])
        ],
        "data_source": rec.part,
        "images": images if len(images) > 1 else [],
    }
    return row, sum(len(i["bytes"]) for i in images)


def write_parquet(
    records, data_root: Path, out: Path, name: str, shard_bytes: int, row_group_rows: int
) -> dict:
    """Parquet shards per part and the dataset card into the folder `out`; returns counts.
    One shard's rows are held at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    counts: dict[str, int] = {}
    written: dict[str, list[Path]] = {}
    rows: list[dict] = []
    state = {"part": None, "size": 0}

    def flush() -> None:
        part = state["part"]
        if rows:
            path = out / part / f".shard-{len(written[part]):05d}.parquet"
            pq.write_table(
                pa.Table.from_pylist(rows, schema=schema),
                path,
                row_group_size=row_group_rows,
                compression="zstd",
                compression_level=3,
                write_statistics=False,
            )
            written[part].append(path)
            rows.clear()
        state["size"] = 0

    for rec in records:
        if rec.part != state["part"]:
            flush()
            if rec.part in written:
                raise StageError(f"part {rec.part} appears twice in the recipe's data YAML")
            state["part"] = rec.part
            written[rec.part], counts[rec.part] = [], 0
            (out / rec.part).mkdir(parents=True, exist_ok=True)
        row, weight = _row(rec, data_root)
        if rows and state["size"] + weight > shard_bytes:
            flush()
        rows.append(row)
        state["size"] += weight
        counts[rec.part] += 1
    flush()
    for paths in written.values():
        for k, path in enumerate(paths):
            path.rename(path.with_name(f"train-{k:05d}-of-{len(paths):05d}.parquet"))
    (out / "README.md").write_text(dataset_card(name, counts), encoding="utf-8")
    return {"rows": sum(counts.values()), "shards": sum(len(p) for p in written.values())}


def dataset_card(name: str, counts: dict[str, int]) -> str:
    """A Hugging Face dataset card naming one config per part, and `all` (the default)."""
    configs = [
        {
            "config_name": "all",
            "default": True,
            "data_files": [{"split": "train", "path": "*/*.parquet"}],
        }
    ] + [
        {"config_name": part, "data_files": [{"split": "train", "path": f"{part}/*.parquet"}]}
        for part in counts
    ]
    header = yaml.safe_dump({"configs": configs}, sort_keys=False, allow_unicode=True)
    lines = [
        "---",
        header.rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"The recipe `{name}` of the llava-data repository, exported with its images embedded "
        "(`dvc repro export@" + name + "-parquet`). Columns: `id`, `image` (datasets Image), "
        "`conversations` (from/value), `data_source` (the part), `images` (the images of "
        "a multi-image record, whose `image` is then null).",
        "",
        "| part | rows |",
        "|---|---:|",
        *(f"| {part} | {n} |" for part, n in counts.items()),
        "",
    ]
    return "\n".join(lines)


def llamafactory_record(record: dict) -> dict:
    """A training record in LLaMA-Factory's sharegpt format (messages, images)."""
    messages = [
        {"role": ROLES.get(t.get("from"), t.get("from")), "content": t.get("value")}
        for t in record.get("conversations", [])
    ]
    image = record.get("image")
    images = [] if image is None else [image] if isinstance(image, str) else list(image)
    return {"messages": messages, "images": images}


def write_llamafactory(records, out: Path, name: str) -> dict:
    """`<name>.json` and `dataset_info.json` into the folder `out`; returns counts."""
    count = 0
    with open(out / f"{name}.json", "wb") as fh:
        fh.write(b"[\n")
        for rec in records:
            fh.write((b",\n" if count else b"") + orjson.dumps(llamafactory_record(rec.record)))
            count += 1
        fh.write(b"\n]\n" if count else b"]\n")
    info = {
        name: {
            "file_name": f"{name}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
    }
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"records": count}
