"""The local `transformers serve` samples when a request asks for a temperature above 0, by its seed.

Self-teaching candidates and the step-label solutions ask the served student for several samples at a
temperature with distinct seeds, several requests at once; a server that answers greedily makes them
all the same, and one that seeds a shared generator before the queued generation runs makes a rerun
give other samples.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from posttrain_trainer.serving import Server
from posttrain_trainer.transformers_server import sampling_follows_temperature

from tests.support.fixtures import served_teacher

__all__ = ["served_teacher"]  # the fixture, imported so pytest finds it


class Config:
    do_sample = False


def test_a_temperature_above_zero_turns_sampling_on() -> None:
    assert sampling_follows_temperature(Config(), {"temperature": 0.7}).do_sample is True
    assert sampling_follows_temperature(Config(), {"temperature": 0}).do_sample is False
    assert sampling_follows_temperature(Config(), {}).do_sample is False


def ask(server: Server, temperature: float, seed: int) -> str:
    reply = httpx.post(
        f"{server.base_url}/chat/completions",
        json={
            "model": server.model,
            "messages": [{"role": "user", "content": "What is 2 plus 3?"}],
            "temperature": temperature,
            "seed": seed,
            "max_tokens": 16,
        },
        timeout=120,
    )
    reply.raise_for_status()
    return str(reply.json()["choices"][0]["message"]["content"])


def test_samples_at_a_temperature_differ_and_greedy_answers_do_not(served_teacher: Server) -> None:
    sampled = {ask(served_teacher, 1.0, seed) for seed in range(4)}
    assert len(sampled) > 1  # a random tiny model spreads its probability: four seeds, not one answer
    assert ask(served_teacher, 1.0, 7) == ask(served_teacher, 1.0, 7)  # the seed makes a sample repeatable
    assert len({ask(served_teacher, 0.0, seed) for seed in range(3)}) == 1


def test_concurrent_seeded_samples_are_the_same_in_a_rerun(served_teacher: Server) -> None:
    def batch() -> list[str]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda seed: ask(served_teacher, 1.0, seed), range(8)))

    first, second = batch(), batch()
    assert len(set(first)) > 1
    assert first == second  # each answer follows its own request's seed, whatever ran beside it
