"""The preflight: what each source needs, and refusing a build the disk cannot hold."""

from __future__ import annotations

import pytest
import yaml

from llava_data.common import StageError
from llava_data.origins import Origin
from llava_data.parts import listing_text
from llava_data.preflight import main
from llava_data.registry import fill_nulls

PB = 10**15


def registry(tmp_path, size: int) -> str:
    (tmp_path / "sources.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": {
                    "coco": {
                        "file": "train2017.zip",
                        "licence": "COCO terms",
                        "full": {"url": "http://x/train2017.zip", "size": size},
                    },
                    "webdata": {
                        "file": "WebData.zip",
                        "licence": "academic use only",
                        "full": {"manual": {"instructions": "get it"}},
                    },
                    "notes": {
                        "file": "notes.json",
                        "licence": "CC-BY",
                        "full": {"url": "http://x/notes.json", "size": 5},
                    },
                },
                "layout": {"trees": {"coco": {"archive": "coco", "from": "", "dest": "coco"}}},
            }
        )
    )
    (tmp_path / "params.yaml").write_text("profile: full\n")
    done = tmp_path / "downloads/notes/notes.json"
    done.parent.mkdir(parents=True)
    done.write_text("12345")
    return [
        "--registry",
        str(tmp_path / "sources.yaml"),
        "--params",
        str(tmp_path / "params.yaml"),
        "--downloads",
        str(tmp_path / "downloads"),
        "--data-root",
        str(tmp_path / "data"),
    ]


def test_listing_shows_status_licence_and_manual_steps(tmp_path, capsys):
    main(registry(tmp_path, 1000))
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert "missing" in lines["coco"] and "fetch (url)" in lines["coco"]
    assert "COCO terms" in lines["coco"]
    assert "present" in lines["notes"]
    assert "manual" in lines["webdata"] and "academic use only" in lines["webdata"]
    assert "manual steps needed before the build: webdata" in out
    assert "to download: 1,000 B; to extract: 1,000 B" in out


def test_a_build_the_disk_cannot_hold_is_refused_before_any_download(tmp_path):
    with pytest.raises(StageError, match=r"not enough disk: 1000000\.00 GB to download plus"):
        main([*registry(tmp_path, PB), "--check-space"])
    assert not (tmp_path / "downloads/coco").exists()


def test_partial_download_is_listed_as_resuming(tmp_path, capsys):
    args = registry(tmp_path, 1000)
    part = tmp_path / "downloads/.partial/coco/train2017.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 400)
    main(args)
    out = capsys.readouterr().out
    assert "partial (400 B, resumes)" in out and "to download: 600 B" in out


def test_recording_fills_only_the_nulls_of_one_origin_line():
    text = (
        "sources:\n"
        "  a:\n"
        "    # comment kept\n"
        "    full: {hf: {repo: r, path: p, revision: null}, size: null, sha256: null}\n"
        "    mini: {local: x, size: null, sha256: null}\n"
        "  b:\n"
        "    full: {url: u, size: null, sha256: null}\n"
    )
    out = fill_nulls(text, "a", "full", {"size": 7, "sha256": "ab" * 32, "revision": "c" * 40})
    assert out.splitlines()[3] == (
        f"    full: {{hf: {{repo: r, path: p, revision: {'c' * 40}}}, size: 7, "
        f"sha256: {'ab' * 32}}}"
    )
    assert [a for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b] == [
        text.splitlines()[3]
    ]
    with pytest.raises(StageError, match="sources.c.full"):
        fill_nulls(text, "c", "full", {"size": 1})


def test_a_shown_size_is_counted_and_every_fact_says_how_surely_it_is_known(tmp_path, capsys):
    args = registry(tmp_path, 1000)
    path = tmp_path / "sources.yaml"
    reg = yaml.safe_load(path.read_text())
    reg["sources"]["webdata"]["full"].update(
        {"shown_size": "20.3 GiB", "known": {"shown_size": "mirror"}}
    )
    reg["sources"]["coco"]["full"].update(
        {
            "md5": "c" * 32,
            "sha256_prefix": "69a8bb58",
            "files": {"coco": 118287},
            "known": {"size": "mirror", "files": "mirror", "sha256_prefix": "assumed"},
        }
    )
    path.write_text(yaml.safe_dump(reg))
    main(args)
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    # shown as the page shows it (binary units here); counted as its bytes, 20.3 * 2^30
    assert "~20.3 GiB" in lines["webdata"] and "~size M" in lines["webdata"]
    assert "size M, md5 P, sha256 prefix A, files M" in lines["coco"]
    assert f"to download: {21_797_069_619 / 1e9:.2f} GB" in out
    assert "(1 sizes as their pages show them)" in out
    assert "unknown size" not in out


@pytest.mark.parametrize("shown", ["30.2", "30.2GB", "30,2 GB", "30.2 gb", 30200000000, "1 PB"])
def test_a_shown_size_without_its_unit_is_refused_naming_the_entry(tmp_path, shown):
    entry = {"file": "a.zip", "full": {"url": "http://x/a.zip", "shown_size": shown}}
    with pytest.raises(StageError, match=r"sources\.a\.full.*shown_size must be a number and"):
        Origin.parse("a", entry, "full")


def test_an_optional_source_left_out_is_shown_but_not_counted_and_needs_no_step(tmp_path, capsys):
    args = registry(tmp_path, 1000)
    table = yaml.safe_load((tmp_path / "sources.yaml").read_text())
    sa1b = {"manual": {"instructions": "x"}, "parts": [0, 50], "shown_size": "535 GB"}
    table["sources"]["sa1b"] = {"file": "sa_{:06d}.tar", "full": {**sa1b, "use": False}}
    pool = {"archive": "sa1b", "from": ""}
    table["layout"]["pools"] = {
        "sam": {"dest": "sam/images", "inputs": [{"archive": "coco", "from": ""}, pool]}
    }
    table["layout"]["trees"] = {}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(table))
    main(args)
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert "sa_000000.tar … sa_000050.tar (51 files)" in lines["sa1b"]
    assert "~535 GB" in lines["sa1b"] and "left out (use: false)" in lines["sa1b"]
    assert "manual steps needed before the build: webdata (" in out  # not sa1b
    assert "to download: 1,000 B; to extract: 1,000 B" in out
    table["sources"]["sa1b"]["full"]["use"] = True  # used: counted, and a manual step
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(table))
    main(args)
    out = capsys.readouterr().out
    assert "manual steps needed before the build: sa1b, webdata" in out
    assert "to download: 535.00 GB; to extract: 535.00 GB" in out


def test_hub_parts_show_their_count_and_planned_size_and_a_partial_fetch(tmp_path, capsys):
    args = registry(tmp_path, 1000)
    table = yaml.safe_load((tmp_path / "sources.yaml").read_text())
    pattern = "test-{:05d}-of-00003.parquet"
    hf = {"repo": "lmms-lab/POPE", "path": f"data/{pattern}", "revision": "c" * 40}
    table["sources"]["pope"] = {"file": pattern, "full": {"hf": hf, "parts": [0, 2], "size": 900}}
    mme = {"repo": "lmms-lab/MME", "path": "data/test-*.parquet", "revision": None}
    table["sources"]["mme"] = {
        "file": "test-*.parquet",
        "full": {"hf": mme, "parts": "glob", "shown_size": "1.2 MB"},
    }
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(table))
    pope = tmp_path / "downloads/pope"
    pope.mkdir(parents=True)
    (pope / "test-00000-of-00003.parquet").write_bytes(b"x" * 300)  # one part placed
    main(args)
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert "test-{:05d}-of-00003.parquet (3 files)" in lines["pope"]
    assert "900 B" in lines["pope"] and "partial (1 of 3 files, 300 B, resumes)" in lines["pope"]
    assert "test-*.parquet (the files matching it)" in lines["mme"]
    assert "~1.2 MB" in lines["mme"] and "fetch (hf)" in lines["mme"]
    assert "to download: 1.2 MB" in out  # 600 B of POPE, ~1.2 MB of MME, 1,000 B of COCO
    # once fetched, a glob's count is its kept listing's
    (tmp_path / "downloads/mme").mkdir()
    names = [f"test-0000{n}-of-00002-{n}abc.parquet" for n in range(2)]
    (tmp_path / "downloads/mme/SHA256SUMS").write_text(listing_text(("0" * 64, n) for n in names))
    main(args)
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert "(2 files)" in lines["mme"] and "present" in lines["mme"]
