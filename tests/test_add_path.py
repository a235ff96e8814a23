"""The 558K `add-path` derivation: one prefix before every image path, nothing else changed."""

from __future__ import annotations

from stages.add_path import with_prefix

PREFIX = "llava/llava_pretrain/images/"


def test_a_single_image_gets_the_prefix_and_keeps_its_key_order():
    record = {"id": "1", "image": "00453/004539375.jpg", "conversations": []}
    out = with_prefix(record, PREFIX)
    assert out == {**record, "image": PREFIX + "00453/004539375.jpg"}
    assert list(out) == list(record)


def test_each_image_of_a_multi_image_record_gets_the_prefix():
    record = {"id": "2", "image": ["a/1.jpg", "b/2.jpg"], "conversations": []}
    assert with_prefix(record, PREFIX)["image"] == [PREFIX + "a/1.jpg", PREFIX + "b/2.jpg"]


def test_text_only_records_and_odd_image_values_are_left_alone():
    for record in ({"id": "3", "conversations": []}, {"id": "4", "image": 7}):
        assert with_prefix(record, PREFIX) is record
