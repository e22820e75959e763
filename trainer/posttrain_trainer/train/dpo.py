"""Stage-DPO: direct preference optimisation on one preference slice, on TRL's DPOTrainer.

WizardLM-2 splits its preference data into slices and improves the model slice by slice: each TrainStage
of method `dpo` trains on one slice, starting from the previous stage's model (`model.from` names that
stage), which is also the stage's reference model. The chain of stages is the curriculum. β and the loss
variant come from the spec; the reference log-probabilities can be computed once before training, which
frees the reference model's memory.

Inputs: `spec.model.uri`, `spec.preferences` (rows `{"id", "prompt": [messages up to the last user
turn] or "text", "chosen": "text", "rejected": "text", "meta"}`), optionally `spec.evalDataset`.
Outputs: `model`, `checkpoints/`; metrics `loss`, `eval.preferenceAccuracy.start` /
`eval.preferenceAccuracy` (held-out pairs whose chosen answer is more likely than the rejected one,
before and after), `eval.rewardMargin` and `eval.rewardAccuracy` (DPO's implicit reward against the stage's
starting model on the held-out pairs).

References: Rafailov et al., 2023 (DPO); the WizardLM-2 announcement (Stage-DPO); Luo et al., 2024
(Arena Learning: DPO 2 epochs, lr 5e-7, β 0.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.api.metrics import Train
from posttrain.api.train import TrainStageSpec

from posttrain_trainer.common.chat import RowError, instruction
from posttrain_trainer.common.storage import local_path
from posttrain_trainer.train import common
from posttrain_trainer.train.evaluation import (
    PreferenceScores,
    implicit_reward_margins,
    mean,
    preference_accuracy,
    preference_scores,
)
from posttrain_trainer.train.stage import StageMethod, schedule
from posttrain_trainer.train.template import Place, Setup, Split


def preference_pair(row: dict[str, Any]) -> dict[str, Any]:
    """A preference row as `{"prompt": [messages], "chosen": text, "rejected": text}`.

    Raises:
        RowError: the row lacks a prompt ending in a user turn, or a chosen/rejected text.
    """
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise RowError("`prompt` is neither a list of messages nor a string")
    messages = []
    for index, message in enumerate(prompt):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise RowError(f"prompt[{index}] has no valid role")
        if not isinstance(message.get("content"), str):
            raise RowError(f"prompt[{index}].content is not a string")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise RowError("the prompt does not end with a user turn")
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str) or not chosen or not rejected:
        raise RowError("`chosen` and `rejected` must be non-empty strings")
    return {"prompt": messages, "chosen": chosen, "rejected": rejected}


def load_pairs(uri: str) -> tuple[list[dict[str, Any]], int]:
    """The preference pairs of a dataset and the number of rows set aside as malformed."""
    return common.load_parsed(uri, preference_pair)


def conversational(pair: dict[str, Any]) -> dict[str, Any]:
    """A pair in TRL's conversational preference format, so the chat template renders it."""
    return {
        "prompt": pair["prompt"],
        "chosen": [{"role": "assistant", "content": pair["chosen"]}],
        "rejected": [{"role": "assistant", "content": pair["rejected"]}],
    }


def dpo_config(
    spec: TrainStageSpec, output_dir: Path, hardware: common.Hardware, dist: common.DistributedEnv
) -> Any:
    """TRL's DPOConfig for a TrainStage."""
    from trl.trainer.dpo_config import DPOConfig

    settings = spec.train.dpo
    return DPOConfig(
        **common.training_arguments(schedule(spec), output_dir, hardware, dist),
        max_length=spec.train.max_length,
        beta=settings.beta,
        # With `sftWeight`, the NLL of the chosen answers joins the DPO loss (TRL's `sft` loss type).
        loss_type=[settings.loss_type, "sft"] if settings.sft_weight else [settings.loss_type],
        loss_weights=[1.0, settings.sft_weight] if settings.sft_weight else None,
        # Robust DPO needs a label-flip probability; 0.1 is the one its paper recommends.
        label_smoothing=0.1 if settings.loss_type == "robust" else 0.0,
        precompute_ref_log_probs=settings.precompute_ref_log_probs,
    )


def build_trainer(
    spec: TrainStageSpec,
    model: Any,
    tokenizer: Any,
    pairs: list[dict[str, Any]],
    args: Any,
    callbacks: list[Any] | None = None,
    reference: Any = None,
) -> Any:
    """A DPOTrainer over preference pairs; the reference is the starting model.

    The reference is `reference` (a frozen copy), the base under LoRA, or log-probabilities precomputed with
    the model before training.
    """
    from datasets import Dataset
    from trl.trainer.dpo_trainer import DPOTrainer

    return DPOTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list([conversational(p) for p in pairs]),
        processing_class=tokenizer,
        peft_config=common.lora_config(spec.train.lora, "CAUSAL_LM"),
        callbacks=callbacks or [],
    )


def reference_model(spec: TrainStageSpec, hardware: common.Hardware) -> Any:
    """A frozen copy of the starting model, or None where the trainer needs none.

    None under LoRA (the base without adapters) and with precomputed log-probabilities. It only runs forward
    passes, so it is loaded in bf16 where the training precision is bf16 (the trainer's default copy would
    repeat the fp32 master weights).
    """
    train = spec.train
    if train.lora.enabled or train.dpo.precompute_ref_log_probs:
        return None
    assert spec.model.uri is not None
    precision = common.resolve_precision(train.precision, hardware)
    return common.load_model(
        local_path(spec.model.uri),
        dtype=common.torch_dtype(precision, frozen_base=True),
        attention=common.resolve_attention(train.attention, hardware),
    )


class DPO(StageMethod[dict[str, Any], PreferenceScores]):
    """One Stage-DPO slice: preference pairs in.

    Preference accuracy and DPO's implicit reward against the stage's starting model on the held-out pairs.
    """

    watch = ("loss", "rewards/accuracies", "rewards/margins")

    def load_data(self) -> Split[dict[str, Any]]:
        """The preference pairs of `spec.preferences`, and the held-out ones."""
        preferences = self.spec.preferences
        assert preferences is not None and preferences.uri is not None
        pairs, rejected = load_pairs(preferences.uri)
        pairs, contaminated = self.set_aside_tasks(
            pairs, lambda pair: instruction({"messages": pair["prompt"]})
        )
        pairs, held_out = self.hold_out(pairs, lambda ref: load_pairs(str(ref.uri))[0])
        if not pairs:
            raise ValueError(f"{preferences.uri}: no valid preference pair")
        return self.split(pairs, held_out, rejected, contaminated)

    def trainer_config(self, output_dir: Path, place: Place) -> Any:
        """TRL's DPOConfig."""
        return dpo_config(self.spec, output_dir, place.hardware, place.dist)

    def build_trainer(self, setup: Setup[dict[str, Any]]) -> Any:
        """TRL's DPOTrainer, with the reference model the settings call for."""
        reference = reference_model(self.spec, setup.place.hardware)
        return build_trainer(
            self.spec,
            setup.model,
            setup.tokenizer,
            setup.train,
            setup.args,
            setup.callbacks,
            reference=reference,
        )

    def score(self, model: Any, tokenizer: Any, held_out: list[dict[str, Any]]) -> PreferenceScores:
        """Log-probabilities of the chosen and rejected answers of the held-out pairs."""
        return preference_scores(model, tokenizer, held_out)

    def evaluation_metrics(
        self, scores: PreferenceScores, start: PreferenceScores | None
    ) -> dict[str, float]:
        """`eval.preferenceAccuracy`; after training also `eval.rewardMargin` and `eval.rewardAccuracy`."""
        metrics: dict[str, float] = {Train.PREFERENCE_ACCURACY: preference_accuracy(scores)}
        if start is not None:
            margins = implicit_reward_margins(scores, start, self.spec.train.dpo.beta)
            metrics[Train.REWARD_MARGIN] = mean(margins)
            metrics[Train.REWARD_ACCURACY] = mean([float(m > 0) for m in margins])
        return metrics
