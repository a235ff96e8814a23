"""The image index: what each hash catches, images that do not decode, evaluation sets'
Parquet rows, and a stage that hashes only what changed."""

from __future__ import annotations

import io
import os

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from llava_data import imageindex
from llava_data.common import StageError
from stages import index_images


def photo(seed: int, size=(320, 240)) -> Image.Image:
    """A smooth random picture with some detail, different for every seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.int16)
    noise = rng.integers(-12, 12, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def test_the_same_pixels_saved_twice_share_the_pixel_hash_not_the_byte_hash():
    picture = photo(1)
    a = imageindex.hash_image(encode(picture, "PNG", compress_level=1))
    b = imageindex.hash_image(encode(picture, "PNG", compress_level=9))
    assert a.sha256 != b.sha256
    assert a.pixels == b.pixels and a.phash == b.phash
    assert (a.width, a.height, a.format, a.decodes) == (320, 240, "PNG", True)


def test_a_jpeg_with_other_metadata_has_the_same_pixels():
    picture = photo(2)
    a = imageindex.hash_image(encode(picture, quality=80))
    b = imageindex.hash_image(encode(picture, quality=80, comment=b"copied from elsewhere"))
    assert a.sha256 != b.sha256 and a.pixels == b.pixels


def test_a_re_encoded_copy_is_near_and_another_picture_is_far():
    a = imageindex.hash_image(encode(photo(3), quality=90))
    b = imageindex.hash_image(encode(photo(3), quality=35))
    c = imageindex.hash_image(encode(photo(4), quality=90))
    assert a.pixels != b.pixels
    assert bin(a.phash ^ b.phash).count("1") <= 4
    assert bin(a.phash ^ c.phash).count("1") > 16


def test_the_pixel_hash_covers_the_shape():
    flat = bytes(range(256)) * 3 * 4  # the same pixel bytes as 32x32 and as 16x64
    a = Image.frombytes("RGB", (32, 32), flat)
    b = Image.frombytes("RGB", (16, 64), flat)
    assert imageindex.hash_image(encode(a, "PNG")).pixels != (
        imageindex.hash_image(encode(b, "PNG")).pixels
    )


def test_phash_is_imagehash_on_the_reduced_image():
    big = photo(5, (700, 520))  # short side 520: reduced by 4 before the pHash
    data = encode(big, quality=90)
    decoded = Image.open(io.BytesIO(data)).convert("L")
    expected = imagehash.phash(decoded.reduce(520 // imageindex.PHASH_SIDE))
    got = imageindex.hash_image(data).phash
    assert got == int(str(expected), 16)
    small = photo(6, (200, 150))  # short side under twice PHASH_SIDE: not reduced
    data = encode(small, quality=90)
    plain = imagehash.phash(Image.open(io.BytesIO(data)).convert("L"))
    assert imageindex.hash_image(data).phash == int(str(plain), 16)


def test_gif_and_greyscale_are_hashed_as_rgb():
    grey = photo(7).convert("L")
    a = imageindex.hash_image(encode(grey, "PNG"))
    b = imageindex.hash_image(encode(grey.convert("RGB"), "PNG"))
    assert a.pixels == b.pixels
    assert imageindex.hash_image(encode(photo(8).convert("P"), "GIF")).format == "GIF"


@pytest.mark.parametrize(
    "data, fmt",
    [
        (b"", None),
        (bytes(40), None),
        (b"<html>not an image</html>", None),
        ("truncated", "JPEG"),
    ],
)
def test_what_does_not_decode_is_said_not_raised(data, fmt):
    if data == "truncated":
        whole = encode(photo(9), quality=90)
        data = whole[: len(whole) * 6 // 10]
    facts = imageindex.hash_image(data)
    assert facts.decodes is False and facts.error
    assert facts.pixels is None and facts.phash is None
    assert facts.format == fmt and facts.size == len(data)


def test_index_files_keeps_the_order_and_reports_a_missing_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/1.jpg").write_bytes(encode(photo(10)))
    (tmp_path / "a/2.png").write_bytes(encode(photo(11), "PNG"))
    rows = imageindex.index_files((str(tmp_path), ("a/1.jpg", "a/gone.jpg", "a/2.png")))
    assert [r[0] for r in rows] == ["a/1.jpg", "a/gone.jpg", "a/2.png"]
    assert rows[1][8] is False and "FileNotFoundError" in rows[1][9]
    assert rows[0][7] == "JPEG" and rows[2][7] == "PNG"


def eval_parquet(path, images, group_rows=2):
    """A Parquet file as lmms-lab's: an `image` struct column of bytes and path."""
    structs = [{"bytes": b, "path": None} for b in images]
    table = pa.table(
        {
            "question_id": [str(i) for i in range(len(images))],
            "image": pa.array(structs, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        }
    )
    pq.write_table(table, path, row_group_size=group_rows)


def test_an_evaluation_set_is_keyed_by_row_and_repeated_images_hashed_once(tmp_path):
    one, two = encode(photo(12)), encode(photo(13))
    path = tmp_path / "test-00000-of-00001.parquet"
    eval_parquet(path, [one, one, two, None, one])
    tasks = imageindex.parquet_tasks([path], shard=2)
    assert [t[3] for t in tasks] == [(0,), (1,), (2,)]  # row groups of 2 rows
    rows = [row for task in tasks for row in imageindex.index_task(task)]
    assert [r[0] for r in rows] == [
        "test-00000-of-00001.parquet#0",
        "test-00000-of-00001.parquet#1",
        "test-00000-of-00001.parquet#2",
        "test-00000-of-00001.parquet#4",
    ]
    assert rows[0][2] == rows[1][2] == rows[3][2] != rows[2][2]


# ---- the stage -------------------------------------------------------------------------------


def layout(tmp_path, trees: dict[str, dict[str, bytes]]):
    """A data root, manifests and a registry with these trees (tree -> {path: bytes})."""
    data, manifests = tmp_path / "data", tmp_path / "manifests"
    manifests.mkdir()
    lines = ["layout:", "  trees:"]
    for tree, files in trees.items():
        rows = []
        for rel, blob in files.items():
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).write_bytes(blob)
            rows.append(f"{rel}\t{len(blob)}\t00000000\n")
        (manifests / f"{tree}.tsv").write_text(f"# {tree}\n" + "".join(sorted(rows)))
        dest = next(iter(files)).rsplit("/", 1)[0]
        lines.append(f"    {tree}: {{archive: a_{tree}, from: '', dest: {dest}}}")
    lines += ["  evals:", "    pope: {source: eval_pope}"]
    (tmp_path / "sources.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "params.yaml").write_text("index:\n  jobs: 1\n  shard_images: 2\n")
    folder = tmp_path / "downloads/eval_pope"
    folder.mkdir(parents=True)
    eval_parquet(folder / "test-00000-of-00001.parquet", [encode(photo(20))])
    return tmp_path


def run_stage(root, evals=("pope",)):
    args = ["--params", str(root / "params.yaml"), "--registry", str(root / "sources.yaml")]
    args += ["--manifests", str(root / "manifests"), "--data-root", str(root / "data")]
    for name in evals:
        args += ["--eval", f"{name}={root / 'downloads' / f'eval_{name}'}"]
    index_images.main([*args, "--out", str(root / "index")])


def test_the_stage_hashes_again_only_the_tree_whose_manifest_changed(tmp_path, capsys):
    root = layout(
        tmp_path,
        {
            "coco": {f"coco/{i}.jpg": encode(photo(30 + i)) for i in range(3)},
            "gqa": {f"gqa/{i}.jpg": encode(photo(40 + i)) for i in range(2)},
        },
    )
    run_stage(root)
    files = {p: p.read_bytes() for p in sorted((root / "index").rglob("*.parquet"))}
    assert sorted(p.relative_to(root / "index").as_posix() for p in files) == [
        "coco.parquet",
        "eval/pope.parquet",
        "gqa.parquet",
    ]
    assert pq.read_table(root / "index/coco.parquet").column("path").to_pylist() == [
        "coco/0.jpg",
        "coco/1.jpg",
        "coco/2.jpg",
    ]
    stamp = {p: os.stat(p).st_mtime_ns for p in files}
    capsys.readouterr()
    run_stage(root)  # nothing changed: nothing hashed, nothing rewritten
    assert "hashing" not in capsys.readouterr().err
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamp
    # gqa gains an image: only gqa is hashed again
    extra = encode(photo(50))
    (root / "data/gqa/9.jpg").write_bytes(extra)
    with open(root / "manifests/gqa.tsv", "a") as fh:
        fh.write(f"gqa/9.jpg\t{len(extra)}\t00000000\n")
    run_stage(root)
    assert "hashing 1 part(s)" in capsys.readouterr().err
    assert os.stat(root / "index/coco.parquet").st_mtime_ns == stamp[root / "index/coco.parquet"]
    assert pq.read_table(root / "index/gqa.parquet").num_rows == 3
    # the same inputs give the same bytes, written anew from nothing
    for path in files:
        path.unlink()
    run_stage(root)
    assert (root / "index/coco.parquet").read_bytes() == files[root / "index/coco.parquet"]
    assert (root / "index/eval/pope.parquet").read_bytes() == files[
        root / "index/eval/pope.parquet"
    ]


def test_the_stage_refuses_sets_the_registry_does_not_name(tmp_path):
    root = layout(tmp_path, {"coco": {"coco/0.jpg": encode(photo(60))}})
    with pytest.raises(StageError, match="layout.evals"):
        run_stage(root, evals=())


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"jobs": 0, "shard_images": 10}, "index.jobs"),
        ({"jobs": 2, "shard_images": "many"}, "index.shard_images"),
        ({"jobs": 2, "threads": 4}, "`index` must be a mapping"),
    ],
)
def test_index_params_are_checked(raw, message):
    with pytest.raises(StageError, match=message):
        imageindex.IndexParams.parse(raw)
