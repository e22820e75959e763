"""`transformers serve` whose sampling follows each request's temperature and seed, as the OpenAI protocol says.

Two fixes to the server, for the samples the AlignRound asks the served student for (self-teaching
candidates, step-label solutions: several per prompt at a temperature, with distinct seeds):

- `transformers serve` copies a request's `temperature` into the model's generation config but samples
  only when that config's own `do_sample` is on, which a saved model leaves off: every sample of a prompt
  came back the same (all duplicates, dropped). A temperature above 0 turns sampling on here; 0 stays
  greedy (the server's own rule).
- It seeds torch's global generator when it reads a request, while generation runs later, one request
  at a time, on its inference thread: with requests queued, a sample drew from another request's seed
  and a rerun of the same requests gave other samples. The seed is applied here on the inference
  thread, just before that request's generation (non-streaming requests, the ones posttrain sends).

Run as `python -c "from posttrain_trainer.transformers_server import main; main()" serve MODEL ...`
(`serving.server_command`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SEED_ATTRIBUTE = "posttrain_seed"
"""Where a request's seed rides on its generation config to the inference thread."""


def sampling_follows_temperature(config: Any, body: dict[str, Any]) -> Any:
    """`config` with sampling on when the request asks for a temperature above 0."""
    temperature = body.get("temperature")
    if temperature is not None and float(temperature) > 0.0:
        config.do_sample = True
    return config


def seeded(fn: Callable[..., Any], seed: int) -> Callable[..., Any]:
    """`fn`, seeding torch's generators first (on the thread that calls it)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        torch.manual_seed(seed)
        return fn(*args, **kwargs)

    return run


def main() -> None:
    """Run the transformers command line with the two fixes in place."""
    from transformers.cli.serving.utils import BaseHandler, GenerateManager
    from transformers.cli.transformers import main as transformers_main

    build = BaseHandler._build_generation_config
    submit = GenerateManager.async_submit

    def build_sampling(
        self: Any, body: dict[str, Any], model_generation_config: Any, use_cb: bool = False
    ) -> Any:
        unseeded = {key: value for key, value in body.items() if key != "seed"}
        config = sampling_follows_temperature(
            build(self, unseeded, model_generation_config, use_cb=use_cb), body
        )
        if body.get("seed") is not None:
            setattr(config, SEED_ATTRIBUTE, int(body["seed"]))
        return config

    def submit_seeded(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seed = getattr(kwargs.get("generation_config"), SEED_ATTRIBUTE, None)
        return submit(self, fn if seed is None else seeded(fn, seed), *args, **kwargs)

    BaseHandler._build_generation_config = build_sampling  # type: ignore[method-assign]
    GenerateManager.async_submit = submit_seeded  # type: ignore[method-assign]
    transformers_main()
