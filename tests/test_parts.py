"""A source of many files: SA-1B's tars fetched from a folder, pinned by their sha256sum
listing, optional, extracted as hostile archives into a pooled tree; Parquet shards of a
Hugging Face dataset's folder, named by a pattern or a glob, downloaded at one commit
from the Hub stand-in (tests/servers.py) and pinned the same way."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from llava_data import check_upstream, parts, transports
from llava_data.common import StageError
from llava_data.layout import STAMP_NAME, TreeSpec
from llava_data.origins import Origin
from llava_data.verify import read_manifest
from stages.extract import extract_pool
from stages.fetch import fetch_parts
from stages.fetch import main as fetch_main
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
        ("{url: http://x/a, parts: [0, 2]}", "comes from a folder on disk .*, not url"),
        ("{hf: {repo: a/b, path: x, revision: null}, parts: [0, 2]}", "base name is not `file`"),
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


# ---- a source of parts in a Hugging Face dataset's folder ------------------------------

POPE = "lmms-lab/POPE"
SHARDS = tuple(f"test-{n:05d}-of-00003.parquet" for n in range(3))
PATTERN = "test-{:05d}-of-00003.parquet"
TOKEN = "hf_not_a_real_token_0123456789"


@pytest.fixture
def quick(monkeypatch):
    """Instant retries, and a token that is not anyone's (never a real login's)."""
    monkeypatch.setattr(transports, "BACKOFF_S", 0.01)
    monkeypatch.setattr(transports, "MAX_BACKOFF_S", 0.05)
    monkeypatch.setattr(transports, "TIMEOUT_S", 10)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def shard(n: int, version: int = 0) -> bytes:
    rows = [
        {"question_id": f"{n}-{k}", "question": f"Is there a cat in image {k}? (v{version})"}
        for k in range(60)
    ]
    return parquet_of(rows)


def shards(version: int = 0, names=SHARDS) -> dict[str, bytes]:
    return {f"data/{name}": shard(n, version) for n, name in enumerate(names)}


def hf_registry(tmp_path: Path, name: str, file: str, hf: str, parts_: str, pins: str = "") -> Path:
    """A registry whose `full` origin of `name` is a folder of a Hub dataset."""
    registry = tmp_path / "sources.yaml"
    pins = pins or "size: null, sha256: null"
    registry.write_text(
        f"sources:\n"
        f"  other:\n"
        f"    file: x.json\n"
        f"    full: {{url: http://x/x.json, size: null, sha256: null}}\n"
        f"  {name}:\n"
        f'    file: "{file}"\n'
        f"    full: {{hf: {hf}, parts: {parts_}, {pins}}}\n"
    )
    return registry


def pope_registry(tmp_path: Path, revision: str | None, pins: str = "") -> Path:
    hf = f'{{repo: {POPE}, path: "data/{PATTERN}", revision: {revision or "null"}}}'
    return hf_registry(tmp_path, "pope", PATTERN, hf, "[0, 2]", pins)


def fetch_hf(tmp_path: Path, registry: Path, name: str = "pope") -> Path:
    """The fetch stage as `dvc repro fetch@<name>` runs it with profile `full`."""
    entry = yaml.safe_load(registry.read_text())["sources"][name]
    dl = tmp_path / "downloads"
    return fetch_parts(
        Origin.parse(name, entry, "full"), dl / name, dl / ".partial", None, registry
    )


def pinned_line(registry: Path, name: str = "pope") -> dict:
    return yaml.safe_load(registry.read_text())["sources"][name]["full"]


def test_hf_parts_by_pattern_are_downloaded_at_the_pinned_commit_and_pinned(tmp_path, hub, quick):
    first = hub.publish(POPE, {**shards(0), "README.md": b"# POPE"}, title="v1")
    hub.publish(POPE, shards(1), title="v2")  # the branch moved on; the pin holds v1
    registry = pope_registry(tmp_path, first)
    sums = fetch_hf(tmp_path, registry)
    out = tmp_path / "downloads/pope"
    assert sorted(p.name for p in out.iterdir()) == sorted([parts.SUMS, *SHARDS])
    for n, name in enumerate(SHARDS):
        assert (out / name).read_bytes() == shard(n, 0)
    listing = parts.listing_text(
        (hashlib.sha256(shard(n)).hexdigest(), s) for n, s in enumerate(SHARDS)
    )
    assert sums.read_text() == listing
    pin = pinned_line(registry)
    assert pin["size"] == sum(len(shard(n)) for n in range(3))
    assert pin["sha256"] == parts.listing_digest(listing)
    assert pin["hf"]["revision"] == first and pin["parts"] == [0, 2]
    trees = [s.path for s in hub.seen if "/tree/" in s.path]
    assert trees == [f"/api/datasets/{POPE}/tree/{first}/data"], "one listing, at the commit"
    resolves = {s.path for s in hub.seen if "/resolve/" in s.path}
    assert resolves == {f"/datasets/{POPE}/resolve/{first}/data/{name}" for name in SHARDS}
    assert not (tmp_path / "downloads/.partial/pope").exists()
    asked = len(hub.seen)
    assert fetch_hf(tmp_path, registry) == sums, "pinned: verified in place"
    assert len(hub.seen) == asked, "and the Hub is not asked"


def test_hf_parts_with_no_revision_are_all_taken_at_the_first_parts_commit(
    tmp_path, hub, quick, capsys
):
    first = hub.publish(POPE, shards(0))
    moved = []

    def move_main_once_the_first_part_resolved(seen):
        if not moved and "/tree/" in seen.path:  # the listing comes after the first HEAD
            moved.append(hub.publish(POPE, shards(1), title="while fetching"))

    hub.routes.insert(0, move_main_once_the_first_part_resolved)
    registry = pope_registry(tmp_path, None)
    fetch_hf(tmp_path, registry)
    assert moved and moved[0] != first
    out = tmp_path / "downloads/pope"
    assert [(out / n).read_bytes() for n in SHARDS] == [shard(n, 0) for n in range(3)]
    assert pinned_line(registry)["hf"]["revision"] == first
    heads = [s.path for s in hub.seen if s.method == "HEAD"]
    assert heads[0] == f"/datasets/{POPE}/resolve/main/data/{SHARDS[0]}"
    assert all(f"/resolve/{first}/" in h for h in heads[1:])
    err = capsys.readouterr().err
    assert f"hf.revision: {first}" in err and f"Recorded in {tmp_path / 'sources.yaml'}" in err
    assert TOKEN not in err


MME = "lmms-lab/MME"
MME_SHARDS = (
    "test-00000-of-00004-a25dbe3b44c4fda6.parquet",
    "test-00001-of-00004-7d22c7f1aba6fca4.parquet",
    "test-00002-of-00004-594798fd3f5b029c.parquet",
    "test-00003-of-00004-53ae1794f93b1e35.parquet",
)


def mme_registry(tmp_path: Path, pins: str = "") -> Path:
    hf = f'{{repo: {MME}, path: "data/test-*.parquet", revision: null}}'
    return hf_registry(tmp_path, "mme", "test-*.parquet", hf, "glob", pins)


def cli(tmp_path: Path, registry: Path, name: str) -> None:
    """`python -m stages.fetch` as dvc.yaml runs it, in this process."""
    dl = tmp_path / "downloads"
    fetch_main(
        ["--registry", str(registry), "--source", name, "--profile", "full"]
        + ["--out", str(dl / name), "--partial", str(dl / ".partial")]
        + ["--local-copies", str(tmp_path / "sources.local.yaml")]
    )


def test_hf_parts_by_glob_are_the_matching_files_sorted_and_a_second_run_asks_nothing(
    tmp_path, hub, quick
):
    files = shards(0, MME_SHARDS)
    files["data/validation-00000-of-00001.parquet"] = shard(9)
    commit = hub.publish(MME, {**files, "README.md": b"# MME"})
    registry = mme_registry(tmp_path)
    cli(tmp_path, registry, "mme")
    out = tmp_path / "downloads/mme"
    assert sorted(p.name for p in out.iterdir()) == sorted([parts.SUMS, *MME_SHARDS])
    listed = list(parts.parse_listing((out / parts.SUMS).read_text()))
    assert listed == list(MME_SHARDS), "sorted by name, whatever order the Hub lists them in"
    pin = pinned_line(registry, "mme")
    assert pin["hf"]["revision"] == commit and pin["parts"] == "glob"
    assert pin["size"] == sum(len(files[f"data/{n}"]) for n in MME_SHARDS)
    # pinned: the next run verifies what it holds without asking the Hub
    asked = len(hub.seen)
    cli(tmp_path, registry, "mme")
    assert len(hub.seen) == asked
    # a part changed since: named from the last verified listing, nothing moved
    (out / MME_SHARDS[2]).write_bytes(shard(7))
    with pytest.raises(StageError) as err:
        cli(tmp_path, registry, "mme")
    msg = str(err.value)
    assert f"Parts that differ from the last verified listing ({out / parts.SUMS}): " in msg
    assert f"{MME_SHARDS[2]}." in msg and "downloads it again from the Hub" in msg
    assert (out / MME_SHARDS[2]).read_bytes() == shard(7)


def test_a_glob_matching_nothing_names_the_folder_and_the_revision(tmp_path, hub, quick):
    commit = hub.publish(MME, {"data/validation-00000-of-00001.parquet": shard(0)})
    hf = f'{{repo: {MME}, path: "data/test-*.parquet", revision: {commit}}}'
    registry = hf_registry(tmp_path, "mme", "test-*.parquet", hf, "glob")
    with pytest.raises(StageError) as err:
        fetch_hf(tmp_path, registry, "mme")
    msg = str(err.value)
    assert f"no file of Hugging Face dataset {MME}'s folder data matches 'test-*.parquet'" in msg
    assert f"at commit {commit}" in msg and "validation-00000-of-00001.parquet" in msg
    assert "dvc repro fetch@mme" in msg and hub.cdn.seen == []


def test_an_interrupted_part_is_resumed_by_the_next_run(tmp_path, hub, quick, monkeypatch):
    monkeypatch.setattr(transports, "RETRIES", 0)
    commit = hub.publish(POPE, shards(0))
    registry = pope_registry(tmp_path, commit)
    hub.cdn.cut(1000)  # the first part's transfer
    with pytest.raises(StageError, match=r"1,000 bytes received are kept .*fetch@pope"):
        fetch_hf(tmp_path, registry)
    assert pinned_line(registry)["size"] is None, "nothing pinned"
    fetch_hf(tmp_path, registry)
    out = tmp_path / "downloads/pope"
    assert [(out / n).read_bytes() for n in SHARDS] == [shard(n) for n in range(3)]
    sha = hashlib.sha256(shard(0)).hexdigest()
    assert hub.cdn.range_starts(f"/blobs/{sha}") == [None, 1000]
    assert pinned_line(registry)["size"] == sum(len(shard(n)) for n in range(3))


@pytest.mark.parametrize("revision", ["commit", None])
def test_a_part_not_at_the_revision_lists_what_the_folder_holds(tmp_path, hub, quick, revision):
    commit = hub.publish(POPE, {**shards(0), "data/README.md": b"x", "other.parquet": shard(5)})
    wrong = "test-{:05d}-of-00004.parquet"
    hf = f'{{repo: {POPE}, path: "data/{wrong}", revision: {commit if revision else "null"}}}'
    registry = hf_registry(tmp_path, "pope", wrong, hf, "[0, 3]")
    with pytest.raises(StageError) as err:
        fetch_hf(tmp_path, registry)
    msg = str(err.value)
    at = f"commit {commit}" if revision else "the default branch"
    assert f"Hugging Face dataset {POPE} at {at} lacks 4 of the 4 parts" in msg
    assert "test-00000-of-00004.parquet" in msg and "nothing was downloaded" in msg
    assert f"That folder holds 3 files that look like parts: {', '.join(SHARDS)}." in msg
    assert f"Change sources.pope.file and sources.pope.full, {registry} lines 6 and 7, " in msg
    assert "`parts: glob`" in msg and "dvc repro fetch@pope" in msg
    assert hub.cdn.seen == [] and pinned_line(registry)["size"] is None


def test_a_truncated_parquet_part_is_refused_and_nothing_is_pinned(tmp_path, hub, quick):
    files = shards(0)
    whole = files[f"data/{SHARDS[1]}"]
    files[f"data/{SHARDS[1]}"] = whole[:-300]  # published damaged: its LFS sha256 agrees
    commit = hub.publish(POPE, files)
    registry = pope_registry(tmp_path, commit)
    before = registry.read_text()
    with pytest.raises(StageError) as err:
        fetch_hf(tmp_path, registry)
    msg = str(err.value)
    assert f"part {SHARDS[1]} is not whole: it does not end with PAR1" in msg
    assert "Nothing was pinned" in msg and f"at commit {commit}" in msg
    assert "the file on the Hub is itself damaged" in msg and "`pope: /path/to/pope/`" in msg
    assert registry.read_text() == before
    kept = tmp_path / "downloads/.partial/rejected/pope" / SHARDS[1]
    assert kept.read_bytes() == whole[:-300] and str(kept) in msg
    assert not (tmp_path / "downloads/pope" / parts.SUMS).exists()


def test_hub_parts_that_are_not_the_pinned_ones_are_refused_before_any_download(
    tmp_path, hub, quick
):
    commit = hub.publish(POPE, shards(0))
    registry = pope_registry(tmp_path, commit, "size: 10, sha256: null")
    with pytest.raises(StageError) as err:
        fetch_hf(tmp_path, registry)
    total = sum(len(shard(n)) for n in range(3))
    msg = str(err.value)
    assert f"now has {total:,} bytes (as the Hub lists them)" in msg
    assert "pins 10 bytes (sources.pope.full.size)" in msg and "nothing was downloaded" in msg
    assert f"`size: {total}`" in msg and "`pope: /path/to/pope/`" in msg
    assert hub.cdn.seen == [] and not list((tmp_path / "downloads/pope").iterdir())


def test_a_kept_part_of_another_commit_is_set_aside_and_downloaded_again(
    tmp_path, hub, quick, capsys
):
    hub.publish(POPE, shards(0))
    newer = hub.publish(POPE, {f"data/{SHARDS[2]}": shard(2, 1)})
    out = tmp_path / "downloads/pope"
    out.mkdir(parents=True)
    (out / SHARDS[0]).write_bytes(shard(0))  # the same at both commits: kept
    (out / SHARDS[2]).write_bytes(shard(2, 0))  # the older commit's
    fetch_hf(tmp_path, pope_registry(tmp_path, newer))
    assert (out / SHARDS[2]).read_bytes() == shard(2, 1)
    kept = tmp_path / "downloads/.partial/rejected/pope" / SHARDS[2]
    assert kept.read_bytes() == shard(2, 0)
    assert f"is not that part at commit {newer}" in capsys.readouterr().err
    gets = {s.path for s in hub.seen if s.method == "GET" and "/resolve/" in s.path}
    assert gets == {f"/datasets/{POPE}/resolve/{newer}/data/{n}" for n in SHARDS[1:]}


def test_a_local_glob_source_takes_the_folders_matching_files_sorted(tmp_path):
    src = tmp_path / "MME"
    src.mkdir()
    for n, name in enumerate(reversed(MME_SHARDS)):
        (src / name).write_bytes(shard(n))
    (src / "notes.txt").write_text("not a part")
    registry = hf_registry(tmp_path, "mme", "test-*.parquet", "x", "glob")
    registry.write_text(registry.read_text().replace("{hf: x,", f"{{local: {src},"))
    sums = fetch_hf(tmp_path, registry, "mme")
    assert list(parts.parse_listing(sums.read_text())) == list(MME_SHARDS)
    assert not (tmp_path / "downloads/mme/notes.txt").exists()
    pin = pinned_line(registry, "mme")
    assert pin["sha256"] == parts.listing_digest(sums.read_text())
    fetch_hf(tmp_path, registry, "mme")  # pinned: verified and kept
    (src / "test-00004-of-00004-ffff.parquet").write_bytes(shard(4))  # one more upstream
    with pytest.raises(StageError, match="its 5 parts in .* have .* bytes in all"):
        fetch_hf(tmp_path, registry, "mme")


@pytest.mark.parametrize(
    "file, origin, match",
    [
        ("test-*.parquet", {"local": "x"}, r"is a glob: give `parts: glob`"),
        ("test-*.parquet", {"local": "x", "parts": [0, 2]}, r"is a glob: give `parts: glob`"),
        ("test.parquet", {"local": "x", "parts": "glob"}, r"but 'test.parquet' has no `\*`"),
        ("t-{:05d}-*.parquet", {"local": "x", "parts": "glob"}, "nothing else special"),
        ("x.parquet", {"local": "x", "parts": "all"}, r"parts must be \[first, last\].* or `glob`"),
        (
            "test-*.parquet",
            {"hf": {"repo": "a/b", "path": "data/val-*.parquet"}, "parts": "glob"},
            r"got 'data/val-\*.parquet', whose base name is not `file` \('test-\*.parquet'\)",
        ),
        (
            "test-{:05d}.parquet",
            {"hf": {"repo": "a/b", "path": "data/test.parquet"}, "parts": [0, 2]},
            "whose base name is not `file`",
        ),
        (
            "test-*.parquet",
            {"hf": {"repo": "a/b", "path": "d*/test-*.parquet"}, "parts": "glob"},
            r"the folder of hf.path \('d\*'\) must be a plain path",
        ),
        ("test-*.parquet", {"url": "http://x/a", "parts": "glob"}, "not url"),
        ("test-*.parquet", {"gdrive": {"id": "x"}, "parts": "glob"}, "not gdrive"),
    ],
)
def test_bad_entries_of_hub_and_glob_parts_are_refused_before_io(file, origin, match):
    with pytest.raises(StageError, match=match):
        Origin.parse("s", {"file": file, "full": origin}, "full")


def test_good_entries_of_hub_parts_parse_and_name_their_parts():
    pope = {"repo": POPE, "path": f"data/{PATTERN}", "revision": None}
    origin = Origin.parse("pope", {"file": PATTERN, "full": {"hf": pope, "parts": [0, 2]}}, "full")
    assert origin.parts == SHARDS and origin.has_parts
    assert origin.part_origin(SHARDS[1], "c" * 40).spec == (POPE, f"data/{SHARDS[1]}", "c" * 40)
    mme = {"repo": MME, "path": "test-*.parquet", "revision": None}  # at the root
    glob = Origin.parse(
        "mme", {"file": "test-*.parquet", "full": {"hf": mme, "parts": "glob"}}, "full"
    )
    assert glob.parts == () and glob.has_parts and glob.by_glob
    assert glob.shown_file == "test-*.parquet (the files matching it)"
    named = glob.listed(["b.parquet", MME_SHARDS[1], MME_SHARDS[0], parts.SUMS, "test-x.json"])
    assert named.parts == MME_SHARDS[:2]
    assert named.shown_file == f"{MME_SHARDS[0]} … {MME_SHARDS[1]} (2 files)"
    assert origin.listed(["anything"]) is origin, "a pattern's parts are its own"


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
