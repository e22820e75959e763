"""AlignRound: what the position swap and the Bradley–Terry fit buy, and what the round costs.

    python tests/bench/bench_align.py [--battles 4000] [--seed 0] [--instructions 200]

Three comparisons, each against a named baseline in the same run:

1. Judging under position bias (simulation). Answers have a true quality; a simulated judge scores
   quality + noise and adds a bonus to whichever answer it sees first. Baseline: one order per
   battle (what a judge without the swap gives). Contenders: both orders resolved by `resolve_swap`
   with the `tie` and `average` rules. Reported: the share of battles whose winner is wrong, and the
   share of SFT targets (loss by more than K=1) that are not real losses.
2. Ratings from battles (simulation). Participants have true Elo ratings; battles follow the
   Bradley–Terry model. Baseline: online Elo (K=4 and K=32, the update used by chess and early
   arenas, sensitive to battle order). Contender: `elo_table`'s Bradley–Terry fit. Reported: mean
   absolute error of the ratings against the truth (all anchored at the same reference).
3. Throughput of a whole round against a fast fake OpenAI server (tests/support/fake_openai.py, in a
   thread) that answers every request instantly with a scripted reply (each participant its own
   answer, a judge that prefers the teachers, a position-biased ranker). Baseline: the same number of bare `Teachers.chat` calls at the
   same concurrency. Contender: `AlignRound` with its journal. Reported: requests/s and the ratio, and
   the time to replay the finished round from its journal (what a resume costs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from posttrain.api.align import AlignRoundSpec
from posttrain.api.workload import Endpoint
from posttrain_trainer.align.elo import elo_table
from posttrain_trainer.align.judge import InconsistencyRule, resolve_swap
from posttrain_trainer.align.prompts import Verdict
from posttrain_trainer.align.workflow import AlignRound, Instruction
from posttrain_trainer.client import Journal, Teachers
from posttrain_trainer.evol.caller import Caller

from tests.support.fake_openai import FakeOpenAI


def clip(score: float) -> float:
    return float(min(10, max(1, round(score))))


def judging(battles: int, seed: int) -> None:
    rng = random.Random(seed)
    print(f"\n1. judging under position bias ({battles} battles, noise sd 1.5, first-position bonus 1.5)")
    names = ("one order (baseline)", "swap, tie rule", "swap, average rule")
    wrong = dict.fromkeys(names, 0)
    ties = dict.fromkeys(names, 0)
    false_sft = dict.fromkeys(names, 0)
    sft = dict.fromkeys(names, 0)
    for _ in range(battles):
        quality_x, quality_y = rng.uniform(2, 9), rng.uniform(2, 9)
        truth = 1.0 if quality_x > quality_y else 0.0

        def score(quality: float, first: bool) -> float:
            return clip(quality + rng.gauss(0, 1.5) + (1.5 if first else 0.0))

        forward = Verdict(score(quality_x, True), score(quality_y, False), "")
        backward = Verdict(score(quality_y, True), score(quality_x, False), "")
        single = forward.score_a - forward.score_b
        outcomes = {names[0]: (1.0 if single > 0 else 0.0 if single < 0 else 0.5, single)}
        rules: tuple[tuple[InconsistencyRule, str], ...] = (("tie", names[1]), ("average", names[2]))
        for rule, name in rules:
            r = resolve_swap(forward, backward, rule)
            outcomes[name] = (r.outcome if r.outcome is not None else 0.5, r.gap)
        for name, (outcome, gap) in outcomes.items():
            ties[name] += outcome == 0.5
            wrong[name] += outcome == 1.0 - truth
            # X plays the student: an SFT target when it loses by more than K=1.
            if gap < -1:
                sft[name] += 1
                false_sft[name] += truth == 1.0
    base = wrong[names[0]]
    print(
        f"   {'':22} {'wrong winner':>12} {'vs baseline':>11} {'tie':>6} {'SFT targets':>11}"
        f" {'not real losses':>15}"
    )
    for name in names:
        print(
            f"   {name:22} {wrong[name] / battles:12.1%} {wrong[name] / base:11.2f} {ties[name] / battles:6.1%}"
            f" {sft[name]:11d} {false_sft[name] / max(1, sft[name]):15.1%}"
        )


def online_elo(
    games: list[tuple[str, str, float]], players: list[str], k: float, reference: str
) -> dict[str, float]:
    rating = dict.fromkeys(players, 1000.0)
    for x, y, outcome in games:
        expected = 1 / (1 + 10 ** ((rating[y] - rating[x]) / 400))
        rating[x] += k * (outcome - expected)
        rating[y] -= k * (outcome - expected)
    shift = 1100.0 - rating[reference]
    return {name: value + shift for name, value in rating.items()}


def ratings(battles: int, seed: int, replicates: int = 20) -> None:
    truth = {
        "student": 950.0,
        "teacher-a": 1100.0,
        "teacher-b": 1180.0,
        "teacher-c": 1040.0,
        "teacher-d": 1250.0,
    }
    players = list(truth)
    print(
        f"\n2. ratings from {battles} Bradley–Terry battles of 5 participants, {replicates} replicates"
        " (reference teacher-a = 1100)"
    )

    def error(estimate: dict[str, float]) -> float:
        return sum(abs(estimate[n] - truth[n]) for n in players if n != "teacher-a") / (len(players) - 1)

    def student_lost(game: tuple[str, str, float]) -> bool:
        x, y, outcome = game
        return (x == "student" and outcome == 0.0) or (y == "student" and outcome == 1.0)

    def bradley_terry(games: list[tuple[str, str, float]]) -> dict[str, float]:
        return {r.name: r.rating for r in elo_table(games, players, "teacher-a", bootstrap=0).ratings}

    contenders = {
        "online Elo K=4 (baseline)": lambda games: online_elo(games, players, 4, "teacher-a"),
        "online Elo K=32": lambda games: online_elo(games, players, 32, "teacher-a"),
        "Bradley–Terry fit": bradley_terry,
    }
    errors = {name: [0.0, 0.0] for name in contenders}
    covered = total = 0
    seconds = 0.0
    for replicate in range(replicates):
        rng = random.Random(seed * 1000 + replicate)
        games = []
        for _ in range(battles):
            x, y = rng.sample(players, 2)
            p = 1 / (1 + 10 ** ((truth[y] - truth[x]) / 400))
            games.append((x, y, 1.0 if rng.random() < p else 0.0))
        # The same outcomes with the student's losses first: online Elo depends on the order
        # (as when a student improves during an arena); the Bradley–Terry fit does not.
        ordered = sorted(games, key=lambda g: not student_lost(g))
        for name, fit in contenders.items():
            errors[name][0] += error(fit(games)) / replicates
            errors[name][1] += error(fit(ordered)) / replicates
        start = time.perf_counter()
        table = elo_table(games, players, reference="teacher-a", bootstrap=100, seed=replicate)
        seconds += time.perf_counter() - start
        covered += sum(r.ci_low <= truth[r.name] <= r.ci_high for r in table.ratings if r.name != "teacher-a")
        total += len(players) - 1
    base = errors["online Elo K=4 (baseline)"][0]
    print(f"   {'':26} {'MAE random order':>16} {'vs baseline':>11} {'MAE sorted order':>16}")
    for name, (shuffled, sorted_) in errors.items():
        print(f"   {name:26} {shuffled:16.1f} {shuffled / base:11.2f} {sorted_:16.1f}")
    print(
        f"   BT with 100 bootstrap samples: {seconds / replicates:.2f}s per table;"
        f" 95% intervals cover the truth in {covered / total:.0%} of {total}"
    )


def scripted(request: dict[str, Any]) -> str:
    """Replies of the fake participants: each model its own answer, a judge that prefers teachers."""
    model = request["model"]
    text = request["messages"][-1]["content"]
    if model == "judge":
        if "[Answer of Assistant A]" in text:
            first_is_teacher = "[Answer of Assistant A]\nteacher" in text
            return "Explanation: one is better.\nScores: " + ("A=8, B=3" if first_is_teacher else "A=3, B=8")
        return "Ranking: [1] > [2] > [3] > [4]"
    return f"{model} answer {request.get('seed', '')}: one line.\nAnother line."


async def bare(base_url: str, requests: int, concurrency: int) -> float:
    endpoints = {"fake": Endpoint(base_url=base_url, model="teacher-a")}
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    async with Teachers(endpoints, concurrency=concurrency) as teachers:
        start = time.perf_counter()
        await asyncio.gather(*(teachers.chat("fake", messages, temperature=0.0) for _ in range(requests)))
        return time.perf_counter() - start


async def round_run(
    base_url: str, journal_path: Path, instructions: int, concurrency: int
) -> tuple[float, Caller]:
    def participant(name: str) -> dict[str, object]:
        return {"name": name, "endpoint": {"baseUrl": base_url, "model": "fake"}}

    spec = AlignRoundSpec.model_validate(
        {
            "datasets": [{"uri": "file:///unused"}],
            "student": participant("student"),
            "teachers": [participant("teacher-a"), participant("teacher-b")],
            "judges": [participant("judge")],
            "align": {"coTeaching": {"turns": 2}, "selfTeaching": {"enabled": True, "candidates": 4}},
        }
    )
    endpoints = {
        n: Endpoint(base_url=base_url, model=n) for n in ("student", "teacher-a", "teacher-b", "judge")
    }
    items = [
        Instruction(
            key=f"d1/{i}",
            source=str(i),
            dataset=0,
            category="general",
            prompt=[{"role": "user", "content": f"Question number {i}?"}],
        )
        for i in range(instructions)
    ]
    journal = Journal(journal_path)
    async with Teachers(endpoints, concurrency=concurrency) as teachers:
        caller = Caller(teachers, journal)
        start = time.perf_counter()
        await AlignRound(spec, caller).run(items[: instructions * 3 // 4], items[instructions * 3 // 4 :])
        seconds = time.perf_counter() - start
    journal.close()
    return seconds, caller


def throughput(instructions: int, concurrency: int) -> None:
    print(
        f"\n3. a round of {instructions} instructions (2 turns, 2 teachers, 1 judge, self-teaching 4) at concurrency {concurrency}"
    )
    with FakeOpenAI(responder=scripted) as server, tempfile.TemporaryDirectory() as folder:
        base_url = server.base_url
        journal = Path(folder) / "journal.jsonl"
        seconds, caller = asyncio.run(round_run(base_url, journal, instructions, concurrency))
        requests = caller.sent
        baseline = asyncio.run(bare(base_url, requests, concurrency))
        replay, again = asyncio.run(round_run(base_url, journal, instructions, concurrency))
        assert again.sent == 0 and again.replayed == requests
    print(f"   {'':32} {'requests':>8} {'seconds':>8} {'req/s':>8} {'ratio':>6}")
    print(
        f"   {'bare Teachers.chat (baseline)':32} {requests:8d} {baseline:8.2f} {requests / baseline:8.0f} {1.0:6.2f}"
    )
    print(
        f"   {'AlignRound with journal':32} {requests:8d} {seconds:8.2f} {requests / seconds:8.0f} {baseline / seconds:6.2f}"
    )
    print(f"   {'resume from a full journal':32} {0:8d} {replay:8.2f} {'':>8} {baseline / replay:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=4000)
    parser.add_argument("--instructions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, seed {args.seed}")
    judging(args.battles, args.seed)
    ratings(args.battles // 2, args.seed)
    throughput(args.instructions, args.concurrency)


if __name__ == "__main__":
    main()
