"""The learning workloads' shared decisions.

Hardware settings, DeepSpeed, torchrun, data splits, checkpoints, the Vicuna template on the tokenizer, and
the evaluation metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.reward import LoRA
from posttrain_trainer.common.chat import format_vicuna
from posttrain_trainer.train import common, evaluation
from posttrain_trainer.train.common import DistributedEnv, Hardware

GPU = Hardware(cuda=True, bf16=True, flash_attention=True, liger=True, vllm=True, deepspeed=True)
OLD_GPU = Hardware(cuda=True, bf16=False)
CPU = Hardware()


def test_precision_follows_the_hardware() -> None:
    assert common.resolve_precision("auto", GPU) == "bf16"
    assert common.resolve_precision("auto", OLD_GPU) == "fp32"
    assert common.resolve_precision("auto", CPU) == "fp32"
    assert common.resolve_precision("fp32", GPU) == "fp32"
    with pytest.raises(ValueError, match="bfloat16"):
        common.resolve_precision("bf16", CPU)


def test_attention_and_liger_only_where_they_run() -> None:
    assert common.resolve_attention("auto", GPU) == "flash_attention_2"
    assert common.resolve_attention("auto", Hardware(cuda=True)) == "sdpa"
    assert common.resolve_attention("auto", Hardware(flash_attention=True)) == "sdpa"
    assert common.resolve_attention("eager", GPU) == "eager"
    assert common.use_liger("auto", GPU)
    assert not common.use_liger("auto", Hardware(liger=True))
    assert not common.use_liger("never", GPU)


@pytest.mark.parametrize(
    ("batch", "micro", "world", "expected"),
    [(128, 4, 1, 32), (128, 4, 8, 4), (128, 4, 64, 1), (10, 4, 1, 3), (1, 4, 2, 1)],
)
def test_gradient_accumulation_reaches_the_global_batch(
    batch: int, micro: int, world: int, expected: int
) -> None:
    steps = common.gradient_accumulation(batch, micro, world)
    assert steps == expected
    assert micro * world * steps >= batch


def test_deepspeed_config_per_zero_stage() -> None:
    assert common.deepspeed_config(0, "bf16") is None
    stage2 = common.deepspeed_config(2, "bf16")
    assert stage2 is not None
    assert stage2["zero_optimization"]["stage"] == 2
    assert stage2["bf16"] == {"enabled": True}
    assert "stage3_gather_16bit_weights_on_model_save" not in stage2["zero_optimization"]
    stage3 = common.deepspeed_config(3, "fp32")
    assert stage3 is not None
    assert stage3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert stage3["bf16"] == {"enabled": False}
    # Batch sizes and clipping come from the Trainer's arguments, never stated twice.
    assert stage3["train_micro_batch_size_per_gpu"] == "auto"
    assert stage3["gradient_accumulation_steps"] == "auto"


def schedule(**changes: Any) -> common.Schedule:
    values: dict[str, Any] = {
        "epochs": 2.0,
        "max_steps": None,
        "learning_rate": 1e-5,
        "batch_size": 64,
        "micro_batch_size": 4,
        "precision": "auto",
        "zero_stage": 0,
        "gradient_checkpointing": False,
        "checkpoint_steps": 50,
        "seed": 7,
    }
    values.update(changes)
    return common.Schedule(**values)


def test_training_arguments_checkpoint_and_resume_settings(tmp_path: Path) -> None:
    arguments = common.training_arguments(schedule(), tmp_path, CPU, DistributedEnv())
    assert arguments["output_dir"] == str(tmp_path)
    assert arguments["save_strategy"] == "steps" and arguments["save_steps"] == 50
    assert arguments["save_only_model"] is False  # optimizer and RNG state, so a resume is exact
    assert arguments["max_steps"] == -1 and arguments["num_train_epochs"] == 2.0
    assert arguments["gradient_accumulation_steps"] == 16
    assert arguments["bf16"] is False and arguments["use_cpu"] is True
    assert "deepspeed" not in arguments and "ddp_backend" not in arguments


def test_training_arguments_under_torchrun_and_deepspeed(tmp_path: Path) -> None:
    two = DistributedEnv(world_size=2, rank=1, local_rank=1)
    cpu = common.training_arguments(schedule(max_steps=5), tmp_path, CPU, two)
    assert cpu["ddp_backend"] == "gloo" and cpu["max_steps"] == 5
    assert cpu["gradient_accumulation_steps"] == 8
    gpu = common.training_arguments(schedule(zero_stage=3), tmp_path, GPU, two)
    assert gpu["deepspeed"]["zero_optimization"]["stage"] == 3 and gpu["bf16"] is True
    assert "ddp_backend" not in gpu  # NCCL, the default on GPUs
    with pytest.raises(ValueError, match="DeepSpeed"):
        common.training_arguments(schedule(zero_stage=2), tmp_path, Hardware(cuda=True, bf16=True), two)


def test_distributed_env_reads_torchrun_variables() -> None:
    env = common.distributed_env(
        {
            "WORLD_SIZE": "16",
            "RANK": "9",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "stage-0.svc",
            "MASTER_PORT": "29500",
        }
    )
    assert (env.world_size, env.rank, env.local_rank) == (16, 9, 1)
    assert env.master_addr == "stage-0.svc" and env.master_port == "29500"
    assert not env.is_main
    assert common.distributed_env({}).is_main


def test_lora_settings() -> None:
    assert common.lora_config(LoRA(), "CAUSAL_LM") is None
    config = common.lora_config(LoRA(enabled=True, r=8, alpha=16), "CAUSAL_LM")
    assert config.r == 8 and config.lora_alpha == 16
    assert common.lora_target_modules(["all-linear"]) == "all-linear"
    assert common.lora_target_modules(["q_proj", "v_proj"]) == ["q_proj", "v_proj"]


def test_split_holdout_is_seeded_bounded_and_disjoint() -> None:
    rows = list(range(100))
    train, held = common.split_holdout(rows, 0.1, 64, seed=3)
    assert len(held) == 10 and len(train) == 90
    assert sorted(train + held) == rows
    assert common.split_holdout(rows, 0.1, 64, seed=3) == (train, held)
    assert common.split_holdout(rows, 0.1, 64, seed=4)[1] != held
    assert len(common.split_holdout(rows, 0.5, 7, seed=0)[1]) == 7
    assert common.split_holdout(rows, 0.5, 0, seed=0)[1] == []
    assert common.split_holdout([1], 0.9, 10, seed=0) == ([1], [])


def checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_latest_checkpoint_skips_cut_off_ones(tmp_path: Path) -> None:
    assert common.latest_checkpoint(tmp_path / "missing") is None
    assert common.latest_checkpoint(tmp_path) is None
    checkpoint(tmp_path, 8)
    newest = checkpoint(tmp_path, 12)
    checkpoint(tmp_path, 16, complete=False)  # killed while saving
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_st')  # half written
    (tmp_path / "runs").mkdir()
    assert common.latest_checkpoint(tmp_path) == newest
    assert common.checkpoint_step(newest) == 12
    assert common.checkpoint_step(tmp_path / "runs") is None


def test_log_history_helpers() -> None:
    history = [
        {"loss": 2.0, "reward": 0.1},
        {"reward": 0.2},
        {"loss": 1.0, "reward": 0.5},
        {"train_loss": 1.5},
    ]
    assert common.last_logged(history, "loss") == 1.0
    assert math.isnan(common.last_logged(history, "kl"))
    assert common.logged_values(history, "reward") == [0.1, 0.2, 0.5]
    assert common.window_means([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == (1.5, 7.5)
    assert common.window_means([1.0, 3.0]) == (1.0, 3.0)
    assert all(math.isnan(x) for x in common.window_means([]))


def test_seeding_before_loading_fixes_the_new_head(tiny_teacher: Path) -> None:
    import torch

    def score_head(process_seed: int, spec_seed: int | None) -> torch.Tensor:
        torch.manual_seed(process_seed)  # what torch draws from the OS in a new process
        if spec_seed is not None:
            common.seed_everything(spec_seed)
        model = common.load_model(tiny_teacher, "AutoModelForSequenceClassification", num_labels=1)
        weights: torch.Tensor = model.score.weight.detach().clone()
        return weights

    # The checkpoint has no score head: without the spec's seed it is whatever the process drew.
    assert not torch.equal(score_head(1, None), score_head(2, None))
    assert torch.equal(score_head(1, 7), score_head(2, 7))
    assert not torch.equal(score_head(1, 7), score_head(1, 8))


def test_vicuna_template_on_any_tokenizer(tiny_teacher: Path) -> None:
    tokenizer = common.load_tokenizer(tiny_teacher, "vicuna")
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am WizardLM."},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == format_vicuna(messages)
    assert tokenizer.pad_token is not None


def test_loss_mask_covers_answers_and_their_eos_only(tiny_teacher: Path) -> None:
    tokenizer = common.load_tokenizer(tiny_teacher, "vicuna")
    messages = [
        {"role": "user", "content": "What is 3+4?"},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "And 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(trained).replace(" ", "") == "7</s>4</s>"


def test_model_template_needs_one(tiny_teacher: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_teacher))
    tokenizer.chat_template = None
    tokenizer.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="no chat template"):
        common.load_tokenizer(tmp_path, "model")


def test_evaluation_prompt_reference_and_exact_match() -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    split = evaluation.prompt_and_reference(chat)
    assert split is not None
    prompt, reference = split
    assert prompt == chat[:4] and reference == "4"
    assert evaluation.prompt_and_reference([{"role": "user", "content": "no answer"}]) is None
    assert evaluation.prompt_and_reference([{"role": "assistant", "content": "no question"}]) is None
    assert evaluation.exact_match([" 4 ", "five", "a  b"], ["4", "5", "a b"]) == pytest.approx(2 / 3)
    assert math.isnan(evaluation.exact_match([], []))


def test_preference_metrics() -> None:
    start = evaluation.PreferenceScores(chosen=[-10.0, -8.0, -3.0], rejected=[-5.0, -9.0, -4.0])
    end = evaluation.PreferenceScores(chosen=[-4.0, -8.0, -6.0], rejected=[-6.0, -9.0, -4.0])
    assert evaluation.preference_accuracy(start) == pytest.approx(2 / 3)
    assert evaluation.preference_accuracy(end) == pytest.approx(2 / 3)
    margins = evaluation.implicit_reward_margins(end, start, beta=0.5)
    assert margins == pytest.approx([0.5 * (6 - (-1)), 0.0, 0.5 * (-3 - 0)])
    assert math.isnan(evaluation.preference_accuracy(evaluation.PreferenceScores([], [])))


def test_completion_tokens_split_where_the_prompt_ends(tiny_teacher: Path) -> None:
    tokenizer = common.load_tokenizer(tiny_teacher, "vicuna")
    prompt = [{"role": "user", "content": "What is 3+4?"}]
    ids, begin = evaluation.completion_token_ids(tokenizer, prompt, "7")
    assert tokenizer.decode(ids[:begin]).endswith("ASSISTANT:")
    assert tokenizer.decode(ids[begin:]).strip() == "7</s>"
