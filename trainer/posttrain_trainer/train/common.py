"""What every learning workload (SFT, Stage-DPO, RLEIF, and the IRM/PRM reward models) shares.

- the hardware probe and the pure decisions made from it: precision, attention kernel, Liger kernels,
  DeepSpeed ZeRO config, gradient accumulation;
- the torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR) the operator sets on every pod;
- loading the model and tokenizer with the WizardLM-2 (Vicuna) chat template, LoRA settings;
- the common `TrainingArguments` of every run: checkpoints under `<output>/checkpoints` every
  `checkpointSteps` steps, and resuming from the latest complete checkpoint of an earlier attempt;
- a TrainerCallback that reports steps to `progress.json`, and saving the final `model` folder.

Inputs: the TrainStage / RewardModel spec (`posttrain.api.train`, `posttrain.api.reward`).
Outputs: `<output>/checkpoints/checkpoint-N/` and `<output>/model/` (HF format with the tokenizer and
its chat template).

References: the WizardLM-2 announcement (Vicuna format); Luo et al., 2023 (WizardMath, RLEIF).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from posttrain.api.metrics import Training
from posttrain.api.reward import LoRA

from posttrain_trainer.client.budget import BudgetTracker
from posttrain_trainer.common.chat import VICUNA_TEMPLATE, RowError, normalize
from posttrain_trainer.common.report import Reporter
from posttrain_trainer.common.storage import read_lines

T = TypeVar("T")

log = logging.getLogger(__name__)

Precision = Literal["bf16", "fp32"]
CHECKPOINTS = "checkpoints"
"""Folder of the checkpoints inside the output folder."""
MODEL = "model"
"""Folder of the final model inside the output folder (the `model` output)."""


# ---------------------------------------------------------------------------------------------------
# Hardware and the pure decisions made from it


@dataclass(frozen=True)
class Hardware:
    """What this process can use; probed once, passed to the pure decisions below."""

    cuda: bool = False
    """A CUDA GPU is visible."""
    bf16: bool = False
    """The GPU computes in bfloat16."""
    flash_attention: bool = False
    """flash-attn is installed."""
    liger: bool = False
    """liger-kernel is installed."""
    vllm: bool = False
    """vLLM is installed."""
    deepspeed: bool = False
    """DeepSpeed is installed."""


def installed(module: str) -> bool:
    """Whether a module can be imported here (looked up, not imported)."""
    return importlib.util.find_spec(module) is not None


def probe_hardware() -> Hardware:
    """The hardware and optional kernels of this process (GPU packages are imported lazily, never here)."""
    import torch

    cuda = torch.cuda.is_available()
    return Hardware(
        cuda=cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        flash_attention=installed("flash_attn"),
        liger=installed("liger_kernel"),
        vllm=installed("vllm"),
        deepspeed=installed("deepspeed"),
    )


def resolve_precision(setting: str, hardware: Hardware) -> Precision:
    """`bf16` or `fp32` for a spec's `precision` (`auto`: bf16 where the GPU supports it).

    Raises:
        ValueError: bf16 asked for where the hardware cannot run it.
    """
    if setting == "auto":
        return "bf16" if hardware.bf16 else "fp32"
    if setting == "bf16" and not hardware.bf16:
        raise ValueError("precision bf16 needs a GPU that supports bfloat16; use `auto` or `fp32`")
    return "bf16" if setting == "bf16" else "fp32"


def resolve_attention(setting: str, hardware: Hardware) -> str:
    """The attention implementation for a spec's `attention`.

    `auto`: FlashAttention 2 on a GPU with flash-attn installed, else PyTorch's scaled-dot-product attention.
    """
    if setting != "auto":
        return setting
    return "flash_attention_2" if hardware.cuda and hardware.flash_attention else "sdpa"


def use_liger(setting: str, hardware: Hardware) -> bool:
    """Whether to patch the model with Liger's kernels (`auto`: installed and on a GPU; they are Triton)."""
    return setting == "auto" and hardware.cuda and hardware.liger


def gradient_accumulation(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Accumulation steps so that micro batch x processes x steps reaches the global batch (at least 1)."""
    return max(1, math.ceil(batch_size / (micro_batch_size * max(1, world_size))))


def deepspeed_config(zero_stage: int, precision: Precision) -> dict[str, Any] | None:
    """The DeepSpeed config of a ZeRO stage (None for stage 0).

    "auto" values are filled in by the Trainer from its own arguments, so batch sizes and clipping are stated
    once.
    """
    if zero_stage == 0:
        return None
    zero: dict[str, Any] = {
        "stage": zero_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if zero_stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                # Without it a ZeRO-3 save writes empty shards: the final model must be whole.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
    }


def lora_target_modules(modules: Sequence[str]) -> str | list[str]:
    """The `target_modules` of peft: the `all-linear` shorthand stays a string."""
    return "all-linear" if list(modules) == ["all-linear"] else list(modules)


def lora_config(settings: LoRA, task_type: str) -> Any:
    """A peft LoraConfig, or None when adapters are off."""
    if not settings.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_modules(settings.target_modules),
        task_type=task_type,
    )


# ---------------------------------------------------------------------------------------------------
# torchrun


@dataclass(frozen=True)
class DistributedEnv:
    """The torchrun environment of this process (single process when absent)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str | None = None
    master_port: str | None = None

    @property
    def is_main(self) -> bool:
        """The process that writes the model, result.json and progress.json."""
        return self.rank == 0


def distributed_env(environ: dict[str, str] | None = None) -> DistributedEnv:
    """Read WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT."""
    env = dict(os.environ) if environ is None else environ
    return DistributedEnv(
        world_size=int(env.get("WORLD_SIZE", "1")),
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        master_addr=env.get("MASTER_ADDR"),
        master_port=env.get("MASTER_PORT"),
    )


# ---------------------------------------------------------------------------------------------------
# Data


@dataclass
class Loaded:
    """Rows read from a dataset and how many were set aside as malformed."""

    rows: list[dict[str, Any]]
    rejected: int = 0


def load_chats(uri: str, fmt: str = "auto") -> Loaded:
    """Chat rows of a dataset in any supported chat format; malformed rows are counted, not fatal."""
    rows: list[dict[str, Any]] = []
    rejected = 0
    for _, item in read_lines(uri):
        try:
            row = item if isinstance(item, dict) else json.loads(item)
            rows.append(normalize(row, "auto" if fmt in ("auto", "chat") else fmt))
        except (RowError, ValueError):
            rejected += 1
    return Loaded(rows, rejected)


def load_json_rows(uri: str) -> Loaded:
    """Rows of a dataset as dicts (preference, ranking and step formats); unparsable lines are counted."""
    rows: list[dict[str, Any]] = []
    rejected = 0
    for _, item in read_lines(uri):
        if isinstance(item, dict):
            rows.append(item)
            continue
        try:
            row = json.loads(item)
        except ValueError:
            rejected += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            rejected += 1
    return Loaded(rows, rejected)


def load_parsed(uri: str, parse: Callable[[dict[str, Any]], T]) -> tuple[list[T], int]:
    """Rows of a dataset parsed by `parse`, and the number set aside as malformed.

    Malformed are unreadable lines and rows `parse` rejects with RowError.
    """
    loaded = load_json_rows(uri)
    parsed, rejected = [], loaded.rejected
    for row in loaded.rows:
        try:
            parsed.append(parse(row))
        except RowError:
            rejected += 1
    return parsed, rejected


def split_holdout(
    rows: Sequence[Any], fraction: float, max_samples: int, seed: int
) -> tuple[list[Any], list[Any]]:
    """(train, held out): a seeded random share of the rows, at most `max_samples`, never all of them."""
    count = min(max_samples, round(len(rows) * fraction), max(0, len(rows) - 1))
    if count <= 0:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


# ---------------------------------------------------------------------------------------------------
# Models


def load_tokenizer(path: Path, chat_template: str = "vicuna") -> Any:
    """The tokenizer of a model folder with the chat template the spec asks for.

    `vicuna` installs the WizardLM-2 format (its system prompt, `</s>` after each answer, generation
    markers for assistant-only loss), whatever the base model; `model` keeps the model's own template.

    Raises:
        ValueError: the tokenizer has no eos token, or `model` is asked for and there is no template.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.eos_token is None:
        raise ValueError(f"{path}: the tokenizer has no eos token; every answer must end with one")
    if chat_template == "vicuna":
        tokenizer.chat_template = VICUNA_TEMPLATE
    elif not tokenizer.chat_template:
        raise ValueError(f"{path}: the model has no chat template; use `chatTemplate: vicuna`")
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so eos can stand in for it.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) with the spec's seed; call it before loading a model.

    Loading can create weights the checkpoint lacks (a reward model's score head) and peft draws
    LoRA adapters at random; torch seeds itself from the OS in every new process, so without this two
    runs of one spec would start from different weights and measure different things. The Trainer seeds
    again when it is built, which is too late for weights made before it.
    """
    from transformers import set_seed

    set_seed(seed)


def torch_dtype(precision: Precision, frozen_base: bool) -> Any:
    """The dtype to load weights in.

    Full fine-tuning without DeepSpeed keeps fp32 master weights (bf16 autocast computes in bf16): in
    pure bf16 the small updates of post-training learning rates (1e-6..1e-7) round away. Frozen bases
    (LoRA) and DeepSpeed (it keeps its own fp32 master copy) load in bf16.
    """
    import torch

    return torch.bfloat16 if precision == "bf16" and frozen_base else torch.float32


def load_model(
    path: Path,
    auto_class: str = "AutoModelForCausalLM",
    *,
    dtype: Any = None,
    attention: str = "sdpa",
    **kwargs: Any,
) -> Any:
    """A model from a folder; an adapters-only folder (an unmerged LoRA stage) is merged onto its base."""
    import transformers

    loader = getattr(transformers, auto_class)
    options: dict[str, Any] = {"attn_implementation": attention, **kwargs}
    if dtype is not None:
        options["dtype"] = dtype
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base_path = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = loader.from_pretrained(base_path, **options)
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    return loader.from_pretrained(str(path), **options)


def set_pad_token(model: Any, tokenizer: Any) -> None:
    """Make the model agree with the tokenizer on padding (sequence classifiers read it)."""
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id


# ---------------------------------------------------------------------------------------------------
# Training arguments, checkpoints, progress


@dataclass(frozen=True)
class Schedule:
    """The settings every learning workload has, whatever its kind."""

    epochs: float
    max_steps: int | None
    learning_rate: float
    batch_size: int
    micro_batch_size: int
    precision: str
    zero_stage: int
    gradient_checkpointing: bool
    checkpoint_steps: int
    seed: int
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    liger_kernels: str = "never"
    report_to: tuple[str, ...] = ()
    """Experiment trackers of the Trainer besides TensorBoard (`wandb`, `mlflow`; see tracking.py)."""


def training_arguments(
    schedule: Schedule, output_dir: Path, hardware: Hardware, dist: DistributedEnv
) -> dict[str, Any]:
    """Keyword arguments shared by every TRL config / TrainingArguments of this project.

    Checkpoints go to `output_dir` every `checkpointSteps` with optimizer and RNG state (so a restart
    resumes exactly), keeping the last two in case the newest was cut off while being written.
    """
    precision = resolve_precision(schedule.precision, hardware)
    if schedule.zero_stage and not hardware.deepspeed:
        raise ValueError(f"zeroStage {schedule.zero_stage} needs DeepSpeed, which is not installed here")
    arguments: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": schedule.epochs,
        "max_steps": schedule.max_steps or -1,
        "learning_rate": schedule.learning_rate,
        "lr_scheduler_type": schedule.lr_scheduler,
        "warmup_steps": schedule.warmup_ratio,
        "per_device_train_batch_size": schedule.micro_batch_size,
        "per_device_eval_batch_size": schedule.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(
            schedule.batch_size, schedule.micro_batch_size, dist.world_size
        ),
        "bf16": precision == "bf16",
        "fp16": False,
        "gradient_checkpointing": schedule.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False}
        if schedule.gradient_checkpointing
        else None,
        "save_strategy": "steps",
        "save_steps": schedule.checkpoint_steps,
        "save_total_limit": 2,
        "save_only_model": False,
        "logging_steps": 1,
        # TensorBoard is added as a callback writing to the output folder (tracking.py).
        "report_to": list(schedule.report_to) or "none",
        "disable_tqdm": True,
        "seed": schedule.seed,
        "data_seed": schedule.seed,
        "use_cpu": not hardware.cuda,
        "ddp_find_unused_parameters": False,
        "use_liger_kernel": use_liger(schedule.liger_kernels, hardware),
    }
    if not hardware.cuda and dist.world_size > 1:
        # NCCL needs GPUs; CPU processes under torchrun talk over gloo.
        arguments["ddp_backend"] = "gloo"
    ds = deepspeed_config(schedule.zero_stage, precision)
    if ds is not None:
        arguments["deepspeed"] = ds
    return arguments


def checkpoint_step(path: Path) -> int | None:
    """The step of a `checkpoint-N` folder, or None if it is not one or was cut off while saving.

    The Trainer writes `trainer_state.json` last, so a checkpoint with a readable one is complete.
    """
    prefix, _, number = path.name.rpartition("-")
    if prefix != "checkpoint" or not number.isdigit():
        return None
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return int(number)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, if an earlier attempt left one."""
    if not folder.is_dir():
        return None
    steps = {p: checkpoint_step(p) for p in folder.iterdir() if p.is_dir()}
    complete = [(step, p) for p, step in steps.items() if step is not None]
    return max(complete)[1] if complete else None


def last_logged(history: Sequence[dict[str, Any]], key: str) -> float:
    """The last value of `key` in a Trainer's log history (NaN if never logged)."""
    for entry in reversed(history):
        if key in entry and isinstance(entry[key], int | float):
            return float(entry[key])
    return math.nan


def logged_values(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Every logged value of `key`, in order."""
    return [float(e[key]) for e in history if isinstance(e.get(key), int | float)]


def window_means(values: Sequence[float], share: float = 0.25) -> tuple[float, float]:
    """Means of the first and the last `share` of a series (at least one value each)."""
    if not values:
        return math.nan, math.nan
    width = max(1, math.floor(len(values) * share))
    return sum(values[:width]) / width, sum(values[-width:]) / width


def progress_callback(reporter: Reporter | None, watch: Sequence[str] = ("loss",)) -> Any:
    """A TrainerCallback writing (steps done, total steps) to progress.json on the main process."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Reports optimizer steps; the message shows the latest watched metrics."""

        def __init__(self) -> None:
            self.latest: dict[str, float] = {}

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            for key in watch:
                if logs and isinstance(logs.get(key), int | float):
                    self.latest[key] = float(logs[key])

        def _report(self, state: Any, force: bool) -> None:
            if reporter is None or not state.is_world_process_zero:
                return
            message = " ".join(f"{k} {v:.4g}" for k, v in self.latest.items())
            reporter.progress(state.global_step, state.max_steps, "steps", message, force=force)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._report(state, force=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._report(state, force=True)

    return ProgressCallback()


def budget_callback(budget: BudgetTracker) -> Any:
    """A TrainerCallback that stops training cleanly once the run's wall time or GPU-hours are spent.

    Checked after every optimizer step; every process stops at the same step (the verdict is agreed
    with an all-reduce when training is distributed, so no process waits for the others forever).
    The model trained so far is saved as usual, and the result says which limit was reached.
    """
    from transformers import TrainerCallback

    class BudgetCallback(TrainerCallback):
        """Sets `should_training_stop` when a limit is reached."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # Tokens and requests are not a training run's to spend: only time limits apply here.
            if _agreed(budget.exhausted("") is not None):
                control.should_training_stop = True

    return BudgetCallback()


def _agreed(flag: bool) -> bool:
    """True when any process of a distributed run says True (the flag itself when not distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def train_with_resume(trainer: Any, checkpoints: Path) -> int:
    """Train, resuming from the latest complete checkpoint of an earlier attempt.

    Returns that checkpoint's step (0 for a fresh start).
    """
    checkpoint = latest_checkpoint(checkpoints)
    resumed = 0
    if checkpoint is not None:
        resumed = checkpoint_step(checkpoint) or 0
        log.info("resuming from %s (step %d)", checkpoint, resumed)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    return resumed


def train_and_save(
    trainer: Any, tokenizer: Any, checkpoints: Path, target: Path, world_size: int, **save: Any
) -> dict[str, float]:
    """Train, save the final model to `target` and return the run's metrics.

    Training resumes from the latest checkpoint; the model is saved with `save_final_model(**save)`. The
    metrics: loss, steps, resumedFromStep, worldSize.
    """
    resumed = train_with_resume(trainer, checkpoints)
    save_final_model(trainer, tokenizer, target, **save)
    return {
        Training.LOSS: last_logged(trainer.state.log_history, "loss"),
        Training.STEPS: float(trainer.state.global_step),
        Training.RESUMED_FROM_STEP: float(resumed),
        Training.WORLD_SIZE: float(world_size),
    }


def release_memory(cuda: bool) -> None:
    """Free the trainer's memory before evaluating the saved model."""
    import gc

    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


def save_final_model(
    trainer: Any,
    tokenizer: Any,
    target: Path,
    *,
    base_path: Path,
    merge: bool,
    auto_class: str = "AutoModelForCausalLM",
    model_kwargs: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Write the trained model to `target` (HF format, with the tokenizer and its chat template).

    The Trainer's own save gathers sharded (ZeRO-3) weights; LoRA adapters are then merged onto the
    base on the main process when `merge`, else left as a peft folder naming `base_path`.
    Every process must call this (the save is collective); only the main one writes.
    """
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    unwrapped.config.use_cache = True
    is_peft = hasattr(unwrapped, "peft_config")
    staging = target.with_name(target.name + ".adapters") if is_peft and merge else target
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    if is_peft and merge:
        import torch

        model = load_model(base_path, auto_class, dtype=torch.float32, **(model_kwargs or {}))
        from peft import PeftModel

        merged = PeftModel.from_pretrained(model, str(staging)).merge_and_unload()
        merged.config.use_cache = True
        if target.exists():
            shutil.rmtree(target)
        merged.save_pretrained(str(target))
        shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(str(target))
    for name, text in (extra_files or {}).items():
        (target / name).write_text(text)
