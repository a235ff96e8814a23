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

Text-only records carry no image in any format; a record's images are all exported. A
record whose image is missing (kept by `validate.policy: keep`) is left out, and counted.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
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


def with_images_present(records, data_root: Path, skipped: list) -> Iterator[Record]:
    """The records all of whose images are files under `data_root`; the others (only
    `validate.policy: keep` lets such a record into a recipe) go to `skipped`: a shard
    cannot carry an image that does not exist."""
    for rec in records:
        if all((data_root / rel).is_file() for rel in rec.images):
            yield rec
        else:
            skipped.append(rec)


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


def _tar_header(name: str, size: int) -> bytes:
    """A USTAR header with fixed metadata: mtime 0, owner 0, no owner names, mode 0644."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _write_shard(job: dict) -> int:
    """Write one planned shard, byte for byte what `tarfile` writes for the same members;
    return its size."""
    data_root = Path(job["data_root"])
    with open(job["path"], "wb", buffering=1 << 20) as fh:
        for key, record_json, images in job["samples"]:
            members = [(f"{key}.json", record_json)]
            members += [(name, (data_root / rel).read_bytes()) for name, rel in images]
            for name, data in members:
                fh.write(_tar_header(name, len(data)))
                fh.write(data)
                fh.write(bytes(_padded(len(data)) - len(data)))
        fh.write(bytes(2 * tarfile.BLOCKSIZE))
        fh.write(bytes(-fh.tell() % tarfile.RECORDSIZE))
        return fh.tell()


def plan_webdataset(records, data_root: Path, name: str, shard_bytes: int):
    """The shards in order, each as it fills: {"url", "samples": [(key, record JSON,
    [(member name, image path)])]}. Image sizes come from the file system: the plan holds
    one shard's records, never their images."""
    shard = None
    size = count = 0
    for n, rec in enumerate(records):
        key = sample_key(n, rec.record)
        record_json = orjson.dumps(rec.record)
        images = rec.images
        tags = [f"{i}." if len(images) > 1 else "" for i in range(len(images))]
        names = [f"{key}.{tag}{_extension(rel)}" for tag, rel in zip(tags, images, strict=True)]
        sample_size = tarfile.BLOCKSIZE + _padded(len(record_json))
        for rel in images:
            try:
                sample_size += tarfile.BLOCKSIZE + _padded((data_root / rel).stat().st_size)
            except OSError:
                read_image(data_root, rel, rec.record)  # raises the error that names it
        if shard is None or (size + sample_size > shard_bytes and shard["samples"]):
            if shard is not None:
                yield shard
            shard = {"url": f"{name}-{count:06d}.tar", "samples": []}
            count += 1
            size = 0
        shard["samples"].append((key, record_json, list(zip(names, images, strict=True))))
        size += sample_size
    if shard is not None:
        yield shard


def write_webdataset(
    records, data_root: Path, out: Path, name: str, shard_bytes: int, workers: int = 2
) -> dict:
    """Tar shards and the wids index into the folder `out`; returns counts. Shards are
    planned in order here and written by `workers` processes (in this one when there is a
    single shard), at most `workers` planned shards waiting: memory stays a few shards'
    records, whatever the recipe's size."""
    plan = plan_webdataset(records, data_root, name, shard_bytes)
    head = list(itertools.islice(plan, 2))
    shards: list[dict] = []

    def job(shard: dict) -> dict:
        shards.append({"url": shard["url"], "nsamples": len(shard["samples"]), "filesize": 0})
        return {
            "path": str(out / shard["url"]),
            "samples": shard["samples"],
            "data_root": str(data_root),
        }

    if len(head) < 2 or workers <= 1:
        for shard in itertools.chain(head, plan):
            written = _write_shard(job(shard))
            shards[-1]["filesize"] = written
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            pending: collections.deque = collections.deque()
            for shard in itertools.chain(head, plan):
                pending.append((len(shards), pool.submit(_write_shard, job(shard))))
                while len(pending) > workers:
                    k, fut = pending.popleft()
                    shards[k]["filesize"] = fut.result()
            for k, fut in pending:
                shards[k]["filesize"] = fut.result()
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


def llamafactory_record(rec: Record) -> dict:
    """A training record in LLaMA-Factory's sharegpt format (messages, images)."""
    messages = [
        {"role": ROLES.get(t.get("from"), t.get("from")), "content": t.get("value")}
        for t in rec.record.get("conversations", [])
    ]
    return {"messages": messages, "images": rec.images}


def write_llamafactory(records, out: Path, name: str) -> dict:
    """`<name>.json` and `dataset_info.json` into the folder `out`; returns counts."""
    count = 0
    with open(out / f"{name}.json", "wb") as fh:
        fh.write(b"[\n")
        for rec in records:
            fh.write((b",\n" if count else b"") + orjson.dumps(llamafactory_record(rec)))
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
    (out / "dataset_info.json").write_text(dumps_json(info, 2), encoding="utf-8")
    return {"records": count}
