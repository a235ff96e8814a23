"""What every image is: a hash of its bytes, of its decoded pixels, a perceptual hash.

The core is `hash_image(bytes) -> ImageFacts`, no I/O; `index_files` and `index_parquet`
apply it to one shard of work (a list of files under the data root, or row groups of an
evaluation set's Parquet file), the unit `llava_data.engine` runs on local processes or on
a cluster. Per image:
- `sha256` of its bytes (what `sha256sum` prints: the same file, byte for byte);
- `pixels`, XXH3-128 of its width, height and RGB pixels as the trainers see them
  (`Image.open(...).convert("RGB")`): the same picture saved with other bytes (metadata,
  another PNG compression, a GIF of the same pixels);
- `phash`, the 64-bit perceptual hash of `imagehash.phash` (DCT of a 32x32 greyscale
  image), computed on the decoded image first box-reduced by a whole factor while its
  short side stays >= PHASH_SIDE: the Lanczos resize to 32x32 then reads a few thousand
  pixels instead of every one (see bench/index.py for what this costs in agreement);
- `width`, `height`, `format`, whether it `decodes` fully, and the `error` if it does not.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

# Bump when any hash below changes: an index written by another version is hashed anew.
INDEX_VERSION = "1"
PHASH_SIDE = 128

# Pillow's messages may name the file object (`<_io.BytesIO object at 0x7f...>`): an address
# that changes from run to run must not reach the index
OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class ImageFacts:
    """One index row (less its path), in the order of `arrow_schema`; a file that could
    not be read has no size nor sha256."""

    size: int | None
    sha256: bytes | None
    pixels: bytes | None
    phash: int | None
    width: int | None
    height: int | None
    format: str | None
    decodes: bool
    error: str | None

    def row(self, path: str) -> tuple:
        return (
            path,
            self.size,
            self.sha256,
            self.pixels,
            self.phash,
            self.width,
            self.height,
            self.format,
            self.decodes,
            self.error,
        )


def phash_of(gray) -> int:
    """imagehash's pHash of a greyscale PIL image, as an unsigned 64-bit integer."""
    import imagehash

    bits = imagehash.phash(gray).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_image(data: bytes) -> ImageFacts:
    """The facts of one image's bytes; never raises for bad image data."""
    from PIL import Image

    digest = hashlib.sha256(data).digest()
    fmt = width = height = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            width, height = im.size
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            pixels = xxhash.xxh3_128(struct.pack("<II", width, height))
            pixels.update(rgb.tobytes())
            gray = rgb.convert("L")
            factor = min(width, height) // PHASH_SIDE
            if factor >= 2:
                gray = gray.reduce(factor)
            return ImageFacts(
                len(data), digest, pixels.digest(), phash_of(gray), width, height, fmt, True, None
            )
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        error = OBJECT_REPR.sub("<image bytes>", f"{type(err).__name__}: {err}")[:200]
        return ImageFacts(len(data), digest, None, None, width, height, fmt, False, error)


def index_files(task: tuple[str, tuple[str, ...]]) -> list[tuple]:
    """One shard of a layout tree: (data root, paths relative to it) -> a row per path."""
    root, paths = task
    rows = []
    for rel in paths:
        try:
            data = (Path(root) / rel).read_bytes()
        except OSError as err:
            unread = ImageFacts(None, None, None, None, None, None, None, False, _short(err))
            rows.append(unread.row(rel))
            continue
        rows.append(hash_image(data).row(rel))
    return rows


def index_parquet(task: tuple[str, str, tuple[int, ...], str]) -> list[tuple]:
    """One shard of an evaluation set: (its Parquet file, the name rows are keyed by,
    consecutive row groups, the image column) -> a row per row holding an image, keyed
    `<name>#<row>` (the row's number in the file); rows holding the same bytes are hashed
    once."""
    import pyarrow.parquet as pq

    path, name, groups, column = task
    pf = pq.ParquetFile(path)
    first = sum(pf.metadata.row_group(g).num_rows for g in range(groups[0])) if groups else 0
    rows, seen = [], {}
    number = first
    for g in groups:
        values = pf.read_row_group(g, columns=[column]).column(column).to_pylist()
        for value in values:
            data = value.get("bytes") if isinstance(value, dict) else None
            if data:
                facts = seen.get(data)
                if facts is None:
                    facts = seen[data] = hash_image(data)
                rows.append(facts.row(f"{name}#{number}"))
            number += 1
    return rows


def _short(err: OSError) -> str:
    return f"{type(err).__name__}: {err.strerror or err}"[:200]


# ---- the index as Parquet files ------------------------------------------------------------
# What decides whether a part of the index is current: its input's digest and the version
# above, both in the file's key-value metadata.
META_VERSION = b"llava_data.index_version"
META_SOURCE = b"llava_data.source"


@dataclass(frozen=True)
class IndexParams:
    """params.yaml `index`: processes on this machine, images per task."""

    jobs: int = 2
    shard_images: int = 1000

    @classmethod
    def parse(cls, raw: object) -> IndexParams:
        from llava_data.common import StageError

        if not isinstance(raw, dict) or set(raw) - {"jobs", "shard_images"}:
            raise StageError(
                "params.yaml: `index` must be a mapping of `jobs` (local processes) and "
                "`shard_images` (images per task)"
            )
        jobs, shard = raw.get("jobs", cls.jobs), raw.get("shard_images", cls.shard_images)
        for key, value in (("jobs", jobs), ("shard_images", shard)):
            if type(value) is not int or value < 1:
                raise StageError(
                    f"params.yaml: index.{key} must be a whole number >= 1, not {value!r}"
                )
        return cls(jobs, shard)


def arrow_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("size", pa.int64()),
            ("sha256", pa.binary(32)),
            ("pixels", pa.binary(16)),
            ("phash", pa.uint64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("format", pa.string()),
            ("decodes", pa.bool_()),
            ("error", pa.string()),
        ]
    )


_MALLOC_TUNED = []


def tune_malloc() -> None:
    """Keep freed image buffers in this process's heap (glibc only; once per process).

    Decoding allocates and frees a buffer of the whole image per image, past glibc's
    default mmap threshold (128 KiB): each is then mapped and unmapped, and its pages
    faulted in anew. glibc raises the threshold by itself after such frees, unless
    MALLOC_TRIM_THRESHOLD_ is set, as Dask's nanny sets it for its workers. Measured on
    this machine's index benchmark: 15 % faster on local processes, 35 % on Dask workers.
    """
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED.append(True)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def index_task(task: tuple) -> list[tuple]:
    """One task of either kind, for the engine: ("files", ...) or ("parquet", ...)."""
    tune_malloc()
    kind, *args = task
    return index_files(tuple(args)) if kind == "files" else index_parquet(tuple(args))


def file_tasks(root: Path, paths: list[str], shard: int) -> list[tuple]:
    """Tasks of at most `shard` paths each, in the order given."""
    return [("files", str(root), tuple(paths[i : i + shard])) for i in range(0, len(paths), shard)]


def parquet_tasks(files: list[Path], shard: int, column: str = "image") -> list[tuple]:
    """Tasks of consecutive row groups of each Parquet file, about `shard` rows each."""
    import pyarrow.parquet as pq

    tasks = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        group, rows = [], 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= shard:
                tasks.append(("parquet", str(path), path.name, tuple(group), column))
                group, rows = [], 0
        if group:
            tasks.append(("parquet", str(path), path.name, tuple(group), column))
    return tasks


def current(path: Path, digest: str) -> bool:
    """Whether the index file `path` was written by this version from input `digest`."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return False
    return meta.get(META_VERSION) == INDEX_VERSION.encode() and meta.get(
        META_SOURCE
    ) == digest.encode("ascii")


def write_index(path: Path, rows: list[tuple], digest: str) -> None:
    """The index rows (sorted by path) as one Parquet file, with fixed metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llava_data.common import atomic_path

    schema = arrow_schema().with_metadata(
        {META_VERSION: INDEX_VERSION.encode(), META_SOURCE: digest.encode("ascii")}
    )
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    table = pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, schema, strict=True)],
        schema=schema,
    )
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=100_000,
            compression="zstd",
            compression_level=3,
            write_statistics=False,
        )
