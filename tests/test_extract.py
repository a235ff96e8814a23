"""The extract stage: the layout fixes, manifests, and refusal of hostile or broken archives."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest

from llava_data.common import StageError
from llava_data.layout import STAMP_NAME, TreeSpec, decode_escapes
from llava_data.verify import check_tree, read_manifest
from stages.extract import extract_tree
from tests.zips import corrupt_member_data, stored_zip, zip_bytes


def spec(**over) -> TreeSpec:
    raw = {"archive": "arch", "from": "top/", "dest": "ds/images"}
    raw.update(over)
    return TreeSpec.parse("t", raw)


def run(tmp_path: Path, archive_bytes: bytes, tree: TreeSpec | None = None, ratio: float = 20):
    tree = tree or spec()
    archive = tmp_path / "dl" / "a.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(archive_bytes)
    data = tmp_path / "data"
    manifest = tmp_path / "manifests" / "t.tsv"
    stamp = data / tree.dest / STAMP_NAME
    record = extract_tree(tree, archive, data, manifest, stamp, ratio)
    return data, manifest, record


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_members_under_prefix_go_to_dest_and_manifest_lists_them(tmp_path):
    data, manifest, record = run(
        tmp_path, zip_bytes({"top/b.jpg": b"bb", "top/sub/a.jpg": b"a", "other/x.jpg": b"x"})
    )
    assert tree_files(data / "ds/images") == {
        STAMP_NAME: (data / "ds/images" / STAMP_NAME).read_bytes(),
        "b.jpg": b"bb",
        "sub/a.jpg": b"a",
    }
    rows = read_manifest(manifest)
    assert [r[:2] for r in rows] == [("ds/images/b.jpg", 2), ("ds/images/sub/a.jpg", 1)]
    assert record["files"] == 2 and record["bytes"] == 3
    assert not (data / "other").exists()


def test_extraction_is_deterministic(tmp_path):
    archive = zip_bytes({"top/z.jpg": b"z" * 10, "top/a.jpg": b"a"})
    _, m1, r1 = run(tmp_path / "one", archive)
    _, m2, r2 = run(tmp_path / "two", archive)
    assert m1.read_bytes() == m2.read_bytes()
    assert r1 == r2


def test_rerun_replaces_tree_without_leftovers(tmp_path):
    run(tmp_path, zip_bytes({"top/old.jpg": b"o"}))
    data, _, _ = run(tmp_path, zip_bytes({"top/new.jpg": b"n"}))
    assert sorted(os.listdir(data / "ds/images")) == [STAMP_NAME, "new.jpg"]
    assert sorted(os.listdir(data / "ds")) == ["images"]


def test_unicode_escapes_are_decoded(tmp_path):
    assert decode_escapes("caf#U00e9_#U4e2d.jpg") == "café_中.jpg"
    assert decode_escapes("#L01f600.jpg") == "\U0001f600.jpg"
    data, manifest, _ = run(
        tmp_path,
        zip_bytes({"top/Beyonc#U00e9.jpg": b"x"}),
        spec(decode_names="zip_unicode_escapes"),
    )
    assert (data / "ds/images/Beyoncé.jpg").read_bytes() == b"x"
    assert read_manifest(manifest)[0][0] == "ds/images/Beyoncé.jpg"


def test_extensions_are_renamed_to_what_annotations_use(tmp_path):
    data, _, _ = run(
        tmp_path,
        zip_bytes({"top/1.gif": b"GIF89a", "top/2.PNG": b"\x89PNG", "top/3.jpg": b"j"}),
        spec(rename_ext={".gif": ".jpg", ".png": ".jpg"}),
    )
    names = sorted(os.listdir(data / "ds/images"))
    assert names == [STAMP_NAME, "1.jpg", "2.jpg", "3.jpg"]
    assert (data / "ds/images/1.jpg").read_bytes() == b"GIF89a"


def test_rename_collision_is_refused(tmp_path):
    with pytest.raises(StageError, match=r"both become '1.jpg'"):
        run(
            tmp_path,
            zip_bytes({"top/1.gif": b"g", "top/1.jpg": b"j"}),
            spec(rename_ext={".gif": ".jpg"}),
        )


def test_alias_points_to_the_tree_top_folder(tmp_path):
    data, _, _ = run(
        tmp_path, zip_bytes({"top/c.png": b"c"}), spec(dest="chartqa/train/png", aliases=["chatqa"])
    )
    assert os.readlink(data / "chatqa") == "chartqa"
    assert (data / "chatqa/train/png/c.png").read_bytes() == b"c"


def test_prefix_with_no_member_names_the_archive_top_folders(tmp_path):
    with pytest.raises(StageError) as err:
        run(
            tmp_path,
            zip_bytes({"train_val_images/train_images/a.jpg": b"a"}),
            spec(**{"from": "train_images/"}),
        )
    msg = str(err.value)
    assert "'train_images/'" in msg and "train_val_images/" in msg
    assert "layout.trees.t.from" in msg


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.jpg", "outside its folder"),
        ("top/../../evil.jpg", "outside its folder"),
        ("/etc/evil.jpg", "outside its folder"),
        ("top\\..\\..\\evil.jpg", "outside its folder"),
    ],
)
def test_escaping_member_refuses_the_archive_and_writes_nothing(tmp_path, name, why):
    with pytest.raises(StageError, match=why) as err:
        run(tmp_path, zip_bytes({"top/ok.jpg": b"ok", name: b"evil"}))
    assert "tree 't' (archive 'arch'" in str(err.value)
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "manifests").exists()
    assert not list(tmp_path.rglob("evil.jpg"))


def test_symlink_member_is_refused(tmp_path):
    with pytest.raises(StageError, match="symbolic link"):
        run(tmp_path, zip_bytes({"top/ok.jpg": b"ok"}, link={"top/passwd": "/etc/passwd"}))
    assert not (tmp_path / "data").exists()


def test_declared_expansion_beyond_ratio_is_refused(tmp_path):
    bomb = zip_bytes({"top/zeros.bin": b"\0" * 2_000_000})
    assert len(bomb) < 10_000
    with pytest.raises(StageError, match="decompression bomb"):
        run(tmp_path, bomb)
    assert not (tmp_path / "data").exists()


def test_truncated_archive_is_refused_with_the_fix(tmp_path):
    whole = zip_bytes({"top/a.jpg": b"a" * 1000, "top/b.jpg": b"b" * 1000})
    with pytest.raises(StageError) as err:
        run(tmp_path, whole[: len(whole) // 2])
    msg = str(err.value)
    assert "not a readable zip archive" in msg
    assert "dvc repro fetch@arch" in msg
    assert (tmp_path / "dl/a.zip").exists(), "the download must not be deleted"


def test_crc_mismatch_leaves_no_tree_and_keeps_the_previous_one(tmp_path):
    run(tmp_path, zip_bytes({"top/old.jpg": b"old"}))
    payload = bytes(range(256)) * 4
    bad = corrupt_member_data(stored_zip({"top/new.jpg": payload}), payload)
    with pytest.raises(StageError, match=r"member 'top/new.jpg' is damaged.*CRC"):
        run(tmp_path, bad)
    data = tmp_path / "data"
    assert sorted(os.listdir(data / "ds/images")) == [STAMP_NAME, "old.jpg"]
    assert sorted(os.listdir(data / "ds")) == ["images"], "no temporary folder is left"


def test_not_a_zip_is_refused(tmp_path):
    with pytest.raises(StageError, match="not a readable zip"):
        run(tmp_path, b"<html>quota exceeded</html>")


def test_verify_names_missing_and_changed_files(tmp_path):
    data, manifest, _ = run(tmp_path, zip_bytes({"top/a.jpg": b"aa", "top/b.jpg": b"bb"}))
    rows = read_manifest(manifest)
    assert check_tree("t", "ds/images", rows, data, with_crc=True).ok
    (data / "ds/images/a.jpg").unlink()
    (data / "ds/images/b.jpg").write_bytes(b"bx")
    report = check_tree("t", "ds/images", rows, data, with_crc=True)
    assert report.missing == ("ds/images/a.jpg",)
    assert report.wrong == ("ds/images/b.jpg",)
    assert not check_tree("t", "ds/images", rows, data, with_crc=False).wrong
    quick = check_tree("t", "ds/images", rows, data, with_crc=False, quick=True)
    assert quick.missing == ("ds/images/a.jpg",) and not quick.wrong


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"archive": "a", "from": "x", "dest": "d"}, "end with '/'"),
        ({"archive": "a", "from": "", "dest": "../d"}, "inside data/"),
        ({"archive": "a", "from": "", "dest": "d", "decode_names": "latin1"}, "decode_names"),
        ({"archive": "a", "from": "", "dest": "d", "rename_ext": {"gif": "jpg"}}, "rename_ext"),
        ({"archive": "a", "from": "", "dest": "d", "colour": 1}, "unknown keys"),
    ],
)
def test_bad_tree_params_are_refused_before_io(raw, match):
    with pytest.raises(StageError, match=re.escape(match)):
        TreeSpec.parse("t", raw)


def test_zip_module_sees_what_we_wrote():
    # guard for the helpers themselves: the link member really is a link
    import io

    data = zip_bytes({}, link={"l": "/x"})
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert (info.external_attr >> 16) & 0o170000 == 0o120000


@pytest.mark.parametrize(
    "escaped",
    [
        "#U002e#U002e/#U002e#U002e/#U002e#U002e/escaped.txt",
        "#U002ftmp/abs.txt",
        "a#U005c..#U005c..#U005cescaped.txt",
        "nul#U0000.jpg",
    ],
)
def test_names_that_escape_only_once_decoded_are_refused(tmp_path, escaped):
    with pytest.raises(StageError, match="once its name is decoded"):
        run(
            tmp_path,
            zip_bytes({"top/ok.jpg": b"ok", "top/" + escaped: b"evil"}),
            spec(decode_names="zip_unicode_escapes"),
        )
    assert not (tmp_path / "data").exists()
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("abs.txt"))


# ---- candidate layouts and known damage ------------------------------------------------

JPEG, PNG, GIF = b"\xff\xd8\xff\xe0" + b"j" * 8, b"\x89PNG\r\n\x1a\n" + b"p" * 8, b"GIF89a" + b"g"


@pytest.mark.parametrize(
    ("members", "chosen"),
    [
        ({"chartqa/train/png/a.png": PNG}, "chartqa/train/png/"),
        ({"chatqa/train/png/a.png": PNG}, "chatqa/train/png/"),
        ({"vqa_collection/chartqa/train/png/a.png": PNG}, "vqa_collection/chartqa/train/png/"),
    ],
)
def test_the_first_candidate_the_archive_has_is_used_and_recorded(tmp_path, members, chosen):
    tree = spec(
        **{
            "from": [
                "chartqa/train/png/",
                "chatqa/train/png/",
                "vqa_collection/chartqa/train/png/",
            ]
        }
    )
    data, manifest, record = run(tmp_path, zip_bytes(members), tree)
    assert (data / "ds/images/a.png").read_bytes() == PNG
    assert record["from"] == chosen
    assert manifest.read_text().splitlines()[0] == f"# t: members of a.zip under {chosen!r}"
    assert read_manifest(manifest)[0][0] == "ds/images/a.png"


@pytest.mark.parametrize(
    ("members", "chosen"),
    [
        ({"sam_share/sa_1.jpg": JPEG, "sam_share/sa_2.jpg": JPEG}, "sam_share/"),
        ({"sa_1.jpg": JPEG, "sa_2.jpg": JPEG}, ""),
    ],
)
def test_one_top_folder_of_any_name_or_none_at_all(tmp_path, members, chosen):
    data, _, record = run(tmp_path, zip_bytes(members), spec(**{"from": ["*/", ""]}))
    assert record["from"] == chosen
    assert sorted(p.name for p in (data / "ds/images").glob("sa_*")) == ["sa_1.jpg", "sa_2.jpg"]


def test_no_candidate_matching_stops_with_the_candidates_and_top_folders(tmp_path):
    with pytest.raises(StageError) as err:
        run(tmp_path, zip_bytes({"x/a.jpg": JPEG, "y/b.jpg": JPEG}), spec(**{"from": ["*/", "z/"]}))
    assert "no file under '*/', 'z/'" in str(err.value)
    assert "['x/', 'y/']" in str(err.value) and "layout.trees.t.from" in str(err.value)


def test_known_damage_is_listed_in_the_manifest_and_counted_in_the_stamp(tmp_path):
    members = {
        "top/ok.jpg": JPEG,
        "top/empty.jpg": b"",
        "top/zeros.jpg": b"\0" * 40,
        "top/gif.jpg": GIF,
        "top/png.gif": PNG,
        "top/notes.txt": b"",
    }
    data, manifest, record = run(tmp_path, zip_bytes(members), spec(rename_ext={".gif": ".jpg"}))
    damage = {row[0]: row[3] for row in read_manifest(manifest, with_damage=True)}
    assert damage == {
        "ds/images/empty.jpg": "empty",
        "ds/images/gif.jpg": "GIF named .jpg",
        "ds/images/notes.txt": "",
        "ds/images/ok.jpg": "",
        "ds/images/png.jpg": "PNG named .jpg",
        "ds/images/zeros.jpg": "unrecognised",
    }
    assert record["damaged_files"] == 4
    assert [r[:2] for r in read_manifest(manifest)][0] == ("ds/images/empty.jpg", 0)


def test_a_path_under_a_wrapper_folder_of_any_name(tmp_path):
    tree = spec(**{"from": ["ai2d/images/", "*/ai2d/images/"]})
    members = {"vqa_collection/ai2d/images/1.png": PNG, "vqa_collection/dvqa/images/2.png": PNG}
    data, _, record = run(tmp_path, zip_bytes(members), tree)
    assert record["from"] == "vqa_collection/ai2d/images/"
    assert [p.name for p in (data / "ds/images").glob("*.png")] == ["1.png"]
