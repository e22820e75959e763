"""The outputs each kind produces, known from its spec before anything runs.

A reference (`from: {kind, name, output}`) names one of them; a misspelt or out-of-range name
(`preference` for `preferences`, `slice-9` of a 3-slice DataSlice) is reported by `posttrain
validate` and by the operator with the list of valid names, instead of surfacing at run time. The
workloads write exactly these names (the trainer imports the constants), so the two cannot drift.

One function per kind, found by name in `OUTPUTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from posttrain.api.align import AlignRoundSpec
from posttrain.api.data import DataSliceSpec
from posttrain.api.evol import EvolJobSpec

DATASET = "dataset"
REJECTS = "rejects"
REPORT = "report"
MODEL = "model"
PREFERENCES = "preferences"
EVAL_DIVERSE = "eval-diverse"
EVAL_HARD = "eval-hard"


def slice_output(number: int) -> str:
    """The name of a DataSlice's slice `number` (from 1)."""
    return f"slice-{number}"


def preferences_output(number: int) -> str:
    """The name of an AlignRound's preference pairs of dataset `number` (from 1)."""
    return f"{PREFERENCES}-{number}"


def _data_slice(spec: DataSliceSpec) -> list[str]:
    slices = [slice_output(n) for n in range(1, spec.data.slicing.count + 1)]
    evaluation = [
        name
        for name, size in ((EVAL_DIVERSE, spec.data.eval_sets.diverse), (EVAL_HARD, spec.data.eval_sets.hard))
        if size
    ]
    return [DATASET, *slices, REJECTS, *evaluation, REPORT]


def _evol_job(spec: EvolJobSpec) -> list[str]:
    names = [DATASET, "evolved", "eliminated"]
    if spec.evol.rankings.enabled:
        names.append("rankings")
    if spec.evol.auto.enabled:
        names.append("method")
    return names


def _align_round(spec: AlignRoundSpec) -> list[str]:
    names = ["sft", PREFERENCES]
    if len(spec.datasets) > 1:
        names += [preferences_output(n) for n in range(1, len(spec.datasets) + 1)]
    names.append("battles")
    if spec.align.arena.enabled:
        names.append("elo")
    names.append("skill-gaps")
    if spec.align.step_labels.enabled:
        names.append("step-labels")
    return names


def _model(spec: Any) -> list[str]:
    return [MODEL]


OUTPUTS: dict[str, Callable[[Any], list[str]]] = {
    "DataSlice": _data_slice,
    "EvolJob": _evol_job,
    "AlignRound": _align_round,
    "TrainStage": _model,
    "RewardModel": _model,
}
"""Kind -> the outputs a resource of that kind produces, given its spec."""


def outputs_of(kind: str, spec: Any) -> list[str]:
    """The names of the outputs a resource of `kind` with `spec` produces, in a stable order."""
    return OUTPUTS[kind](spec)


def unknown_output(producer: tuple[str, str], output: str, producer_spec: Any) -> str | None:
    """Why `output` is not an output of the producer (kind, name) with this spec, or None if it is.

    The message names the producer and lists its valid outputs.
    """
    kind, name = producer
    valid = outputs_of(kind, producer_spec)
    if output in valid:
        return None
    return f"{kind}/{name} has no output {output!r}; its outputs are {', '.join(valid)}"
