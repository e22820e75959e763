"""The recipe's per-method defaults and the RLEIF reward rules of the api."""

from __future__ import annotations

import pytest
from posttrain.api.train import METHOD_DEFAULTS, TrainStageSpec


def stage(method: str, **train: object) -> TrainStageSpec:
    body: dict[str, object] = {
        "method": method,
        "model": {"uri": "file:///m"},
        "dataset": {"uri": "file:///d.jsonl"},
        "preferences": {"uri": "file:///p.jsonl"},
        "rewardModels": [{"role": "prm", "model": {"uri": "file:///prm"}}],
    }
    if train:
        body["train"] = train
    return TrainStageSpec.model_validate(body)


@pytest.mark.parametrize(
    ("method", "epochs", "learning_rate"), [("sft", 3.0, 5e-6), ("dpo", 2.0, 5e-7), ("rleif", 1.0, 1e-7)]
)
def test_each_method_starts_from_its_sources_defaults(
    method: str, epochs: float, learning_rate: float
) -> None:
    spec = stage(method)
    assert (spec.train.epochs, spec.train.learning_rate) == (epochs, learning_rate)
    assert METHOD_DEFAULTS[method].learning_rate == learning_rate


def test_rleif_kl_defaults_to_ppo_value_of_arena_learning() -> None:
    assert stage("rleif").train.rleif.kl_coef == 0.4


def test_given_hyperparameters_win_over_method_defaults() -> None:
    spec = stage("dpo", learningRate=1e-6, epochs=1)
    assert (spec.train.epochs, spec.train.learning_rate) == (1.0, 1e-6)


def test_filled_defaults_survive_a_round_trip() -> None:
    spec = stage("dpo")
    again = TrainStageSpec.model_validate(spec.wire())
    assert again.train.learning_rate == 5e-7


def test_field_docs_name_the_per_method_defaults() -> None:
    from posttrain.api.train import TrainConfig

    docs = TrainConfig.model_fields["learning_rate"].description or ""
    assert "`dpo` 5e-7" in docs and "`rleif` 1e-7" in docs


def rleif(roles: tuple[str, ...], **rleif_settings: object) -> TrainStageSpec:
    return TrainStageSpec.model_validate(
        {
            "method": "rleif",
            "model": {"uri": "file:///m"},
            "dataset": {"uri": "file:///d.jsonl"},
            "rewardModels": [{"role": role, "model": {"uri": f"file:///{role}"}} for role in roles],
            "train": {"rleif": rleif_settings},
        }
    )


@pytest.mark.parametrize(
    ("roles", "settings", "field"),
    [
        (("irm",), {}, "`prm` beside it"),
        (("irm", "prm"), {"combine": "sum"}, "train.rleif.combine"),
        (("irm", "prm"), {"scaleRewards": "group"}, "train.rleif.scaleRewards"),
    ],
)
def test_rewards_that_cannot_move_the_advantages_are_refused(
    roles: tuple[str, ...], settings: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        rleif(roles, **settings)


def test_rewards_that_weight_prompts_are_accepted() -> None:
    assert rleif(("irm", "prm")).train.rleif.scale_rewards == "batch"
    assert rleif(("irm", "prm"), algorithm="rloo", scaleRewards="group").train.rleif.algorithm == "rloo"
    assert rleif(("prm",), combine="sum", scaleRewards="group").train.rleif.combine == "sum"


def test_the_cel_rules_name_the_same_fields() -> None:
    rules = {rule.field_path: rule.cel for rule in TrainStageSpec.rules}
    assert "scaleRewards == 'group'" in rules[".train.rleif.scaleRewards"]
    assert "combine == 'sum'" in rules[".train.rleif.combine"]


def test_prm_defaults_are_length_robust() -> None:
    settings = rleif(("irm", "prm")).train.rleif
    assert settings.step_aggregate == "geomean" and settings.max_steps == 16
    assert settings.truncated == "exclude" and settings.step_format
