"""Names, labels and ownerReferences of children: deterministic, unique, and valid for any parent name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from posttrain.api.resources import Resource
from posttrain.manifests import (
    ManifestSettings,
    child_labels,
    job_name,
    label_selector,
    label_value,
    owner_references,
    teacher_name,
)
from posttrain.manifests.naming import MAX_JOB_NAME, dns_name, extra_labels

from tests.unit.manifests.manifest_builders import example, make

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
RUN = "74ed61989dd6a790"
BASE = make("DataSlice", "base", {"sources": [{"uri": "pvc://data/in.jsonl"}]})

resource_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z", fullmatch=True)
participant_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z", fullmatch=True)


def named(name: str, kind: str = "DataSlice") -> Resource:
    """BASE under another name (and kind), without re-validating the spec."""
    return BASE.model_copy(update={"kind": kind, "metadata": BASE.metadata.model_copy(update={"name": name})})


def test_short_names_read_as_resource_run_and_attempt() -> None:
    assert job_name(named("sft"), RUN, 1) == "sft-74ed6198-1"
    assert job_name(named("sft"), RUN, 12) == "sft-74ed6198-12"
    assert teacher_name(named("evol-1", "EvolJob"), "teacher-a") == "evol-1-evol-teacher-a"
    assert teacher_name(named("evol-1", "AlignRound"), "teacher-a") == "evol-1-align-teacher-a"


def test_job_names_differ_per_resource_run_and_attempt() -> None:
    names = {
        job_name(named(n), run, attempt)
        for n in ("a", "b", "a.b", "a-b", "1st", "pt-1st")
        for run in (RUN, "0123456789abcdef")
        for attempt in (1, 2, 3)
    }
    assert len(names) == 6 * 2 * 3


def test_names_that_had_to_change_carry_a_hash_of_the_original() -> None:
    dotted, dashed = job_name(named("a.b"), RUN, 1), job_name(named("a-b"), RUN, 1)
    assert dashed == "a-b-74ed6198-1"
    assert dotted != dashed and dotted.startswith("a-b-") and DNS_1035.match(dotted)
    leading_digit = job_name(named("1st"), RUN, 1)
    assert leading_digit.startswith("pt-1st-") and DNS_1035.match(leading_digit)
    assert leading_digit != job_name(named("pt-1st"), RUN, 1)


def test_long_names_are_shortened_with_a_hash() -> None:
    long_a, long_b = "a" * 200 + ".x", "a" * 200 + ".y"
    a, b = job_name(named(long_a), RUN, 1), job_name(named(long_b), RUN, 1)
    assert a != b
    for name in (a, b):
        assert len(name) <= MAX_JOB_NAME and DNS_1035.match(name) and name.endswith("-74ed6198-1")
        assert len(f"{name}-511") <= 63  # Indexed Job host names
    teacher = teacher_name(named(long_a, "EvolJob"), "p" * 40)
    assert len(teacher) <= 63 and DNS_1035.match(teacher) and teacher.endswith("-evol-" + "p" * 40)


@settings(max_examples=150, deadline=None)
@given(name=resource_names, other=resource_names, attempt=st.integers(1, 999))
def test_any_resource_name_gives_valid_distinct_job_names(name: str, other: str, attempt: int) -> None:
    mine = job_name(named(name), RUN, attempt)
    assert DNS_1035.match(mine) and len(mine) <= MAX_JOB_NAME
    assert mine == job_name(named(name), RUN, attempt)
    if other != name:
        assert job_name(named(other), RUN, attempt) != mine


@settings(max_examples=150, deadline=None)
@given(name=resource_names, participant=participant_names)
def test_any_teacher_name_is_a_valid_service_name(name: str, participant: str) -> None:
    service = teacher_name(named(name, "AlignRound"), participant)
    assert DNS_1035.match(service) and len(service) <= 63


def test_job_name_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        job_name(named("sft"), RUN, 0)


def test_dns_name_rejects_suffixes_that_leave_no_room() -> None:
    with pytest.raises(ValueError, match="no room"):
        dns_name("x", "-" + "a" * 60)
    with pytest.raises(ValueError, match="suffix"):
        dns_name("x", "_bad")


def test_child_labels_are_the_contract() -> None:
    resource = example("progressive", "TrainStage", "wizard-s1-sft")
    assert child_labels(resource, "workload", run=RUN, attempt=2) == {
        "app.kubernetes.io/name": "posttrain",
        "app.kubernetes.io/instance": "wizard-s1-sft",
        "app.kubernetes.io/component": "workload",
        "app.kubernetes.io/managed-by": "posttrain-operator",
        "app.kubernetes.io/part-of": "posttrain",
        "posttrain.dev/kind": "TrainStage",
        "posttrain.dev/name": "wizard-s1-sft",
        "posttrain.dev/run": RUN,
        "posttrain.dev/attempt": "2",
    }
    teacher = child_labels(
        example("progressive", "EvolJob", "wizard-s1-evol"), "teacher", participant="teacher-a"
    )
    assert teacher["app.kubernetes.io/component"] == "teacher"
    assert teacher["posttrain.dev/participant"] == "teacher-a"
    assert "posttrain.dev/run" not in teacher
    with pytest.raises(ValueError, match="component"):
        child_labels(resource, "server")


def test_long_names_get_hashed_label_values() -> None:
    long_a, long_b = "n" * 100 + ".a", "n" * 100 + ".b"
    labels_a = child_labels(named(long_a), "workload")
    labels_b = child_labels(named(long_b), "workload")
    assert labels_a["posttrain.dev/name"] != labels_b["posttrain.dev/name"]
    for labels in (labels_a, labels_b):
        assert labels["posttrain.dev/name"] == labels["app.kubernetes.io/instance"]
        assert len(labels["posttrain.dev/name"]) <= 63 and LABEL_VALUE.match(labels["posttrain.dev/name"])


@settings(max_examples=150, deadline=None)
@given(value=st.text(max_size=300))
def test_label_value_is_always_valid(value: str) -> None:
    out = label_value(value)
    assert len(out) <= 63 and LABEL_VALUE.match(out)
    if len(value) <= 63 and LABEL_VALUE.match(value):
        assert out == value


def test_owner_reference_is_the_controller() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    assert owner_references(resource) == [
        {
            "apiVersion": "posttrain.dev/v1alpha1",
            "kind": "EvolJob",
            "name": "wizard-s1-evol",
            "uid": resource.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    no_uid = resource.model_copy(update={"metadata": resource.metadata.model_copy(update={"uid": None})})
    with pytest.raises(ValueError, match="no uid"):
        owner_references(no_uid)


def test_extra_labels_drop_gitops_and_reserved_keys() -> None:
    assert extra_labels(
        {
            "team": "nlp",
            "app.kubernetes.io/instance": "argo-app",
            "app.kubernetes.io/name": "other",
            "argocd.argoproj.io/instance": "x",
            "kustomize.toolkit.fluxcd.io/name": "x",
            "helm.toolkit.fluxcd.io/name": "x",
            "posttrain.dev/kind": "x",
            "kueue.x-k8s.io/queue-name": "q",
        }
    ) == {"team": "nlp"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_pull_policy", "Sometimes", "image_pull_policy"),
        ("pvc_root", "mnt/pvc", "absolute"),
        ("teacher_port", 0, "out of range"),
        ("rendezvous_port", 70000, "out of range"),
        ("teacher_startup_seconds", 1, "at least"),
    ],
)
def test_settings_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ManifestSettings(**{field: value})  # type: ignore[arg-type]


def test_names_need_no_identity() -> None:
    bare = BASE.model_copy(
        update={"metadata": BASE.metadata.model_copy(update={"uid": None, "namespace": None})}
    )
    assert job_name(bare, RUN, 1) == "base-74ed6198-1"
    assert child_labels(bare, "workload")["posttrain.dev/name"] == "base"


def test_label_selector_matches_the_children_of_one_component() -> None:
    resource = example("progressive", "EvolJob", "wizard-s1-evol")
    selector = label_selector(resource, "teacher", participant="teacher-a")
    pairs = dict(part.split("=", 1) for part in selector.split(","))
    assert pairs == child_labels(resource, "teacher", participant="teacher-a")
    assert "app.kubernetes.io/component=workload" in label_selector(resource, "workload")
