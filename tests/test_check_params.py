"""The parameter check that runs before any stage (the real-CLI cases are in test_faults)."""

from __future__ import annotations

import yaml

from stages.check_params import problems_of, profiles
from tests.dvcrepo import ROOT


def committed() -> tuple[dict, dict]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    registry = yaml.safe_load((ROOT / "sources.yaml").read_text(encoding="utf-8"))
    return params, registry


def test_the_committed_params_and_registry_pass():
    assert problems_of(*committed()) == []


def test_profiles_are_the_origins_every_source_defines():
    _, registry = committed()
    assert profiles(registry["sources"]) == ["full", "mini"]


def test_a_wrong_profile_names_profile_and_its_allowed_values():
    params, registry = committed()
    problems = problems_of({**params, "profile": "ful"}, registry)
    assert problems == [
        "params.yaml: profile is 'ful'; allowed values: full, mini "
        "(the origins every entry of sources.yaml defines)"
    ]


def test_every_problem_is_listed_at_once():
    params, registry = committed()
    params = {**params, "validate": {**params["validate"], "policy": "maybe"}}
    params["mix"] = {**params["mix"], "allava": -1}
    registry["layout"]["copies"]["nonexistent"] = "../outside.json"
    problems = problems_of(params, registry)
    assert len(problems) == 4
    text = "\n".join(problems)
    for named in ("validate.policy", "mix.allava", "layout.copies.nonexistent: 'nonexistent'"):
        assert named in text
    assert "a relative path inside data/, got '../outside.json'" in text


def test_recipes_and_their_amounts_are_checked_with_the_mix_stages_parsers():
    params, registry = committed()
    params["mixtures"]["llava_v1_5_665k"]["vqav2"] = "lots"
    del params["mixtures"]["sharegpt4v_665k"]["sam"]
    params["recipes"]["mix1m_no_allava_llava_half"]["parts"]["extra"] = "mix1m/nope"
    text = "\n".join(problems_of(params, registry))
    assert "mixtures.llava_v1_5_665k.vqav2: 'lots' is not one of" in text
    assert "mixtures.sharegpt4v_665k.sam: missing" in text
    assert "recipes.mix1m_no_allava_llava_half.parts.extra: 'mix1m/nope'" in text


def test_the_image_index_duplicates_and_decontamination_are_checked():
    params, registry = committed()
    params["index"] = {"jobs": 0, "shard_images": 1000}
    params["dedup"] = {"max_distance": 40}
    params["recipes"]["mix1m"]["decontaminate"] = ["pope", "mmmu"]
    params["recipes"]["llava_v1_5_665k"]["decontaminate"] = "pope"
    registry["layout"]["evals"]["nowhere"] = {"source": "eval_nowhere"}
    text = "\n".join(problems_of(params, registry))
    assert "index.jobs must be a whole number >= 1, not 0" in text
    assert "dedup.max_distance must be a whole number of bits from 0 to 16" in text
    assert "recipes.mix1m.decontaminate: mmmu is not an evaluation set" in text
    assert "recipes.llava_v1_5_665k.decontaminate: a list of evaluation sets" in text
    assert "layout.evals.nowhere: `source` must name a source" in text
