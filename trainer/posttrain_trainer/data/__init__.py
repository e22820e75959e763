"""The DataSlice workload: `posttrain-trainer data --config FILE`.

The seed's "Data Analysis" and "Weighted Sampling", and the slicing that progressive learning needs:
read the sources (ShareGPT, Alpaca, OpenAI messages, chat rows; any form `common.readers` reads: JSONL,
JSON arrays, Parquet, `save_to_disk` folders, text prompt lists, compressed), set malformed rows
aside, analyse the attributes of every row, drop short instructions, exact and near duplicates and
benchmark-contaminated rows, resample to the target weights and cut the result into K slices.

Inputs (the DataSlice spec, `posttrain.api.data`): `sources`, `data` (categories or a classifier,
tokenizer, bucket edges, dedup, decontamination, sampling, slicing, maxRejectFraction, seed).
Outputs (under the output URI, names fixed for the operator):
- `dataset` (`dataset.jsonl`): the sampled chat rows, their attributes in `meta`;
- `slice-1` ... `slice-K` (`slice-N.jsonl`): disjoint, together the dataset (K=1: the dataset);
- `rejects` (`rejects.jsonl`): malformed rows with source, file, line and reason;
- `eval-diverse`, `eval-hard` (`eval-*.jsonl`, chat rows) when `evalSets` asks for them: the fixed
  arena evaluation sets, held out of `dataset` (`evalsets`);
- `report` (folder): `before.json`, `after.json` and PNG plots;
- `result.json` with metrics `rows.in`, `rows.rejected`, `rows.short`, `rows.duplicates.exact`,
  `rows.duplicates.near`, `rows.contaminated`, `rows.unweighted`, `rows.out`, and the achieved and
  target shares `share.<attribute>.<value>`, `target.<attribute>.<value>`.
The same config and seed give the same outputs; a rerun starts over and overwrites them.

References: the WizardLM-2 announcement (data pre-processing, progressive learning); Luo et al. 2024,
"Arena Learning" (dedup, decontamination, equal shards).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from posttrain.api.common import ModelRef
from posttrain.api.data import DataConfig, DataSliceSpec, Sampling, TargetWeights
from posttrain.api.lineage import origin, stamp
from posttrain.api.metrics import Data
from posttrain.api.outputs import DATASET, EVAL_DIVERSE, EVAL_HARD, REJECTS, REPORT, slice_output
from posttrain.api.workload import Result, ResultOutput, WorkloadConfig

from posttrain_trainer.common.chat import row_id
from posttrain_trainer.common.report import Reporter, output
from posttrain_trainer.common.storage import Workspace, filesystem, is_remote, local_path
from posttrain_trainer.data import dedup, evalsets, report
from posttrain_trainer.data.attributes import Attributes
from posttrain_trainer.data.decontaminate import BenchmarkIndex, read_prompts
from posttrain_trainer.data.errors import DataError
from posttrain_trainer.data.sampling import Target, sample
from posttrain_trainer.data.scan import Scan, prefetched, scan
from posttrain_trainer.data.slicing import cut
from posttrain_trainer.data.sources import ROLES, Corpus, parts

__all__ = ["DataError", "run"]

log = logging.getLogger(__name__)

STEPS = ("read", "analyse", "deduplicate", "decontaminate", "sample", "slice", "write", "report")


class _Progress:
    """One progress entry per step, forced so each step is visible."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def step(self, name: str, message: str) -> None:
        log.info("%s: %s", name, message)
        self.reporter.progress(STEPS.index(name), len(STEPS), "steps", message, force=True)


def _sources(spec: DataSliceSpec) -> list[tuple[str, str, str]]:
    """(uri, row format, file format) of every source.

    Raises:
        DataError: a source without a resolved URI.
    """
    sources: list[tuple[str, str, str]] = []
    for source in spec.sources:
        if source.uri is None:
            raise DataError("a source has no resolved `uri` (the config must resolve every reference)")
        sources.append((source.uri, source.format, source.file_format))
    return sources


def _check_rejects(scanned: Scan, settings: DataConfig, workspace: Workspace) -> int:
    """Write `rejects.jsonl`; returns its rows.

    Raises:
        DataError: no rows at all, or more malformed rows than `maxRejectFraction` allows
            (`rejects.jsonl` is published first, to show them).
    """
    rejects = scanned.rejects
    rows_in = len(scanned) + len(rejects)
    rejects_count = _write_jsonl(
        workspace.path("rejects.jsonl"),
        [json.dumps(r, ensure_ascii=False, sort_keys=True, default=str) for r in rejects],
    )
    if rows_in == 0:
        raise DataError("the sources have no rows")
    if len(rejects) / rows_in > settings.max_reject_fraction:
        workspace.publish()
        raise DataError(
            f"{len(rejects)} of {rows_in} input rows ({len(rejects) / rows_in:.1%}) are malformed, more "
            f"than maxRejectFraction {settings.max_reject_fraction:g}; see {workspace.uri_of('rejects.jsonl')}"
        )
    return rejects_count


def targets_of(sampling: Sampling) -> list[TargetWeights]:
    """The sampling targets, with those of `targetsFrom` (a skill-gaps document) in place of the same attribute's.

    Raises:
        DataError: the document cannot be read or has no `attribute` and `weights`.
    """
    targets = list(sampling.targets)
    if sampling.targets_from is None:
        return targets
    uri = sampling.targets_from.uri
    if uri is None:
        raise DataError(
            "`sampling.targetsFrom` has no resolved `uri` (the config must resolve every reference)"
        )
    try:
        if is_remote(uri):
            with filesystem(uri).open(uri, "r") as handle:
                document = json.load(handle)
        else:
            document = json.loads(local_path(uri).read_text())
        target = TargetWeights.model_validate(
            {
                "attribute": document["attribute"],
                "weights": {k: v for k, v in document["weights"].items() if v > 0},
            }
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"`sampling.targetsFrom` ({uri}) is not a skill-gaps document: {error}") from error
    return [t for t in targets if t.attribute != target.attribute] + [target]


def run(config: WorkloadConfig) -> Result:
    """Run the DataSlice workload (see the module docstring).

    Raises:
        DataError: too many malformed rows, no rows left, or settings the data cannot satisfy.
    """
    spec: DataSliceSpec = config.typed_spec()
    settings = spec.data
    workspace = Workspace(config.output_uri)
    progress = _Progress(Reporter(workspace, catalogue=Data.ALL))
    metrics: dict[str, float] = {}

    sources = _sources(spec)
    progress.step("read", f"reading and analysing {len(sources)} source(s), a block at a time")
    benchmarks = [(b.uri, b.file_format) for b in settings.decontamination.benchmarks if b.uri]
    index = (
        BenchmarkIndex.build(read_prompts(benchmarks), settings.decontamination.ngram) if benchmarks else None
    )
    with tempfile.TemporaryDirectory(prefix="posttrain-data-") as scratch:
        scanned = scan(
            sources,
            settings,
            Path(scratch),
            index,
            tokenizer_path=_model_path(settings.tokenizer),
            classifier_path=_model_path(settings.classifier),
        )
        rejects_count = _check_rejects(scanned, settings, workspace)
        rows_in = len(scanned) + len(scanned.rejects)
        metrics.update({Data.ROWS_IN: rows_in, Data.ROWS_REJECTED: len(scanned.rejects)})
        progress.step("analyse", f"analysed {len(scanned)} rows ({len(scanned.rejects)} malformed set aside)")
        attributes = scanned.attributes
        before = report.distribution(attributes, list(settings.attributes))

        progress.step("deduplicate", "removing short instructions and duplicates")
        keep, removed = clean(scanned, settings)
        metrics.update(removed)
    return _finish(config, spec, scanned, keep, metrics, before, progress, workspace, rejects_count)


def _finish(
    config: WorkloadConfig,
    spec: DataSliceSpec,
    scanned: Scan,
    keep: np.ndarray,
    metrics: dict[str, float],
    before: dict[str, Any],
    progress: _Progress,
    workspace: Workspace,
    rejects_count: int,
) -> Result:
    """Decontaminate, hold out the eval sets, sample, slice, write the rows (the second pass), report."""
    settings = spec.data
    attributes = scanned.attributes
    rows_in = len(scanned) + len(scanned.rejects)
    progress.step("decontaminate", "checking benchmark overlap")
    flagged = scanned.contaminated & keep
    keep &= ~flagged
    metrics[Data.ROWS_CONTAMINATED] = int(flagged.sum())
    held = evalsets.hold_out(
        scanned.instructions, keep, attributes.difficulty, settings, _model_path(settings.embedding)
    )
    keep &= ~held.contaminated
    keep[held.selection.rows] = False
    metrics[Data.ROWS_CONTAMINATED_NEIGHBOURS] = int(held.contaminated.sum())

    candidates = np.flatnonzero(keep)
    if not len(candidates):
        raise DataError("no rows are left after cleaning; " + _removed_text(metrics))
    progress.step("sample", f"sampling {len(candidates)} clean rows")
    sampled = sample(
        len(candidates),
        [
            Target(t.attribute, attributes.categorical(t.attribute).take(candidates), t.weights)
            for t in targets_of(settings.sampling)
        ],
        settings.sampling.total,
        settings.sampling.replacement,
        settings.seed,
    )
    if not len(sampled.rows):
        raise DataError("sampling chose no rows; check `sampling.targets` against the report")
    selected = candidates[sampled.rows]
    chosen = attributes.take(selected)
    metrics[Data.ROWS_UNWEIGHTED] = sampled.dropped
    metrics[Data.ROWS_OUT] = len(selected)
    for attribute, shares in sampled.target_shares.items():
        for value, share in shares.items():
            metrics[Data.TARGET.of(attribute, value)] = round(share, 6)
        for value, share in sampled.achieved_shares[attribute].items():
            metrics[Data.SHARE.of(attribute, value)] = round(share, 6)

    slicing = settings.slicing
    progress.step("slice", f"cutting {len(selected)} rows into {slicing.count} slice(s)")
    slices = cut(
        len(selected),
        slicing.count,
        slicing.strategy,
        settings.seed,
        chosen.difficulty,
        chosen.categorical(slicing.attribute) if slicing.attribute else None,
        slicing.attribute or "",
    )

    progress.step("write", f"writing {len(selected)} rows")
    evaluation = {
        name: rows
        for name, rows, size in (
            (EVAL_DIVERSE, held.selection.diverse, settings.eval_sets.diverse),
            (EVAL_HARD, held.selection.hard, settings.eval_sets.hard),
        )
        if size
    }
    eval_lines = write_rows(
        workspace,
        scanned,
        selected,
        sampled.repeat,
        chosen,
        slices,
        {name: (rows, attributes.take(rows)) for name, rows in evaluation.items()},
    )
    outputs: dict[str, ResultOutput] = {DATASET: output(workspace, "dataset.jsonl", len(selected), "chat")}
    for number, positions in enumerate(slices, 1):
        name = slice_output(number)
        outputs[name] = output(workspace, f"{name}.jsonl", len(positions), "chat")
    outputs[REJECTS] = output(workspace, "rejects.jsonl", rejects_count, "rejects")
    for name, lines in eval_lines.items():
        outputs[name] = output(
            workspace, f"{name}.jsonl", _write_jsonl(workspace.path(f"{name}.jsonl"), lines), "chat"
        )
    metrics[Data.ROWS_EVAL_DIVERSE] = len(held.selection.diverse)
    metrics[Data.ROWS_EVAL_HARD] = len(held.selection.hard)

    progress.step("report", "writing the distribution report")
    after = report.distribution(chosen, list(settings.attributes))
    after["sampling"] = {
        "targets": sampled.target_shares,
        "achieved": sampled.achieved_shares,
        "total": settings.sampling.total,
        "replacement": settings.sampling.replacement,
    }
    steps = {
        "in": rows_in,
        "rejected": len(scanned.rejects),
        "short": int(metrics[Data.ROWS_SHORT]),
        "exact duplicates": int(metrics[Data.ROWS_DUPLICATES_EXACT]),
        "near duplicates": int(metrics[Data.ROWS_DUPLICATES_NEAR]),
        "contaminated": int(metrics[Data.ROWS_CONTAMINATED]),
        "unweighted": sampled.dropped,
        "out": len(selected),
    }
    after["steps"] = steps
    after["slices"] = {f"slice-{i}": len(p) for i, p in enumerate(slices, 1)}
    before["steps"] = {"in": rows_in, "rejected": len(scanned.rejects)}
    report.write(workspace.path("report"), before, after, sampled.target_shares, steps)
    outputs[REPORT] = output(workspace, "report", None, "report")
    metrics[Data.SLICES] = len(slices)
    log.info("done: %s", _removed_text(metrics))
    progress.reporter.progress(len(STEPS), len(STEPS), "steps", "done", force=True)
    return progress.reporter.finish(outputs, metrics)


def clean(scanned: Scan, settings: DataConfig) -> tuple[np.ndarray, dict[str, float]]:
    """Drop short instructions, then exact, then near duplicates; (keep mask, counts)."""
    keep = scanned.attributes.instruction_tokens >= settings.min_instruction_tokens
    removed: dict[str, float] = {Data.ROWS_SHORT: int((~keep).sum())}
    exact = 0
    if settings.dedup.exact:
        candidates = np.flatnonzero(keep)
        duplicate = dedup.exact_duplicates(scanned.exact_keys[candidates])
        keep[candidates[duplicate]] = False
        exact = int(duplicate.sum())
    near = 0
    if scanned.near is not None:
        candidates = np.flatnonzero(keep)
        duplicate = scanned.near.near_duplicates(candidates)
        keep[candidates[duplicate]] = False
        near = int(duplicate.sum())
    removed.update({Data.ROWS_DUPLICATES_EXACT: exact, Data.ROWS_DUPLICATES_NEAR: near})
    return keep, removed


WRITE_CHUNK = 10_000
"""Rows serialised at a time: memory stays bounded whatever the dataset's size."""


def serialise(corpus: Corpus, selected: np.ndarray, repeat: np.ndarray, chosen: Attributes) -> list[str]:
    """The JSONL line of each selected row: id, messages and meta.

    The meta is the row's own, its source and line unless it already names them, its attributes, and
    its lineage (`posttrain.api.lineage`: step `select`, from the source row or the row's own lineage).
    """
    rows = corpus.take(selected)
    contents = rows.contents.to_pylist()
    roles = rows.roles.tolist()
    offsets = rows.offsets.tolist()
    ids = rows.ids.to_pylist()
    metas = corpus.meta.get(rows.meta_chunk, rows.meta_index)
    found = chosen.metas()
    sources = [corpus.sources[s] for s in rows.source.tolist()]
    lines = rows.line.tolist()
    copies = repeat.tolist()
    out = []
    for i in range(len(rows)):
        messages = [
            {"role": ROLES[roles[m]], "content": contents[m]} for m in range(offsets[i], offsets[i + 1])
        ]
        identifier = ids[i] or row_id(messages)
        if copies[i]:
            identifier = f"{identifier}-r{copies[i]}"
        meta: dict[str, Any] = dict(metas[i])
        meta.setdefault("source", sources[i])
        meta.setdefault("line", lines[i])
        meta.update(found[i])
        row = {"id": identifier, "messages": messages, "meta": meta}
        stamp(row, "select", origin({"id": ids[i], "meta": metas[i]}, sources[i], lines[i]))
        out.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    return out


def write_rows(
    workspace: Workspace,
    scanned: Scan,
    selected: np.ndarray,
    repeat: np.ndarray,
    chosen: Attributes,
    slices: list[np.ndarray],
    held: dict[str, tuple[np.ndarray, Attributes]],
) -> dict[str, list[str]]:
    """The second pass: read the sources again and write the selected rows, a chunk at a time.

    `dataset.jsonl` and every `slice-N.jsonl` are written as the blocks go by (`selected` is in
    ascending row order, as `sample` gives it); the lines of the `held` rows (the eval sets, each a
    few thousand rows at most) are returned, in their order. The files hold the same bytes
    `JsonlWriter` would write.

    Raises:
        DataError: the sources no longer hold the rows the first pass read.
    """
    owner = np.zeros(len(selected), dtype=np.int64)
    for number, positions in enumerate(slices):
        owner[positions] = number
    paths = [workspace.path("dataset.jsonl")] + [
        workspace.path(f"slice-{n}.jsonl") for n in range(1, len(slices) + 1)
    ]
    found: dict[str, list[str]] = {name: [""] * len(rows) for name, (rows, _) in held.items()}
    streams = [path.open("w", encoding="utf-8") for path in paths]
    base = 0
    try:
        for part, _ in prefetched(parts(scanned.sources)):
            end = base + len(part)
            first, last = np.searchsorted(selected, [base, end]).tolist()
            for start in range(first, last, WRITE_CHUNK):
                window = np.arange(start, min(start + WRITE_CHUNK, last))
                lines = serialise(part, selected[window] - base, repeat[window], chosen.take(window))
                for line, number in zip(lines, owner[window].tolist(), strict=True):
                    streams[0].write(line + "\n")
                    streams[number + 1].write(line + "\n")
            for name, (rows, attributes) in held.items():
                inside = np.flatnonzero((rows >= base) & (rows < end))
                lines = serialise(
                    part, rows[inside] - base, np.zeros(len(inside), np.int64), attributes.take(inside)
                )
                for position, line in zip(inside.tolist(), lines, strict=True):
                    found[name][position] = line
            base = end
    finally:
        for stream in streams:
            stream.close()
    if base != len(scanned):
        raise DataError(
            f"the sources changed while they were read: {len(scanned)} rows the first time, {base} the second"
        )
    return found


def _write_jsonl(path: Path, lines: list[str]) -> int:
    """Write serialised rows (the same bytes `JsonlWriter` would write); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        for line in lines:
            stream.write(line + "\n")
    return len(lines)


def _model_path(ref: ModelRef | None) -> Path | None:
    """A local folder with the referenced model (an `s3://` model is downloaded to a temporary one)."""
    if ref is None or ref.uri is None:
        return None
    if is_remote(ref.uri):
        target = Path(tempfile.mkdtemp(prefix="posttrain-model-"))
        filesystem(ref.uri).get(ref.uri.rstrip("/") + "/", str(target) + "/", recursive=True)
        return target
    return local_path(ref.uri)


def _removed_text(metrics: dict[str, float]) -> str:
    names = [
        Data.ROWS_IN,
        Data.ROWS_REJECTED,
        Data.ROWS_SHORT,
        Data.ROWS_DUPLICATES_EXACT,
        Data.ROWS_DUPLICATES_NEAR,
        Data.ROWS_CONTAMINATED,
        Data.ROWS_OUT,
    ]
    return ", ".join(f"{name} {int(metrics[name])}" for name in names if name in metrics)
