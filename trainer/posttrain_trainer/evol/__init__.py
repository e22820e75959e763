"""The evol workload (`posttrain-trainer evol --config FILE`): the Evol Lab of one EvolJob.

Evol-Instruct (in-depth and in-breadth operations over M rounds), elimination of failed evolutions,
Evol-Answer, Auto Evol-Instruct, IRM ranking data and difficulty ratings, with teachers reached over
OpenAI-compatible endpoints (`client.Teachers`). How each step works is documented in its module:
`evolve` (rounds, lineage, routing, outputs), `elimination`, `answer`, `auto`, `prompts`, `caller`
(the journal and resume).

Inputs (`WorkloadConfig`): the EvolJob spec with `dataset.uri` resolved; `endpoints` for every
teacher (API keys from the environment variables they name).

Outputs (in `config.output_uri`):
- `dataset` (`dataset.jsonl`, chat rows): the seeds and every kept evolution with its answer;
  `meta.lineage` = `{seed, round, operation, teacher, parent}` (round 0 for seeds);
- `evolved` (`evolved.jsonl`): every evolution attempt, with its `verdict` (`kept`, `eliminated`,
  `failed`) and `rule`;
- `eliminated` (`eliminated.jsonl`): the eliminated attempts with the rule that failed them;
- `rankings` (`rankings.jsonl`, IRM rows `{"id", "instructions": [best..worst], "meta"}`) when
  `evol.rankings.enabled`;
- `method` (`method.json`: the chosen evolving method and the optimisation trajectory) when
  `evol.auto.enabled`;
- `result.json` with the metrics of `posttrain.api.metrics.Evol` (`kept`, `eliminated.<rule>`,
  `yield`, `rows.out`, `requests.sent`, `cache.hits`, ...) and, when the run stopped at
  `spec.budget`, `budgetExhausted` (the outputs above are then partial); `progress.json` while
  running; `journal.jsonl`, the checkpoint a restarted run resumes from. Replies also go to the
  namespace's model-call cache (`WorkloadConfig.model_cache`), which other runs replay.

References: Xu et al., 2023 (WizardLM: Evol-Instruct); Zeng et al., 2024 (Automatic Instruction
Evolving); the WizardLM-2 announcement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from posttrain.api.evol import EvolJobSpec
from posttrain.api.lineage import origin
from posttrain.api.metrics import Evol
from posttrain.api.workload import Result, ResultOutput, WorkloadConfig

from posttrain_trainer.client import Journal, Teachers
from posttrain_trainer.common.chat import RowError, normalize
from posttrain_trainer.common.report import Reporter, output
from posttrain_trainer.common.storage import Workspace, read_lines, write_jsonl
from posttrain_trainer.evol.auto import AutoEvolver, Optimised
from posttrain_trainer.evol.caller import Caller, run_caller
from posttrain_trainer.evol.evolve import EvolOutcome, EvolRun, Router, Seed

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
"""The reply journal in the output folder; a run started again with the same folder resumes from it."""


def read_seeds(uri: str, fmt: str, limit: int | None) -> tuple[list[Seed], int]:
    """The seed instructions of a dataset and the number of rows set aside as malformed.

    Rows are normalised to the chat schema; a repeated id gets a `~N` suffix so every record's id
    (and journal key) stays unique.
    """
    seeds: list[Seed] = []
    malformed = 0
    ids: dict[str, int] = {}
    for number, item in read_lines(uri):
        if limit is not None and len(seeds) >= limit:
            break
        try:
            row = normalize(json.loads(item) if isinstance(item, str) else item, fmt)
        except (RowError, ValueError):
            malformed += 1
            continue
        made_from = origin(row, uri, number)
        identifier = str(row["id"])
        ids[identifier] = ids.get(identifier, 0) + 1
        if ids[identifier] > 1:
            row["id"] = f"{identifier}~{ids[identifier]}"
        seeds.append(Seed.from_row(len(seeds), row, made_from))
    return seeds, malformed


def sampling_defaults(spec: EvolJobSpec) -> dict[str, dict[str, Any]]:
    """Per teacher sampling fields for the client."""
    return {teacher.name: teacher.sampling.model_dump() for teacher in spec.teachers}


def run(config: WorkloadConfig) -> Result:
    """Run the EvolJob described by `config` (see the module docstring)."""
    spec: EvolJobSpec = config.typed_spec()
    if spec.dataset.uri is None:
        raise ValueError("the dataset reference is not resolved to a URI")
    missing = [t.name for t in spec.teachers if t.name not in config.endpoints]
    if missing:
        raise ValueError(f"no endpoint for teacher(s): {', '.join(missing)}")
    workspace = Workspace(config.output_uri)
    reporter = Reporter(workspace, catalogue=Evol.ALL)
    seeds, malformed = read_seeds(spec.dataset.uri, spec.dataset.format, spec.evol.max_instructions)
    if not seeds:
        raise ValueError(f"no usable instructions in {spec.dataset.uri} ({malformed} malformed rows)")
    log.info("evol: %d seeds (%d malformed rows set aside)", len(seeds), malformed)
    journal = Journal(workspace.path(JOURNAL))
    if len(journal):
        log.info("evol: resuming, %d replies in the journal", len(journal))
    try:
        outcome, optimised, caller, client_metrics = asyncio.run(_run(config, spec, seeds, journal, reporter))
    finally:
        journal.close()
    cache_metrics = caller.finish()
    attempted = caller.sent + caller.failed
    if caller.failed and caller.failed > spec.evol.max_failed_share * attempted:
        raise RuntimeError(
            f"{caller.failed} of {attempted} requests failed after retries; the journal keeps the "
            "finished ones for the next attempt"
        )
    outputs = _write(workspace, spec, outcome, optimised)
    metrics = {**outcome.metrics, **client_metrics, **cache_metrics}
    metrics.update({Evol.ROWS_REJECTED: float(malformed), Evol.REQUESTS_REPLAYED: float(caller.replayed)})
    if optimised is not None:
        metrics[Evol.AUTO_FAILURE_RATE_INITIAL] = optimised.initial_failure_rate
        metrics[Evol.AUTO_FAILURE_RATE_FINAL] = optimised.failure_rate
        metrics[Evol.AUTO_UNPARSED] = float(optimised.unparsed)
    reporter.progress(len(seeds), len(seeds), "instructions", "done", force=True)
    if caller.budget_exhausted:
        log.warning("evol: stopped at the budget (%s); the outputs are partial", caller.budget_exhausted)
    return reporter.finish(outputs, metrics, budget_exhausted=caller.budget_exhausted)


async def _run(
    config: WorkloadConfig, spec: EvolJobSpec, seeds: list[Seed], journal: Journal, reporter: Reporter
) -> tuple[EvolOutcome, Optimised | None, Caller, dict[str, float]]:
    settings = spec.evol
    sampling = sampling_defaults(spec)
    async with Teachers(
        config.endpoints,
        concurrency=settings.concurrency,
        timeout=settings.request_timeout_seconds,
        max_retries=settings.max_retries,
        sampling=sampling,
        seed=settings.seed,
    ) as client:
        caller = run_caller(client, journal, config, sampling, settings.concurrency)
        optimised = None
        if settings.auto.enabled:
            reporter.progress(0, len(seeds), "instructions", "optimising the evolving method", force=True)
            router = Router(spec)
            optimised = await AutoEvolver(
                caller,
                settings.auto,
                evolver=router.evolver,
                answerer=router.answerer or router.evolver,
                optimizer=router.optimizer,
                seed=settings.seed,
            ).run([seed.instruction for seed in seeds])
            log.info(
                "evol: method chosen, failure rate %.2f -> %.2f",
                optimised.initial_failure_rate,
                optimised.failure_rate,
            )

        def progress(done: int, total: int) -> None:
            reporter.progress(
                done,
                total,
                "instructions",
                f"{caller.sent} requests sent, {caller.replayed} from the journal, {caller.cached} from the cache",
            )

        method = optimised.method if optimised is not None else None
        outcome = await EvolRun(spec, caller, method, progress).run(seeds)
        return outcome, optimised, caller, client.metrics()


def _write(
    workspace: Workspace, spec: EvolJobSpec, outcome: EvolOutcome, optimised: Optimised | None
) -> dict[str, ResultOutput]:
    outputs: dict[str, ResultOutput] = {}
    tables: list[tuple[str, list[dict[str, Any]], str]] = [
        ("dataset", outcome.dataset, "chat"),
        ("evolved", outcome.evolved, "jsonl"),
        ("eliminated", outcome.eliminated, "jsonl"),
    ]
    if spec.evol.rankings.enabled:
        tables.append(("rankings", outcome.rankings, "ranking"))
    for name, rows, fmt in tables:
        write_jsonl(workspace.path(f"{name}.jsonl"), rows)
        outputs[name] = output(workspace, f"{name}.jsonl", len(rows), fmt)
    if optimised is not None:
        text = json.dumps(optimised.document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        workspace.path("method.json").write_text(text, encoding="utf-8")
        outputs["method"] = output(workspace, "method.json", len(optimised.steps), "json")
    return outputs
