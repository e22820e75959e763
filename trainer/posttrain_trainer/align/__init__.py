"""The align workload (`posttrain-trainer align --config FILE`): AI Align AI for one AlignRound.

Co-teaching among teachers and the student (simulated chat, judged battles with position swap,
improvement suggestions, skill-gap targeting), self-teaching (the student's own candidates ranked by
the judges), step labels for the PRM, and arena Elo of the student against the teachers. How each step
works is documented in its module: `workflow` (the flow and resume), `prompts`, `judge`, `battles`,
`selfteach`, `steplabels`, `elo`.

Inputs (`WorkloadConfig`): the AlignRound spec with `datasets[].uri` (and `evalSet.uri`) resolved;
`endpoints` for the student, every teacher and every judge.

Outputs (in `config.output_uri`):
- `sft` (`sft.jsonl`, chat rows): winners' answers where the student lost by more than `sftMargin`,
  the student's answers revised with teachers' suggestions and judged again (within
  `revisionMargin` of the teacher's), and self-teaching's best candidates that beat the reference;
- `preferences` (`preferences.jsonl`, preference rows `{"id","prompt","chosen","rejected","meta"}`):
  battle pairs with a gap of at least `preferenceMargin`, and self-teaching pairs; with several input
  datasets also `preferences-1` ... `preferences-N` (`meta.dataset` is the 0-based index);
- `battles` (`battles.jsonl`): every judged battle, both orders, scores, explanations, resolution
  (`stage`: `co-teaching`, `revision`, `self-teaching`, `arena`, and `anchor` for the `anchorSet`'s
  battles with a known outcome, `known`);
- `elo` (`elo.json`): rating and bootstrap CI per participant (when the arena is enabled);
- `skill-gaps` (`skill-gaps.json`): the student's win rate per category and DataSlice target weights;
- `step-labels` (`step-labels.jsonl`, PRM rows `{"id","prompt","steps","labels"}`) when enabled;
- `result.json` with the metrics of `posttrain.api.metrics.Align` (`studentWinRate`, `battles`,
  `battles.inconsistent`, `elo.<participant>`, `judgeAgreement` with several judges, `rows.sft`,
  `rows.preferences`, the judge reliability measures `reliability.*` (see `reliability`), ...);
  `progress.json` while running.

References: the WizardLM-2 announcement; Luo et al., 2024 (Arena Learning).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from posttrain.api.align import AlignRoundSpec
from posttrain.api.common import DataRef, model_family
from posttrain.api.lineage import origin
from posttrain.api.metrics import Align
from posttrain.api.workload import Result, ResultOutput, WorkloadConfig

from posttrain_trainer.align.battles import Battle
from posttrain_trainer.align.workflow import (
    AlignRound,
    Instruction,
    RoundResult,
    hold_out,
    reference_answer,
    split_row,
)
from posttrain_trainer.client import Journal, Teachers
from posttrain_trainer.common.chat import RowError, instruction, normalize, prompt_key
from posttrain_trainer.common.report import Reporter, output
from posttrain_trainer.common.storage import Workspace, read_lines, write_jsonl
from posttrain_trainer.evol.caller import run_caller

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
"""The reply journal in the output folder; a run started again with the same folder resumes from it."""


def read_instructions(
    ref: DataRef, dataset: int | None, limit: int | None, held_out: frozenset[str] = frozenset()
) -> tuple[list[Instruction], int, int]:
    """The instructions of one dataset and the numbers of rows set aside as malformed and as held out.

    Args:
        ref: the dataset (its `uri` resolved).
        dataset: its 0-based index, None for the evaluation set.
        limit: keep at most this many instructions.
        held_out: `prompt_key`s of the evaluation prompts: a row whose first user turn is one of them is
            set aside (its battles would make SFT rows and pairs from the held-out prompts).

    Returns:
        (instructions in file order, rejected rows, held-out rows set aside).
    """
    if ref.uri is None:
        raise ValueError("dataset reference is not resolved to a uri")
    out: list[Instruction] = []
    seen: dict[str, int] = {}
    rejected = contaminated = 0
    prefix = "eval" if dataset is None else f"d{dataset + 1}"
    for number, item in read_lines(ref.uri):
        if limit is not None and len(out) >= limit:
            break
        try:
            raw = json.loads(item) if isinstance(item, str) else item
            row = normalize(_as_chat(raw), "auto" if ref.format in ("preference", "auto") else ref.format)
        except (ValueError, RowError):
            rejected += 1
            continue
        prompt, follow_ups = split_row(row)
        if held_out and prompt_key(instruction(row)) in held_out:
            contaminated += 1
            continue
        source = str(row["id"])
        seen[source] = seen.get(source, 0) + 1
        if seen[source] > 1:
            source = f"{source}~{seen[source]}"
        category = row["meta"].get("category")
        out.append(
            Instruction(
                key=f"{prefix}/{source}",
                source=source,
                dataset=dataset,
                category=category if isinstance(category, str) and category else "general",
                prompt=prompt,
                follow_ups=follow_ups,
                reference=reference_answer(row),
                made_from=origin(row, ref.uri, number),
            )
        )
    return out, rejected, contaminated


def read_anchors(ref: DataRef) -> tuple[list[Battle], int]:
    """The anchor battles of an `anchorSet` (preference rows; `chosen` is known to win) and rows set aside.

    A side's model family is `meta.chosenFamily` / `meta.rejectedFamily`, else the family of
    `meta.chosenModel` / `meta.rejectedModel`, else unknown (the battle then measures drift only).
    """
    if ref.uri is None:
        raise ValueError("anchor set reference is not resolved to a uri")
    anchors: list[Battle] = []
    rejected = 0
    for number, item in read_lines(ref.uri):
        raw = json.loads(item) if isinstance(item, str) else item
        prompt = raw.get("prompt") if isinstance(raw, dict) else None
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        chosen, other = (raw.get("chosen"), raw.get("rejected")) if isinstance(raw, dict) else (None, None)
        if not (isinstance(prompt, list) and prompt and isinstance(chosen, str) and isinstance(other, str)):
            rejected += 1
            continue
        meta: dict[str, Any] = raw["meta"] if isinstance(raw.get("meta"), dict) else {}
        families = {
            side: family
            for side in ("chosen", "rejected")
            if (family := _anchor_family(meta, side)) is not None
        }
        source = str(raw.get("id") or number)
        anchors.append(
            Battle(
                id=f"anchor/{source}",
                stage="anchor",
                prompt=prompt,
                x="chosen",
                y="rejected",
                answer_x=chosen,
                answer_y=other,
                source=source,
                families=families,
                known=1.0,
                made_from=origin(raw, ref.uri, number),
            )
        )
    return anchors, rejected


def _anchor_family(meta: dict[str, Any], side: str) -> str | None:
    family = meta.get(f"{side}Family")
    if isinstance(family, str) and family:
        return family
    model = meta.get(f"{side}Model")
    return model_family(model) if isinstance(model, str) and model else None


def _as_chat(row: Any) -> Any:
    """A preference row's prompt read as an instruction row (other rows unchanged)."""
    if isinstance(row, dict) and "messages" not in row and isinstance(row.get("prompt"), list):
        return {"id": row.get("id"), "messages": row["prompt"], "meta": row.get("meta") or {}}
    return row


def _sampling(spec: AlignRoundSpec) -> dict[str, dict[str, Any]]:
    out = {}
    for participant in [*spec.judges, *spec.teachers, spec.student]:
        s = participant.sampling
        out[participant.name] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
    return out


def _check_participants(spec: AlignRoundSpec, config: WorkloadConfig) -> None:
    settings = spec.align
    names = {spec.student.name, *(t.name for t in spec.teachers), *(j.name for j in spec.judges)}
    verifiers = {j.name for j in spec.judges if j.verifier is not None}
    missing = sorted(n for n in names - verifiers if n not in config.endpoints)
    if missing:
        raise ValueError(f"no endpoint for participant(s): {', '.join(missing)}")
    for what, name in (
        ("coTeaching.userSimulator", settings.co_teaching.user_simulator),
        ("stepLabels.labeler", settings.step_labels.labeler),
        ("arena.reference", settings.arena.reference),
    ):
        if name is not None and name not in names:
            raise ValueError(f"align.{what} names {name!r}, which is not a participant")
    if settings.arena.reference is not None and settings.arena.reference not in (
        spec.student.name,
        *(t.name for t in spec.teachers),
    ):
        raise ValueError("align.arena.reference must be the student or a teacher")


def write_outputs(workspace: Workspace, spec: AlignRoundSpec, result: RoundResult) -> dict[str, ResultOutput]:
    """Write every output file and describe them for the result document."""
    outputs: dict[str, ResultOutput] = {}

    def jsonl(name: str, rows: list[dict[str, Any]], fmt: str) -> None:
        write_jsonl(workspace.path(f"{name}.jsonl"), rows)
        outputs[name] = output(workspace, f"{name}.jsonl", len(rows), fmt)

    def document(name: str, content: dict[str, Any], rows: int) -> None:
        workspace.path(f"{name}.json").write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        outputs[name] = output(workspace, f"{name}.json", rows, "json")

    jsonl("sft", result.sft, "chat")
    jsonl("preferences", result.preferences, "preference")
    if len(spec.datasets) > 1:
        for index in range(len(spec.datasets)):
            rows = [p for p in result.preferences if p["meta"].get("dataset") == index]
            jsonl(f"preferences-{index + 1}", rows, "preference")
    battles = result.coteaching + result.checks + result.arena + result.anchors
    jsonl("battles", [b.record() for b in battles], "battles")
    if result.elo is not None:
        document("elo", result.elo.wire(), len(result.elo.ratings))
    document("skill-gaps", result.skill_gaps, len(result.skill_gaps.get("categories", [])))
    if spec.align.step_labels.enabled:
        jsonl("step-labels", result.step_labels, "steps")
    return outputs


async def _run_round(
    spec: AlignRoundSpec, config: WorkloadConfig, workspace: Workspace, reporter: Reporter
) -> tuple[RoundResult, int, str | None]:
    settings = spec.align
    instructions: list[Instruction] = []
    rejected = contaminated = 0
    evaluation: list[Instruction] = []
    if settings.arena.enabled and spec.eval_set is not None:
        evaluation, rejected, _ = read_instructions(spec.eval_set, None, settings.arena.eval_size)
    held_out = frozenset(prompt_key(item.prompt[-1]["content"]) for item in evaluation)
    for index, ref in enumerate(spec.datasets):
        items, bad, dropped = read_instructions(ref, index, settings.max_instructions, held_out)
        instructions += items
        rejected += bad
        contaminated += dropped
    if settings.arena.enabled and spec.eval_set is None:
        instructions, evaluation = hold_out(instructions, settings.arena.eval_size, settings.seed)
    if not instructions and not evaluation:
        raise ValueError("no usable instructions in the datasets")
    anchors: list[Battle] = []
    if spec.anchor_set is not None:
        anchors, bad = read_anchors(spec.anchor_set)
        rejected += bad
    log.info(
        "align: %d training and %d evaluation prompts (%d training rows set aside as evaluation prompts)",
        len(instructions),
        len(evaluation),
        contaminated,
    )

    sampling = _sampling(spec)
    journal = Journal(workspace.path(JOURNAL))
    if len(journal):
        log.info("align: resuming, %d replies in the journal", len(journal))
    try:
        async with Teachers(
            config.endpoints,
            concurrency=settings.concurrency,
            timeout=settings.request_timeout_seconds,
            max_retries=settings.max_retries,
            sampling=sampling,
            seed=settings.seed,
        ) as teachers:
            caller = run_caller(teachers, journal, config, sampling, settings.concurrency)

            def progress(done: int, total: int, unit: str) -> None:
                message = (
                    f"{caller.sent} requests sent, {caller.cached} from the cache, {caller.failed} failed"
                )
                reporter.progress(done, total, unit, message)

            result = await AlignRound(spec, caller, progress).run(instructions, evaluation, anchors)
            result.metrics = {**teachers.metrics(), **result.metrics}
    finally:
        journal.close()
    result.metrics.update(caller.finish())
    result.metrics[Align.ROWS_CONTAMINATED] = float(contaminated)
    attempted = caller.sent + caller.failed
    if caller.failed and caller.failed > settings.max_failed_share * attempted:
        raise RuntimeError(
            f"{caller.failed} of {attempted} requests failed; the journal keeps the rest for a retry"
        )
    return result, rejected, caller.budget_exhausted


def run(config: WorkloadConfig) -> Result:
    """Run one AlignRound and write its outputs and result document.

    Args:
        config: the workload config (spec of kind AlignRound).

    Returns:
        The result document (outputs and metrics).
    """
    spec: AlignRoundSpec = config.typed_spec()
    _check_participants(spec, config)
    workspace = Workspace(config.output_uri)
    reporter = Reporter(workspace, catalogue=Align.ALL)
    reporter.progress(0, 0, "instructions", "starting", force=True)
    result, rejected, exhausted = asyncio.run(_run_round(spec, config, workspace, reporter))
    outputs = write_outputs(workspace, spec, result)
    metrics = dict(result.metrics)
    metrics[Align.ROWS_REJECTED] = float(rejected)
    reporter.progress(
        int(metrics.get(Align.BATTLES, 0)), int(metrics.get(Align.BATTLES, 0)), "battles", "done", force=True
    )
    return reporter.finish(outputs, metrics, budget_exhausted=exhausted)
