"""Benchmark of the learning workloads: SFT tokens/s and MFU, DPO pairs/s.

SFT: posttrain's SFT trainer (`posttrain_trainer.train.sft.build_trainer`, the code a TrainStage runs)
against plain TRL (`trl.SFTTrainer` with the same model, data and hyperparameters, nothing else set), in
the same process, on a Llama-shaped model with random weights (no download). Every chat is longer than
the packed sequence length, so every packed row holds exactly `--seq-len` tokens and
tokens/step = micro batch x accumulation x seq-len.

MFU = achieved FLOPs / peak FLOPs, with training FLOPs per token = 6 N + 12 L d T (PaLM's estimate):
N the parameters without the input embedding, L layers, d the model width, T the sequence length; the
attention term counts the full (non-causal) T x T product as PaLM does. Peak: dense bf16 of the GPU
(H100/H200 SXM 989 TFLOP/s; `--peak-tflops` overrides).

DPO: posttrain's DPO trainer with and without precomputed reference log-probabilities; pairs/s of the
training steps, and end to end including the precomputation.

    python tests/bench/bench_train_gpu.py                 # on a GPU: a 1.1B model, seq 4096
    python tests/bench/bench_train_gpu.py --tiny          # CPU smoke run: tiny model, a few steps

Warm-up steps are excluded from the timing; checkpoints are outside the timed window
(`checkpointSteps` above the step count), so the ratio measures per-step overhead only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "trainer")]


class Shape(TypedDict):
    """The widths and depth of a Llama-shaped model (`LlamaConfig` arguments)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


SIZES: dict[str, Shape] = {
    # Llama-3.2-1B-like (1.1B with a 32k vocabulary), Llama-3.2-3B-like, Llama-3-8B-like.
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
    },
    "3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
    },
    "8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 peak per GPU model (SXM)."""


def flops_per_token(model: Any, seq_len: int) -> float:
    """6 N + 12 L d T, N without the input embedding."""
    config = model.config
    total: int = sum(p.numel() for p in model.parameters())
    embedding: int = model.get_input_embeddings().weight.numel()
    layers: int = config.num_hidden_layers
    width: int = config.hidden_size
    # A tied lm_head shares the embedding's weights but is still a matmul on every token.
    non_embedding = total - embedding + (embedding if config.tie_word_embeddings else 0)
    return 6 * non_embedding + 12 * layers * width * seq_len


def peak_flops(override: float | None) -> float | None:
    """Peak FLOP/s of the GPU, or None where unknown (CPU)."""
    import torch

    if override:
        return override * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def make_model(size: str, vocab_size: int, seed: int, dtype: Any, attention: str) -> Any:
    """A Llama-shaped model with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = SIZES[size]
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        num_key_value_heads=max(1, shape["num_attention_heads"] // 4),
        max_position_embeddings=8192,
        tie_word_embeddings=size == "tiny",
        # Taken by the config's untyped **kwargs at run time (the typed signature lists the fields only).
        attn_implementation=attention,  # type: ignore[call-arg]
        **shape,
    )
    return LlamaForCausalLM(config).to(dtype)


def make_chats(count: int, words: int, seed: int) -> list[dict[str, Any]]:
    """Chats with a short question and an answer longer than the packed sequence."""
    from posttrain_trainer.common.tiny import CORPUS

    vocabulary = CORPUS.split()
    rng = random.Random(seed)
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(rng.choices(vocabulary, k=12))},
                {"role": "assistant", "content": " ".join(rng.choices(vocabulary, k=words))},
            ]
        }
        for _ in range(count)
    ]


def make_pairs(count: int, words: int, seed: int) -> list[dict[str, Any]]:
    """Preference pairs with answers of about `words` words."""
    from posttrain_trainer.common.tiny import CORPUS

    vocabulary = CORPUS.split()
    rng = random.Random(seed)
    return [
        {
            "prompt": [{"role": "user", "content": " ".join(rng.choices(vocabulary, k=12))}],
            "chosen": " ".join(rng.choices(vocabulary, k=words)),
            "rejected": " ".join(rng.choices(vocabulary, k=words)),
        }
        for _ in range(count)
    ]


class StepTimer:
    """A TrainerCallback timing the steps after the warm-up (GPU work synchronized)."""

    def __init__(self, warmup: int) -> None:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step == warmup and not timer.start:
                    timer.start = timer.now()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.end = timer.now()
                timer.steps = state.global_step - warmup

        self.callback = Callback()
        self.start = self.end = 0.0
        self.steps = 0

    @staticmethod
    def now() -> float:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start


def stage_spec(args: argparse.Namespace, method: str, precompute: bool = False) -> Any:
    """The TrainStage spec both runs are configured from."""
    from posttrain.api.train import TrainStageSpec

    train = {
        "maxSteps": args.steps + args.warmup,
        "learningRate": 1e-5,
        "lrScheduler": "constant",
        "warmupRatio": 0.0,
        "batchSize": args.micro_batch * args.accumulation,
        "microBatchSize": args.micro_batch,
        "maxLength": args.seq_len,
        "packing": True,
        "gradientCheckpointing": args.gradient_checkpointing,
        "checkpointSteps": 10**6,
        "attention": args.attention,
        "evaluation": {"maxSamples": 0},
        "dpo": {"beta": 0.1, "precomputeRefLogProbs": precompute},
    }
    data = {"uri": "file:///unused"}
    extra = {"dataset": data} if method == "sft" else {"preferences": data}
    return TrainStageSpec.model_validate(
        {"method": method, "model": {"uri": "file:///unused"}, "train": train, **extra}
    )


def free() -> None:
    """Release the last run's memory and start counting the next run's peak."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    """Peak GPU memory of the run so far."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def bench_sft(args: argparse.Namespace, tokenizer: Any, hardware: Any, workdir: Path) -> dict[str, Any]:
    """Tokens/s and MFU of posttrain's SFT and of plain TRL, alternating to share thermal state."""
    from posttrain_trainer.common.report import Reporter
    from posttrain_trainer.common.storage import Workspace
    from posttrain_trainer.train import common, sft
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    spec = stage_spec(args, "sft")
    precision = common.resolve_precision("auto", hardware)
    dtype = common.torch_dtype(precision, frozen_base=False)
    dist = common.DistributedEnv()
    chats = make_chats(args.micro_batch * args.accumulation * (args.steps + args.warmup) * 2, args.seq_len, 0)
    attention = common.resolve_attention(args.attention, hardware)
    results: dict[str, Any] = {}
    # Alternate the two, `--repeats` times, and keep each one's best run: the first runs of a process
    # pay one-time costs (allocator growth, kernel selection) that are not the trainers' own.
    for name in ("plain TRL", "posttrain") * args.repeats:
        model = make_model(args.size, args.vocab, 0, dtype, attention)
        per_token = flops_per_token(model, args.seq_len)
        timer = StepTimer(args.warmup)
        if name == "posttrain":
            trainer = sft.build_trainer(
                spec,
                model,
                tokenizer,
                chats,
                sft.sft_config(spec, workdir / "ours", hardware, dist),
                [common.progress_callback(Reporter(Workspace(str(workdir / "ours"))))],
            )
        else:
            config = SFTConfig(
                output_dir=str(workdir / "plain"),
                max_steps=args.steps + args.warmup,
                learning_rate=1e-5,
                lr_scheduler_type="constant",
                per_device_train_batch_size=args.micro_batch,
                gradient_accumulation_steps=args.accumulation,
                bf16=precision == "bf16",
                gradient_checkpointing=args.gradient_checkpointing,
                max_length=args.seq_len,
                packing=True,
                assistant_only_loss=True,
                save_strategy="no",
                report_to="none",
                use_cpu=not hardware.cuda,
                use_liger_kernel=common.use_liger("auto", hardware),
            )
            trainer = SFTTrainer(
                model=model, args=config, train_dataset=_dataset(chats), processing_class=tokenizer
            )
        trainer.add_callback(timer.callback)
        trainer.train()
        tokens = timer.steps * args.micro_batch * args.accumulation * args.seq_len
        rate = tokens / timer.seconds
        if name in results and results[name]["tokens_per_s"] >= rate:
            del trainer, model
            free()
            continue
        results[name] = {
            "tokens_per_s": rate,
            "flops_per_token": per_token,
            "achieved_flops": rate * per_token,
            "peak_memory_gib": peak_memory_gib(),
        }
        del trainer, model
        free()
    return results


def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


def bench_dpo(args: argparse.Namespace, tokenizer: Any, hardware: Any, workdir: Path) -> dict[str, Any]:
    """Pairs/s of posttrain's DPO with and without precomputed reference log-probabilities."""
    from posttrain_trainer.train import common, dpo

    precision = common.resolve_precision("auto", hardware)
    dtype = common.torch_dtype(precision, frozen_base=False)
    inference_dtype = common.torch_dtype(precision, frozen_base=True)
    pairs = make_pairs(
        args.micro_batch * args.accumulation * (args.steps + args.warmup), args.seq_len // 4, 1
    )
    results: dict[str, Any] = {}
    for precompute in (False, True):
        attention = common.resolve_attention(args.attention, hardware)
        model = make_model(args.size, args.vocab, 0, dtype, attention)
        # The same weights in the reference's dtype, as `dpo.reference_model` loads them.
        reference = None if precompute else make_model(args.size, args.vocab, 0, inference_dtype, attention)
        spec = stage_spec(args, "dpo", precompute)
        timer = StepTimer(args.warmup)
        began = StepTimer.now()
        args_dpo = dpo.dpo_config(spec, workdir / f"dpo-{precompute}", hardware, common.DistributedEnv())
        trainer = dpo.build_trainer(spec, model, tokenizer, pairs, args_dpo, reference=reference)
        trainer.add_callback(timer.callback)
        trainer.train()
        total = StepTimer.now() - began
        count = timer.steps * args.micro_batch * args.accumulation
        results["precomputed" if precompute else "reference model"] = {
            "pairs_per_s": count / timer.seconds,
            "end_to_end_pairs_per_s": len(pairs) / total,
            "peak_memory_gib": peak_memory_gib(),
        }
        del trainer, model, reference
        free()
    return results


def memory(figures: dict[str, Any]) -> str:
    """`; peak N GiB` on a GPU."""
    peak = figures.get("peak_memory_gib")
    return f"; peak {peak:.1f} GiB" if peak is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke run: tiny model, short sequences, few steps"
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each SFT trainer")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--skip-dpo", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.tiny:
        args.size, args.vocab, args.seq_len, args.micro_batch, args.accumulation = "tiny", 512, 256, 4, 2

    import torch
    from posttrain_trainer.common.chat import VICUNA_TEMPLATE
    from posttrain_trainer.common.tiny import make_tokenizer
    from posttrain_trainer.train import common

    hardware = common.probe_hardware()
    tokenizer = make_tokenizer()
    tokenizer.chat_template = VICUNA_TEMPLATE
    device = torch.cuda.get_device_name() if hardware.cuda else "CPU"
    peak = peak_flops(args.peak_tflops)
    print(
        f"device: {device}; model: {args.size}; seq {args.seq_len}; micro batch {args.micro_batch} x "
        f"accumulation {args.accumulation}; attention {common.resolve_attention(args.attention, hardware)}; "
        f"precision {common.resolve_precision('auto', hardware)}; liger {common.use_liger('auto', hardware)}"
    )
    report: dict[str, Any] = {"device": device, "args": vars(args) | {"json": None}}
    free()
    with tempfile.TemporaryDirectory() as folder:
        sft = bench_sft(args, tokenizer, hardware, Path(folder))
        report["sft"] = sft
        baseline = sft["plain TRL"]["tokens_per_s"]
        for name, figures in sft.items():
            mfu = f"{figures['achieved_flops'] / peak:.1%}" if peak else "n/a (no known peak)"
            print(
                f"SFT {name:10s} {figures['tokens_per_s']:12.1f} tokens/s  MFU {mfu}  "
                f"ratio to plain TRL {figures['tokens_per_s'] / baseline:.3f}{memory(figures)}"
            )
            figures["mfu"] = figures["achieved_flops"] / peak if peak else None
        if not args.skip_dpo:
            dpo = bench_dpo(args, tokenizer, hardware, Path(folder))
            report["dpo"] = dpo
            reference = dpo["reference model"]["pairs_per_s"]
            for name, figures in dpo.items():
                print(
                    f"DPO {name:16s} {figures['pairs_per_s']:10.2f} pairs/s (training steps), "
                    f"{figures['end_to_end_pairs_per_s']:10.2f} pairs/s end to end; "
                    f"ratio to reference model {figures['pairs_per_s'] / reference:.3f}{memory(figures)}"
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
