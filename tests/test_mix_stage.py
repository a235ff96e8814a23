"""The mix stage's own checks and counts (the weight semantics are in test_mixcore)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from llava_data.common import StageError
from stages.mix import MixParams, composition
from stages.split import save_npz

NAMES = ["allava", "sharegpt4v"]


def test_weights_and_seed_are_read_and_checked():
    params = MixParams.parse({"seed": 3, "allava": 0.5, "sharegpt4v": 2}, NAMES)
    assert params.seed == 3 and params.weights == {"allava": 0.5, "sharegpt4v": 2.0}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([1, 2], "must be a mapping"),
        ({"seed": -1, "allava": 1, "sharegpt4v": 1}, "mix.seed"),
        ({"seed": True, "allava": 1, "sharegpt4v": 1}, "mix.seed"),
        ({"seed": 0, "allava": -1, "sharegpt4v": 1}, "mix.allava"),
        ({"seed": 0, "allava": "1", "sharegpt4v": 1}, "mix.allava"),
        ({"seed": 0, "allava": 1, "sharegpt4v": 1, "laion": 1}, "mix.laion"),
        ({"seed": 0, "allava": 1}, "mix.sharegpt4v"),
    ],
)
def test_bad_mix_params_are_refused(raw, match):
    with pytest.raises(StageError, match=match):
        MixParams.parse(raw, NAMES)


def test_composition_counts_repeats_and_drops_per_component():
    codes = np.array([0, 1, 1, 0, 1])
    after_weights = np.array([2, 1, 0, 2, 1])
    final = np.array([2, 1, 0, 0, 1])
    assert composition(codes, NAMES, after_weights, final) == {
        "published": {"allava": 2, "sharegpt4v": 3},
        "after_weights": {"allava": 4, "sharegpt4v": 2},
        "after_validation": {"allava": 2, "sharegpt4v": 2},
    }


def test_the_split_index_has_the_same_bytes_whatever_writes_it(tmp_path):
    arrays = {"offsets": np.arange(5, dtype=np.int64), "names": np.array(["a", "bc"])}
    save_npz(tmp_path / "one.npz", arrays)
    save_npz(tmp_path / "two.npz", arrays)
    data = (tmp_path / "one.npz").read_bytes()
    assert data == (tmp_path / "two.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.npz") as zf:  # no zip64 fields, fixed metadata
        assert {(i.date_time, i.extract_version, i.extra) for i in zf.infolist()} == {
            ((1980, 1, 1, 0, 0, 0), 20, b"")
        }
    with np.load(tmp_path / "one.npz") as npz:
        assert npz["offsets"].tolist() == [0, 1, 2, 3, 4] and npz["names"].tolist() == ["a", "bc"]
