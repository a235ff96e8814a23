"""Record checks: every reason a record is reported for, and the drop/keep/fail policies."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from stages.common import StageError
from stages.validate import (
    REASONS,
    ValidationParams,
    count_reasons,
    enforce,
    image_problems,
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
