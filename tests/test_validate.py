"""Record checks: every reason a record is reported for, and the drop/keep/fail policies."""

from __future__ import annotations

import io
import os
import unicodedata

import pytest
from PIL import Image

from llava_data.common import StageError
from llava_data.validate import (
    REASONS,
    ValidationParams,
    count_reasons,
    enforce,
    image_problems,
    missing_images,
    record_problems,
    structural_problem,
)


def jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def turns(*values):
    return [{"from": "human" if n % 2 == 0 else "gpt", "value": v} for n, v in enumerate(values)]


@pytest.fixture
def layout(tmp_path):
    images = tmp_path / "data/ds/images"
    images.mkdir(parents=True)
    good = jpeg((256, 256))
    (images / "ok.jpg").write_bytes(good)
    (images / "ok.png").write_bytes(png())
    (images / "gif_behind_jpg.jpg").write_bytes(gif())
    (images / "zeros.jpg").write_bytes(b"\0" * 40)
    (images / "cut.jpg").write_bytes(good[: int(len(good) * 0.9)])
    (images / "scrambled.png").write_bytes(scrambled_png())
    return tmp_path / "data"


def scrambled_png() -> bytes:
    """A PNG whose header reads fine but whose pixel data is damaged (its end marker intact)."""
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    at = data.index(b"IDAT") + 40
    data[at : at + 64] = bytes(64)
    return bytes(data)


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "GIF")
    return buf.getvalue()


def test_each_image_reason(layout):
    found = image_problems(
        layout,
        [
            "ds/images/ok.jpg",
            "ds/images/ok.png",
            "ds/images/gif_behind_jpg.jpg",
            "ds/images/absent.jpg",
            "elsewhere/absent.jpg",
            "ds/images/zeros.jpg",
            "ds/images/cut.jpg",
            "../outside.jpg",
            "/abs/path.jpg",
        ],
        decode=False,
        jobs=1,
    )
    assert found == {
        "ds/images/absent.jpg": "image_missing",
        "elsewhere/absent.jpg": "image_missing",
        "ds/images/zeros.jpg": "image_unreadable",
        "ds/images/cut.jpg": "image_truncated",
        "../outside.jpg": "image_path_outside_layout",
        "/abs/path.jpg": "image_path_outside_layout",
    }


def test_decoding_is_only_done_when_asked(layout):
    paths = ["ds/images/scrambled.png", "ds/images/ok.jpg"]
    assert image_problems(layout, paths, decode=False, jobs=1) == {}
    assert image_problems(layout, paths, decode=True, jobs=1) == {
        "ds/images/scrambled.png": "image_undecodable"
    }


def test_parallel_checks_find_the_same_problems(layout):
    paths = [f"ds/images/{n}" for n in ("ok.jpg", "zeros.jpg", "cut.jpg")] * 3000
    assert image_problems(layout, paths, decode=False, jobs=2) == image_problems(
        layout, paths, decode=False, jobs=1
    )


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": "a", "image": "x.jpg", "conversations": turns("<image>\nq", "a")}, None),
        ({"id": "a", "conversations": turns("hi", "hello", "more", "sure")}, None),
        ({"id": "a", "image": "x.jpg", "conversations": []}, "no_conversations"),
        ({"id": "a", "image": "x.jpg"}, "no_conversations"),
        (
            {
                "id": "a",
                "image": "x.jpg",
                "conversations": [
                    {"from": "gpt", "value": "<image>"},
                    {"from": "human", "value": "q"},
                ],
            },
            "turns_not_alternating",
        ),
        (
            {
                "id": "a",
                "image": "x.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>"},
                    {"from": "human", "value": "q"},
                ],
            },
            "turns_not_alternating",
        ),
        ({"id": "a", "image": "x.jpg", "conversations": turns("q", "a")}, "image_token_count"),
        (
            {"id": "a", "image": "x.jpg", "conversations": turns("<image>\n<image>", "a")},
            "image_token_count",
        ),
        ({"id": "a", "conversations": turns("<image>\nq", "a")}, "image_token_in_text_only"),
        (
            {"id": "a", "image": ["x.jpg", "y.jpg"], "conversations": turns("<image><image>", "a")},
            None,
        ),
        (
            {"id": "a", "image": ["x.jpg", "y.jpg"], "conversations": turns("<image>", "<image>")},
            None,
        ),
        ({"id": "a", "image": ["x.jpg"], "conversations": turns("<image>\nq", "a")}, None),
        (
            {"id": "a", "image": ["x.jpg", "y.jpg"], "conversations": turns("<image>\nq", "a")},
            "image_token_count",
        ),
        (
            {"id": "a", "image": ["x.jpg"], "conversations": turns("<image><image>", "a")},
            "image_token_count",
        ),
        ({"id": "a", "image": [], "conversations": turns("q", "a")}, "image_field_invalid"),
        ({"id": "a", "image": None, "conversations": turns("q", "a")}, "image_field_invalid"),
        ({"id": "a", "image": 3, "conversations": turns("<image>", "a")}, "image_field_invalid"),
        ({"id": "a", "image": {"p": "x.jpg"}, "conversations": []}, "image_field_invalid"),
        (
            {"id": "a", "image": ["x.jpg", 3], "conversations": turns("<image><image>", "a")},
            "image_field_invalid",
        ),
    ],
)
def test_structural_reasons(record, reason):
    assert structural_problem(record) == reason


def test_record_problems_use_the_image_root_and_report_paths(layout):
    records = [
        (0, {"id": "a", "image": "ok.jpg", "conversations": turns("<image>\nq", "a")}),
        (1, {"id": "b", "image": "absent.jpg", "conversations": turns("<image>\nq", "a")}),
        (2, {"id": "c", "image": "ok.jpg", "conversations": turns("q", "a")}),
        (3, {"id": "d", "conversations": turns("q", "a")}),
    ]
    params = ValidationParams("drop", False, 1)
    problems = record_problems(records, "ds/images/", layout, params)
    assert problems == {
        1: ("image_missing", "ds/images/absent.jpg"),
        2: ("image_token_count", "ds/images/ok.jpg"),
    }
    counts = count_reasons(problems)
    assert list(counts) == list(REASONS)
    assert counts["image_missing"] == 1 and sum(counts.values()) == 2


def test_policies(layout):
    problems = {1: ("image_missing", "ds/images/absent.jpg")}
    ids = ["a", "b"]
    assert enforce("f.json", problems, ids, "drop") == {1}
    assert enforce("f.json", problems, ids, "keep") == set()
    with pytest.raises(
        StageError, match=r"f.json: 1 records will not train.*id 'b': image_missing"
    ):
        enforce("f.json", problems, ids, "fail")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"policy": "ignore"}, "validate.policy"),
        ({"policy": "drop", "decode": "yes"}, "validate.decode"),
        ({"policy": "drop", "jobs": 0}, "validate.jobs"),
        ({"policy": "drop", "jobs": True}, "validate.jobs"),
    ],
)
def test_bad_validation_params_are_refused(raw, match):
    with pytest.raises(StageError, match=match):
        ValidationParams.parse(raw)


def test_reasons_keep_their_order_and_the_new_ones_come_last():
    assert REASONS[:9] == (
        "image_missing",
        "image_unreadable",
        "image_truncated",
        "image_undecodable",
        "image_path_outside_layout",
        "no_conversations",
        "turns_not_alternating",
        "image_token_count",
        "image_token_in_text_only",
    )
    assert REASONS[9:] == ("image_field_invalid", "id_invalid", "image_name_unicode_form")


def check(records, layout, image_root="ds/images/"):
    return record_problems(
        list(enumerate(records)), image_root, layout, ValidationParams("drop", False, 1)
    )


def test_a_multi_image_record_checks_every_image(layout):
    two = turns("<image>\n<image>\nq", "a")
    records = [
        {"id": "all-there", "image": ["ok.jpg", "ok.png"], "conversations": two},
        {"id": "one-gone", "image": ["ok.jpg", "absent.jpg"], "conversations": two},
        {"id": "cut", "image": ["cut.jpg", "absent.jpg"], "conversations": two},
        {"id": "tokens", "image": ["ok.jpg", "ok.png"], "conversations": turns("<image>", "a")},
        {
            "id": "three",
            "image": ["ok.jpg", "ok.png", "zeros.jpg"],
            "conversations": turns("<image>", "<image>", "<image>", "a"),
        },
        {"id": "outside", "image": ["ok.jpg", "../../x.jpg"], "conversations": two},
    ]
    assert check(records, layout) == {
        1: ("image_missing", "ds/images/absent.jpg"),
        2: ("image_truncated", "ds/images/cut.jpg"),
        3: ("image_token_count", "ds/images/ok.jpg"),
        4: ("image_unreadable", "ds/images/zeros.jpg"),
        5: ("image_path_outside_layout", "ds/images/../../x.jpg"),
    }


def test_an_image_field_that_is_no_path_list_is_image_field_invalid(layout):
    q = turns("<image>\nq", "a")
    records = [
        {"id": "list-with-number", "image": ["ok.jpg", 3], "conversations": q},
        {"id": "number", "image": 3, "conversations": q},
        {"id": "empty", "image": [], "conversations": turns("q", "a")},
        {"id": "null", "image": None, "conversations": turns("q", "a")},
        {"id": "object", "image": {"path": "ok.jpg"}, "conversations": q},
        {"id": "fine", "image": "ok.jpg", "conversations": q},
    ]
    problems = check(records, layout)
    assert problems == {
        0: ("image_field_invalid", "ds/images/ok.jpg"),
        1: ("image_field_invalid", ""),
        2: ("image_field_invalid", ""),
        3: ("image_field_invalid", ""),
        4: ("image_field_invalid", ""),
    }
    assert count_reasons(problems)["image_field_invalid"] == 5


def test_an_id_that_is_neither_string_nor_integer_is_id_invalid(layout):
    q = turns("<image>\nq", "a")
    records = [
        {"image": "ok.jpg", "conversations": q},
        {"id": None, "image": "ok.jpg", "conversations": q},
        {"id": 2.5, "image": "ok.jpg", "conversations": q},
        {"id": 3.0, "conversations": turns("q", "a")},
        {"id": True, "image": "ok.jpg", "conversations": q},
        {"id": ["a"], "image": "ok.jpg", "conversations": q},
        {"id": "s", "image": "ok.jpg", "conversations": q},
        {"id": 7, "image": "ok.jpg", "conversations": q},
        {"id": "", "image": "ok.jpg", "conversations": q},
        # orjson reads an integer beyond 64 bits as a float; the scan makes it its digits
        {"id": 1.2345678901234568e29, "image": "ok.jpg", "conversations": q},
    ]
    assert check(records, layout) == {
        n: ("id_invalid", "" if n == 3 else "ds/images/ok.jpg") for n in range(6)
    }


def nfd_file(folder, name: str, content: bytes) -> None:
    """Create the file named by the NFD (decomposed) UTF-8 bytes of `name`."""
    raw = os.fsencode(str(folder)) + b"/" + unicodedata.normalize("NFD", name).encode()
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def test_a_name_on_disk_in_another_unicode_form_is_image_name_unicode_form(tmp_path):
    root = tmp_path / "data"
    folder = root / "ds" / "images"
    folder.mkdir(parents=True)
    nfc = unicodedata.normalize("NFC", "café.jpg")
    assert nfc.encode() == b"caf\xc3\xa9.jpg"
    nfd_file(folder, nfc, jpeg())
    listed = os.listdir(folder)
    if nfc in listed:  # a file system that normalizes names itself: nothing to report
        pytest.skip("this file system normalizes file names")
    assert listed == [unicodedata.normalize("NFD", nfc)]
    (folder / unicodedata.normalize("NFC", "crème.jpg")).write_bytes(jpeg())
    mixed = "cre\u0300me.jpg"  # the same name, decomposed
    q = turns("<image>\nq", "a")
    records = [
        {"id": "nfc-name", "image": nfc, "conversations": q},
        {"id": "nfd-name", "image": unicodedata.normalize("NFD", nfc), "conversations": q},
        {"id": "other-way", "image": mixed, "conversations": q},
        {"id": "really-missing", "image": "cafe.jpg", "conversations": q},
        {"id": "multi", "image": ["crème.jpg", nfc], "conversations": turns("<image>" * 2, "a")},
    ]
    assert check(records, root) == {
        0: ("image_name_unicode_form", "ds/images/" + nfc),
        2: ("image_name_unicode_form", "ds/images/" + mixed),
        3: ("image_missing", "ds/images/cafe.jpg"),
        4: ("image_name_unicode_form", "ds/images/" + nfc),
    }
    # missing_images alone (as `verify` uses it) still says missing, and names the file
    other: dict[str, str] = {}
    assert missing_images(root, ["ds/images/" + nfc, "ds/images/cafe.jpg"], other) == {
        "ds/images/" + nfc,
        "ds/images/cafe.jpg",
    }
    assert other == {"ds/images/" + nfc: unicodedata.normalize("NFD", nfc)}


def test_names_mixing_composed_and_decomposed_characters_are_matched(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    on_disk = "e\u0301t\u00e9.png"  # first é decomposed, second composed
    (folder / on_disk).write_bytes(png())
    wanted = unicodedata.normalize("NFC", on_disk)
    assert image_problems(tmp_path, [f"d/{wanted}", f"d/{on_disk}"], decode=False, jobs=1) == {
        f"d/{wanted}": "image_name_unicode_form"
    }
