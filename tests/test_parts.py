"""A source of many files (SA-1B's tars): fetched from a folder, pinned by its sha256sum
listing, optional; its tars extracted as hostile archives into a pooled tree."""

from __future__ import annotations

import dataclasses
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from llava_data import check_upstream, parts
from llava_data.common import StageError
from llava_data.layout import STAMP_NAME, TreeSpec
from llava_data.origins import Origin
from llava_data.verify import read_manifest
from stages.extract import extract_pool
from stages.fetch import fetch_parts
from tests.zips import parquet_of, tar_of, zip_bytes

NAMES = ("sa_000000.tar", "sa_000001.tar", "sa_000002.tar")


def jpg(name: str) -> bytes:
    return b"\xff\xd8\xff" + name.encode() * 20


def folder_of_tars(tmp_path: Path, count: int = 3) -> Path:
    src = tmp_path / "sa1b_copy"
    src.mkdir(parents=True)
    for n, name in enumerate(NAMES[:count]):
        i = f"sa_{n + 1}"
        data = tar_of({f"{i}.jpg": jpg(i), f"{i}.json": b'{"annotations": []}'})
        (src / name).write_bytes(data)
    return src


def registry_with(tmp_path: Path, origin: str) -> Path:
    registry = tmp_path / "sources.yaml"
    registry.write_text(f'sources:\n  sa1b:\n    file: "sa_{{:06d}}.tar"\n    mini: {origin}\n')
    return registry


def origin_of(registry: Path) -> Origin:
    return Origin.parse("sa1b", yaml.safe_load(registry.read_text())["sources"]["sa1b"], "mini")


def run_fetch(tmp_path: Path, registry: Path, local: Path | None = None) -> Path:
    dl = tmp_path / "downloads"
    return fetch_parts(origin_of(registry), dl / "sa1b", dl / ".partial", local, registry)


def test_a_first_fetch_pins_the_total_and_the_sha256_of_sha256sums_listing(tmp_path, capsys):
    src = folder_of_tars(tmp_path)
    registry = registry_with(
        tmp_path, "{manual: {instructions: get them}, parts: [0, 2], size: null, sha256: null}"
    )
    sums = run_fetch(tmp_path, registry, local=src)
    out = tmp_path / "downloads/sa1b"
    assert sorted(p.name for p in out.iterdir()) == [parts.SUMS, *NAMES]
    # the listing is what sha256sum prints, and the pin is what `sha256sum ... | sha256sum` gives
    listing = subprocess.run(
        ["sha256sum", *NAMES], cwd=src, capture_output=True, text=True, check=True
    ).stdout
    assert sums.read_text() == listing
    piped = subprocess.run(
        "sha256sum sa_0000*.tar | sha256sum", shell=True, cwd=src, capture_output=True, text=True
    ).stdout.split()[0]
    pinned = yaml.safe_load(registry.read_text())["sources"]["sa1b"]["mini"]
    assert pinned["sha256"] == piped
    assert pinned["size"] == sum((src / n).stat().st_size for n in NAMES)
    assert pinned["parts"] == [0, 2], "the rest of the line is kept"
    assert "was not pinned" in capsys.readouterr().err
    # pinned now: a second run verifies and keeps
    run_fetch(tmp_path, registry, local=src)


def test_missing_parts_are_named_with_the_folder_to_put_them_in(tmp_path):
    src = folder_of_tars(tmp_path, count=2)
    registry = registry_with(
        tmp_path, "{manual: {instructions: get them}, parts: [0, 2], size: null, sha256: null}"
    )
    with pytest.raises(StageError) as err:
        run_fetch(tmp_path, registry, local=src)
    msg = str(err.value)
    assert "1 of its 3 parts" in msg and "sa_000002.tar" in msg and str(src) in msg
    assert "dvc repro fetch@sa1b" in msg


def test_without_a_copy_the_manual_step_says_to_list_the_folder(tmp_path):
    registry = registry_with(
        tmp_path,
        "{manual: {instructions: Accept the licence and download them}, parts: [0, 2], "
        "size: null, sha256: null}",
    )
    with pytest.raises(StageError) as err:
        run_fetch(tmp_path, registry)
    msg = str(err.value)
    assert "Accept the licence and download them" in msg
    assert "sa_000000.tar … sa_000002.tar (3 files)" in msg
    assert "`sa1b: /path/to/sa1b/`" in msg and "sha256sum listing" in msg


def test_a_changed_part_is_named_and_nothing_is_moved(tmp_path):
    src = folder_of_tars(tmp_path)
    registry = registry_with(
        tmp_path, "{local: SRC, parts: [0, 2], size: null, sha256: null}".replace("SRC", str(src))
    )
    run_fetch(tmp_path, registry)
    out = tmp_path / "downloads/sa1b"
    size = (out / NAMES[1]).stat().st_size
    (out / NAMES[1]).unlink()  # the file was linked from the copy: write new bytes of that size
    (out / NAMES[1]).write_bytes(b"\0" * size)
    with pytest.raises(StageError) as err:
        run_fetch(tmp_path, registry)
    msg = str(err.value)
    assert "Parts that differ from the last verified listing" in msg and NAMES[1] in msg
    assert NAMES[0] + "," not in msg and NAMES[2] not in msg.split("differ")[1].split(".")[0]
    assert (out / NAMES[1]).read_bytes() == b"\0" * size, "nothing moved or deleted"
    new = tmp_path / "downloads/.partial/sa1b" / (parts.SUMS + ".new")
    assert str(new) in msg and new.is_file()


def test_a_truncated_tar_is_refused_before_anything_is_pinned(tmp_path):
    src = folder_of_tars(tmp_path)
    whole = (src / NAMES[2]).read_bytes()
    (src / NAMES[2]).write_bytes(whole[:700])  # inside the first member's data
    registry = registry_with(
        tmp_path, "{manual: {instructions: x}, parts: [0, 2], size: null, sha256: null}"
    )
    before = registry.read_text()
    with pytest.raises(StageError) as err:
        run_fetch(tmp_path, registry, local=src)
    msg = str(err.value)
    assert f"part {NAMES[2]} is not whole" in msg and "truncated" in msg
    assert registry.read_text() == before
    kept = tmp_path / "downloads/.partial/rejected/sa1b" / NAMES[2]
    assert kept.read_bytes() == whole[:700] and str(kept) in msg


def test_a_source_left_out_holds_one_note_and_keeps_earlier_parts_aside(tmp_path):
    src = folder_of_tars(tmp_path)
    registry = registry_with(
        tmp_path, "{manual: {instructions: x}, parts: [0, 2], size: null, sha256: null}"
    )
    run_fetch(tmp_path, registry, local=src)
    registry = registry_with(
        tmp_path, "{manual: {instructions: x}, parts: [0, 2], use: false, size: null, sha256: null}"
    )
    run_fetch(tmp_path, registry)
    out = tmp_path / "downloads/sa1b"
    assert [p.name for p in out.iterdir()] == [parts.LEFT_OUT]
    assert "use: false" in (out / parts.LEFT_OUT).read_text()
    rejected = tmp_path / "downloads/.partial/rejected/sa1b"
    assert sorted(p.name for p in rejected.iterdir()) == sorted([parts.SUMS, *NAMES])


@pytest.mark.parametrize(
    "origin, match",
    [
        ("{local: x, size: null}", "is a pattern: give `parts"),
        ("{hf: {repo: a/b, path: x, revision: null}, parts: [0, 2]}", "comes from a folder"),
        ("{local: x, parts: [2, 0]}", r"parts must be \[first, last\]"),
        ("{local: x, parts: [0, 2], use: maybe}", "use must be true or false"),
    ],
)
def test_bad_entries_of_parts_are_refused_before_io(tmp_path, origin, match):
    with pytest.raises(StageError, match=match):
        origin_of(registry_with(tmp_path, origin))


def test_a_plain_source_cannot_be_left_out():
    entry = {"file": "a.zip", "mini": {"local": "a.zip", "use": False}}
    with pytest.raises(StageError, match="only a source of parts can be left out"):
        Origin.parse("a", entry, "mini")


# ---- the pooled tree ------------------------------------------------------------------

POOL = TreeSpec.parse_pool(
    "sam_images",
    {
        "dest": "sam/images",
        "inputs": [
            {"archive": "sam_images", "from": ["*/", ""]},
            {"archive": "sa1b", "from": ["*/", ""], "only_ext": [".jpg"]},
        ],
    },
)


def pool_inputs(tmp_path: Path, zip_members: dict, tars: dict[str, bytes] | None) -> list[Path]:
    first, second = tmp_path / "downloads/sam_images", tmp_path / "downloads/sa1b"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    (first / "sam_images_share-sft.zip").write_bytes(zip_bytes(zip_members))
    if tars is None:
        (second / parts.LEFT_OUT).write_text("left out\n")
    for name, data in (tars or {}).items():
        (second / name).write_bytes(data)
    if tars:
        (second / parts.SUMS).write_text("listing\n")
    return [first, second]


def extract(tmp_path: Path, folders: list[Path]) -> tuple[Path, dict]:
    data = tmp_path / "data"
    manifest = tmp_path / "manifests/sam_images.tsv"
    record = extract_pool(POOL, folders, data, manifest, data / POOL.dest / STAMP_NAME, 20)
    return data / POOL.dest, record


def test_the_pool_takes_both_inputs_once_each_and_the_second_wins_a_difference(tmp_path, capsys):
    folders = pool_inputs(
        tmp_path,
        {"sft/sa_5.jpg": jpg("sa_5"), "sft/sa_6.jpg": jpg("sa_6")},
        {
            NAMES[0]: tar_of({"./sa_5.jpg": jpg("sa_5"), "./sa_5.json": b"{}"}),
            NAMES[1]: tar_of(
                {"sa_6.jpg": jpg("other"), "sa_7.jpg": jpg("sa_7"), "sa_7.json": b"{}"}
            ),
        },
    )
    tree, record = extract(tmp_path, folders)
    assert sorted(p.name for p in tree.iterdir()) == [
        STAMP_NAME,
        "sa_5.jpg",
        "sa_6.jpg",
        "sa_7.jpg",
    ]
    assert (tree / "sa_6.jpg").read_bytes() == jpg("other"), "SA-1B's original bytes win"
    assert record["held_twice_same"] == 1 and record["held_twice_replaced"] == 1
    assert record["files"] == 3
    assert [i["members"] for i in record["inputs"]] == [2, 3]
    rows = read_manifest(tmp_path / "manifests/sam_images.tsv")
    assert [r[0] for r in rows] == [
        "sam/images/sa_5.jpg",
        "sam/images/sa_6.jpg",
        "sam/images/sa_7.jpg",
    ]
    assert "1 files held by two inputs differ" in capsys.readouterr().err
    assert not list(tree.parent.glob(".images.*")), "no temporary left"


def test_an_input_left_out_adds_nothing(tmp_path):
    tree, record = extract(tmp_path, pool_inputs(tmp_path, {"sft/sa_5.jpg": jpg("sa_5")}, None))
    assert sorted(p.name for p in tree.iterdir()) == [STAMP_NAME, "sa_5.jpg"]
    assert record["inputs"][1] == {"archive": "sa1b", "files": 0, "from": [], "members": 0}


def test_one_file_in_two_parts_of_one_input_is_refused(tmp_path):
    tars = {NAMES[0]: tar_of({"sa_7.jpg": b"a"}), NAMES[1]: tar_of({"sa_7.jpg": b"b"})}
    with pytest.raises(
        StageError, match=r"sa_000000.tar and sa_000001.tar of archive 'sa1b' both hold 'sa_7.jpg'"
    ):
        extract(tmp_path, pool_inputs(tmp_path, {"sft/sa_5.jpg": jpg("sa_5")}, tars))


@pytest.mark.parametrize(
    "members, kinds, match",
    [
        ({"../escape.jpg": b"x"}, {}, "would land outside its folder"),
        ({"/abs.jpg": b"x"}, {}, "would land outside its folder"),
        ({}, {"link.jpg": tarfile.SYMTYPE}, "is a symbolic link to '/etc/passwd'"),
        ({}, {"hard.jpg": tarfile.LNKTYPE}, "is a hard link to '/etc/passwd'"),
        ({}, {"dev.jpg": tarfile.CHRTYPE}, "not a regular file or folder"),
        ({}, {"fifo.jpg": tarfile.FIFOTYPE}, "not a regular file or folder"),
    ],
)
def test_hostile_tars_are_refused_whole_and_the_tree_is_untouched(tmp_path, members, kinds, match):
    folders = pool_inputs(
        tmp_path,
        {"sft/sa_5.jpg": jpg("sa_5")},
        {NAMES[0]: tar_of({"sa_1.jpg": b"ok", **members}, kinds)},
    )
    tree = tmp_path / "data/sam/images"
    tree.mkdir(parents=True)
    (tree / "before.jpg").write_bytes(b"kept")
    with pytest.raises(StageError, match=match):
        extract(tmp_path, folders)
    assert [p.name for p in tree.iterdir()] == ["before.jpg"]
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "data/escape.jpg").exists()
    assert not list(tree.parent.glob(".images.*"))


def test_a_truncated_tar_is_refused_at_extraction_too(tmp_path):
    whole = tar_of({"sa_1.jpg": jpg("sa_1") * 10})
    folders = pool_inputs(tmp_path, {"sft/sa_5.jpg": jpg("sa_5")}, {NAMES[0]: whole[:900]})
    with pytest.raises(StageError, match=r"truncated.*dvc repro fetch@sa1b"):
        extract(tmp_path, folders)


def test_a_pool_needs_two_inputs_of_two_archives():
    with pytest.raises(StageError, match="a pool has two inputs"):
        TreeSpec.parse_pool("p", {"dest": "x", "inputs": [{"archive": "a", "from": ""}]})


# ---- what the checks say --------------------------------------------------------------


def test_check_upstream_says_a_left_out_source_needs_nothing_and_names_missing_parts(tmp_path):
    entry = {
        "file": "sa_{:06d}.tar",
        "mini": {"manual": {"instructions": "x"}, "parts": [0, 2], "use": False},
    }
    left = Origin.parse("sa1b", entry, "mini")
    row = check_upstream.judge(left, check_upstream.probe(left, None))
    assert row.status == "ok" and "use: false" in row.todo and "3 files" in row.todo
    entry["mini"]["use"] = True
    used = Origin.parse("sa1b", entry, "mini")
    src = folder_of_tars(tmp_path, count=2)
    row = check_upstream.judge(used, check_upstream.probe(used, src))
    assert row.status == "needs a manual step"
    assert "1 of its 3 files are not in" in row.todo and "sa_000002.tar" in row.todo
    whole = folder_of_tars(tmp_path / "b")
    row = check_upstream.judge(used, check_upstream.probe(used, whole))
    assert row.status == "ok"


def test_a_damaged_pool_names_the_stage_that_rebuilds_it(tmp_path):
    from llava_data.layout import extract_stage
    from llava_data.verify import TreeReport, describe

    assert extract_stage(POOL) == "extract_pool@sam_images"
    damaged = TreeReport("sam_images", "sam/images", 8, ("sam/images/sa_1.jpg",), (), False)
    text = describe(damaged)
    assert text.endswith("dvc repro --force --single-item extract@sam_images")
    text = describe(dataclasses.replace(damaged, stage=extract_stage(POOL)))
    assert text.endswith("dvc repro --force --single-item extract_pool@sam_images")


def test_a_tar_whose_members_sit_under_one_folder_gives_them_without_it(tmp_path):
    tars = {NAMES[0]: tar_of({"sa_000000/sa_9.jpg": jpg("sa_9"), "sa_000000/sa_9.json": b"{}"})}
    tree, record = extract(tmp_path, pool_inputs(tmp_path, {"sft/sa_5.jpg": jpg("sa_5")}, tars))
    assert sorted(p.name for p in tree.iterdir()) == [STAMP_NAME, "sa_5.jpg", "sa_9.jpg"]
    assert record["inputs"][1]["from"] == ["sa_000000/"]


# ---- whole Parquet parts -----------------------------------------------------------------


def shard(n: int, version: int = 0) -> bytes:
    rows = [
        {"question_id": f"{n}-{k}", "question": f"Is there a cat in image {k}? (v{version})"}
        for k in range(60)
    ]
    return parquet_of(rows)


def test_parquet_wholeness(tmp_path):
    whole = shard(0)
    cases = {
        "whole": whole,
        "truncated": whole[:-50],
        "short": b"PAR1",
        "not parquet": b"x" * 100,
        "footer too long": whole[:-8] + (10**6).to_bytes(4, "little") + b"PAR1",
        "spliced": whole[:200] + whole[-(int.from_bytes(whole[-8:-4], "little") + 8) :],
    }
    found = {}
    for name, data in cases.items():
        path = tmp_path / f"{name}.parquet"
        path.write_bytes(data)
        found[name] = parts.part_problem(path)
    assert found["whole"] is None
    assert "does not end with PAR1" in found["truncated"]
    assert "too few for a Parquet file" in found["short"]
    assert "does not begin with PAR1" in found["not parquet"]
    assert "more than the file's" in found["footer too long"]
    assert "past the data's end" in found["spliced"] or "cannot be read" in found["spliced"]
