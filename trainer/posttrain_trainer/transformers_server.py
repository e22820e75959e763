"""`transformers serve` whose sampling follows each request's temperature, as the OpenAI protocol says.

`transformers serve` copies a request's `temperature` into the model's generation config but samples only
when that config's own `do_sample` is on, which a saved model leaves off: a request at temperature 0.7
was answered greedily, so every sample of a prompt came back the same (self-teaching candidates and the
step-label solutions sampled with distinct seeds: all duplicates, dropped). Here a temperature above 0
turns sampling on; 0 stays greedy (the server's own rule), and the request's `seed` is still applied.

Run as `python -c "from posttrain_trainer.transformers_server import main; main()" serve MODEL ...`
(`serving.command`).
"""

from __future__ import annotations

from typing import Any


def sampling_follows_temperature(config: Any, body: dict[str, Any]) -> Any:
    """`config` with sampling on when the request asks for a temperature above 0."""
    temperature = body.get("temperature")
    if temperature is not None and float(temperature) > 0.0:
        config.do_sample = True
    return config


def main() -> None:
    """Run the transformers command line with the sampling fix in place."""
    from transformers.cli.serving.utils import BaseHandler
    from transformers.cli.transformers import main as transformers_main

    build = BaseHandler._build_generation_config

    def build_sampling(
        self: Any, body: dict[str, Any], model_generation_config: Any, use_cb: bool = False
    ) -> Any:
        return sampling_follows_temperature(build(self, body, model_generation_config, use_cb=use_cb), body)

    BaseHandler._build_generation_config = build_sampling  # type: ignore[method-assign]
    transformers_main()
