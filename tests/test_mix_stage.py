"""The mix stage's own checks and counts (the weight semantics are in test_mixcore)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common import StageError
from stages.mix import MixParams, composition

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
