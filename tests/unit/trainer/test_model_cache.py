"""The model-call cache and the budget, in the store and through the evol workload over HTTP.

Requests are counted at the (scripted) OpenAI-format server: a second identical run makes none, a run
with one more round pays only for what is new, two drivers pointing at one store share entries, a
corrupted entry is fetched again, and a token budget stops an EvolJob with its partial outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from posttrain.api.common import Budget
from posttrain.api.workload import ModelCacheConfig, WorkloadConfig
from posttrain_trainer.client import Journal
from posttrain_trainer.client.budget import BudgetTracker
from posttrain_trainer.client.cache import CachedReply, CallCache, cache_key
from posttrain_trainer.evol import run

from tests.support.evol_teacher import http_responder
from tests.support.fake_openai import FakeOpenAI
from tests.unit.trainer.test_evol_run import make_config, rows, write_seeds

MESSAGES = [{"role": "user", "content": "Name a prime."}]
OUTPUTS = ("dataset.jsonl", "evolved.jsonl", "eliminated.jsonl", "rankings.jsonl")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=http_responder) as running:
        yield running


def with_cache(
    config: WorkloadConfig, cache: Path, identity: str | None = None, **spec: Any
) -> WorkloadConfig:
    """The config with the model-call cache at `cache` (and the spec fields given)."""
    endpoints = {
        name: endpoint.model_copy(update={"identity": identity and f"{identity}-{name}"})
        for name, endpoint in config.endpoints.items()
    }
    return config.model_copy(
        update={
            "model_cache": ModelCacheConfig(uri=f"file://{cache}"),
            "endpoints": endpoints,
            "spec": {**config.spec, **spec},
        }
    )


def counted(server: FakeOpenAI, config: WorkloadConfig) -> tuple[int, dict[str, float]]:
    """(requests the server answered during the run, the run's metrics)."""
    before = server.requests
    result = run(config)
    return server.requests - before, result.metrics


# --- the store --------------------------------------------------------------------------------------


def test_the_key_names_the_model_the_request_and_the_sample_of_a_non_deterministic_request() -> None:
    greedy = {"temperature": 0.0, "max_tokens": 8}
    sampled = {"temperature": 0.7, "max_tokens": 8}
    assert cache_key("weights:a", MESSAGES, greedy, "one") == cache_key("weights:a", MESSAGES, greedy, "two")
    assert cache_key("weights:a", MESSAGES, sampled, "one") != cache_key(
        "weights:a", MESSAGES, sampled, "two"
    )
    seeded = {**sampled, "seed": 3}
    assert cache_key("weights:a", MESSAGES, seeded, "one") == cache_key("weights:a", MESSAGES, seeded, "two")
    assert cache_key("weights:a", MESSAGES, greedy, "x") != cache_key("weights:b", MESSAGES, greedy, "x")
    assert cache_key("weights:a", MESSAGES, greedy, "x") != cache_key("weights:a", MESSAGES, sampled, "x")


def test_an_entry_round_trips_and_a_corrupted_one_is_removed_and_counted(tmp_path: Path) -> None:
    cache = CallCache(f"file://{tmp_path}/cache")
    reply = CachedReply("7", prompt_tokens=5, completion_tokens=1, finish_reason="stop")
    cache.put("k1", "weights:a", reply)
    cache.put("k2", "weights:a", reply)
    assert cache.get("k1") == reply and cache.get("missing") is None
    Path(cache.path("k1")).write_text('{"key": "k1", "model"')  # torn
    tampered = json.loads(Path(cache.path("k2")).read_text())
    tampered["reply"]["text"] = "8"  # the digest no longer matches
    Path(cache.path("k2")).write_text(json.dumps(tampered))
    assert cache.get("k1") is None and cache.get("k2") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.corrupt) == (1, 3, 2)
    assert not Path(cache.path("k1")).exists() and not Path(cache.path("k2")).exists()


def test_eviction_removes_the_least_recently_used_entries_beyond_the_size_limit(tmp_path: Path) -> None:
    unlimited = CallCache(f"file://{tmp_path}/cache")
    for index, key in enumerate(("old", "middle", "new")):
        unlimited.put(key, "m", CachedReply("x" * 100))
        os.utime(unlimited.path(key), (1000.0 + index, 1000.0 + index))
    one_entry = max(size for _, size, _ in unlimited.entries())
    assert unlimited.evict() == 0
    cache = CallCache(f"file://{tmp_path}/cache", max_bytes=2 * one_entry)
    assert cache.get("old") is not None  # a use: "middle" is now the least recently used
    assert cache.evict() == 1 and cache.stats.evicted == 1
    assert {Path(path).stem for path, _, _ in cache.entries()} == {"old", "new"}
    assert cache.size() <= 2 * one_entry


# --- through the evol workload ----------------------------------------------------------------------


def test_a_second_identical_run_makes_no_model_calls(tmp_path: Path, server: FakeOpenAI) -> None:
    dataset = write_seeds(tmp_path / "seeds.jsonl")
    cache = tmp_path / "cache"
    first = with_cache(make_config(tmp_path / "first", dataset, server.base_url), cache)
    paid, metrics = counted(server, first)
    assert paid == metrics["requests.sent"] == metrics["cache.misses"] > 0
    assert metrics["cache.hits"] == 0

    # Another resource (another output folder) asking the same: every reply comes from the cache.
    second = with_cache(make_config(tmp_path / "second", dataset, server.base_url), cache)
    again, replayed = counted(server, second)
    assert again == 0
    assert replayed["requests.sent"] == 0 and replayed["cache.hits"] == paid
    assert replayed["cache.misses"] == 0
    for name in OUTPUTS:
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "first" / name).read_bytes()
    # The cache's replies were journaled: the second run resumes from its own journal as before.
    with Journal(tmp_path / "second" / "journal.jsonl") as journal:
        assert len(journal) == paid and all(r["source"] == "cache" for r in journal.records())


def test_a_changed_later_step_replays_the_earlier_calls_and_pays_only_for_the_new_ones(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    dataset = write_seeds(tmp_path / "seeds.jsonl")
    cache = tmp_path / "cache"
    counted(server, with_cache(make_config(tmp_path / "two", dataset, server.base_url, rounds=2), cache))
    # One more round, and the answers rewritten twice instead of once.
    changed = {"rounds": 3, "answer": {"passes": 2}}
    paid, metrics = counted(
        server, with_cache(make_config(tmp_path / "three", dataset, server.base_url, **changed), cache)
    )
    # The same resource without a cache, for reference.
    fresh, reference = counted(server, make_config(tmp_path / "fresh", dataset, server.base_url, **changed))
    assert metrics["cache.hits"] > 0
    assert (
        paid
        == metrics["requests.sent"]
        == fresh - metrics["cache.hits"]
        == reference["requests.sent"] - metrics["cache.hits"]
    )
    for name in OUTPUTS:
        assert (tmp_path / "three" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_two_drivers_pointing_at_one_store_share_entries_by_model_identity(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    # The local runner reaches a served model on a local port, the cluster through a Service: the
    # addresses differ, the identity (the weights' digest) is the same.
    dataset = write_seeds(tmp_path / "seeds.jsonl")
    cache = tmp_path / "store" / "model-calls" / "default"
    paid, _ = counted(
        server,
        with_cache(make_config(tmp_path / "local", dataset, server.base_url), cache, "weights:sha256:1"),
    )
    with FakeOpenAI(responder=http_responder) as cluster_server:
        in_cluster = with_cache(
            make_config(tmp_path / "cluster", dataset, cluster_server.base_url), cache, "weights:sha256:1"
        )
        assert in_cluster.endpoints["teacher"].base_url != server.base_url
        result = run(in_cluster)
        assert cluster_server.requests == 0 and result.metrics["cache.hits"] == paid
        # Other weights are another model: nothing is shared.
        retrained = with_cache(
            make_config(tmp_path / "other", dataset, cluster_server.base_url), cache, "weights:sha256:2"
        )
        run(retrained)
        assert cluster_server.requests == paid


def test_a_corrupted_entry_is_fetched_again_and_rewritten(tmp_path: Path, server: FakeOpenAI) -> None:
    dataset = write_seeds(tmp_path / "seeds.jsonl")
    cache_dir = tmp_path / "cache"
    counted(server, with_cache(make_config(tmp_path / "first", dataset, server.base_url), cache_dir))
    cache = CallCache(f"file://{cache_dir}")
    torn, tampered = sorted(path for path, _, _ in cache.entries())[:2]
    Path(torn).write_bytes(Path(torn).read_bytes()[:20])
    entry = json.loads(Path(tampered).read_text())
    entry["reply"]["text"] += " (edited)"
    Path(tampered).write_text(json.dumps(entry))

    paid, metrics = counted(
        server, with_cache(make_config(tmp_path / "second", dataset, server.base_url), cache_dir)
    )
    assert paid == 2 == metrics["cache.corrupt"] == metrics["requests.sent"]
    for name in OUTPUTS:
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "first" / name).read_bytes()
    for path in (torn, tampered):
        key = Path(path).stem
        assert CallCache(f"file://{cache_dir}").get(key) is not None, "the entry was rewritten whole"


# --- budgets ----------------------------------------------------------------------------------------


def test_a_token_budget_stops_an_evol_job_with_its_partial_outputs(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    dataset = write_seeds(tmp_path / "seeds.jsonl")
    whole = run(make_config(tmp_path / "whole", dataset, server.base_url)).metrics
    # The fake server counts 8 prompt + 4 completion tokens per reply.
    limit = 120
    budget = {"budget": {"tokens": {"teacher": limit}}}
    config = make_config(tmp_path / "partial", dataset, server.base_url, concurrency=2)
    config = config.model_copy(update={"spec": {**config.spec, **budget}})
    result = run(config)
    metrics = result.metrics
    assert result.budget_exhausted is not None and result.budget_exhausted.startswith("tokens of teacher:")
    assert metrics["budget.exhausted"] == 1 and metrics["requests.overBudget"] > 0
    spent = metrics["tokens.prompt.teacher"] + metrics["tokens.completion.teacher"]
    assert limit <= spent <= limit + 2 * 12  # at most one request per slot of concurrency beyond it
    # The judge had no limit and went on answering what it was asked.
    assert metrics["requests.sent.judge"] > 0
    # Partial outputs, written as usual: every seed, fewer evolutions kept, the rest not attempted.
    out = tmp_path / "partial"
    assert set(result.outputs) == {"dataset", "evolved", "eliminated", "rankings"}
    assert metrics["kept"] < whole["kept"] and metrics["failed"] > 0
    assert len(rows(out / "dataset.jsonl")) == metrics["rows.out"] == metrics["seeds"] + metrics["kept"]
    assert json.loads((out / "result.json").read_text())["budgetExhausted"] == result.budget_exhausted

    # Started again on the same run, the tokens its journal paid for count: nothing more is sent.
    before = server.requests
    again = run(config)
    teacher_sent = again.metrics["requests.sent.teacher"]
    assert teacher_sent == 0 and again.budget_exhausted is not None
    assert server.requests - before == again.metrics["requests.sent"]


def test_the_budget_tracker_counts_wall_time_gpu_hours_and_a_default_token_limit() -> None:
    now = [1000.0]
    budget = Budget(tokens={"*": 100, "judge": 10}, wall_seconds=3600, gpu_hours=1.5)
    tracker = BudgetTracker(budget, "1970-01-01T00:16:40Z", gpus=2, clock=lambda: now[0])
    assert tracker.exhausted("teacher") is None
    tracker.charge("judge", 10)
    assert tracker.exhausted("judge") == "tokens of judge: 10 of 10"
    assert tracker.exhausted("teacher") is None
    now[0] += 45 * 60  # 2 GPUs x 0.75 h
    assert tracker.exhausted("teacher") == "GPU-hours: 1.500 of 1.5"
    assert tracker.reached == "tokens of judge: 10 of 10"  # the first limit reached is the one reported
    metrics = tracker.metrics()
    assert metrics["usage.gpuHours"] == 1.5 and metrics["usage.wallSeconds"] == 2700
    assert metrics["budget.exhausted"] == 1
    unlimited = BudgetTracker(None, clock=lambda: now[0])
    unlimited.charge("teacher", 10**9)
    assert unlimited.exhausted("teacher") is None and unlimited.metrics()["budget.exhausted"] == 0
    requests = BudgetTracker(Budget(requests=1), clock=lambda: now[0])
    requests.charge("teacher", 1)
    assert requests.exhausted("judge") == "requests: 1 of 1"


def test_an_object_store_cache_keeps_whole_entries_and_evicts_the_oldest_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fsspec
    from posttrain_trainer.client import cache as module

    store = fsspec.filesystem("memory", skip_instance_cache=True)
    store.store.clear()
    monkeypatch.setattr(module, "filesystem", lambda uri: store)
    cache = CallCache("s3://bucket/model-calls/team")
    assert cache.remote
    cache.put("first", "endpoint:m", CachedReply("a"))
    cache.put("second", "endpoint:m", CachedReply("b"))
    assert cache.get("first") == CachedReply("a") and cache.get("none") is None
    store.pipe_file(cache.path("second"), b"not json")
    assert cache.get("second") is None and cache.stats.corrupt == 1
    assert not store.exists(cache.path("second"))
    cache.put("third", "endpoint:m", CachedReply("c"))
    # An object store keeps the write time: the first written goes first, hits or not.
    for key, written in (("first", 100.0), ("third", 200.0)):
        store.store[store._strip_protocol(cache.path(key))].created = datetime.fromtimestamp(written, UTC)
    one_entry = max(size for _, size, _ in cache.entries())
    assert CallCache("s3://bucket/model-calls/team", max_bytes=one_entry).evict() == 1
    assert [Path(path).stem for path, _, _ in cache.entries()] == ["third"]
