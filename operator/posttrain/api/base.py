"""Base model of every API object: camelCase on the wire, no unknown fields, and CEL rules.

The same pydantic models are the CRD schemas (``posttrain crds``), the validation of manifests in the
local runner, and the trainer's config format. A cross-field rule is written once, as a CEL expression
for the API server together with the equivalent Python check, so both reject the same resources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: a CEL expression for the API server and the same check in Python.

    Attributes:
        cel: the expression evaluated by the API server (``self`` is the object, ``oldSelf`` the
            previous value for transition rules).
        message: the error message; it names the fields concerned.
        check: the Python equivalent, given the model instance; ``None`` for transition rules,
            which only the API server can evaluate.
        field_path: a relative JSON path of the field to blame (``.from``), for the API's error.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        """The rule as an `x-kubernetes-validations` entry of the CRD schema."""
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class ApiModel(BaseModel):
    """Base of all spec and status models."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    #: Cross-field rules of this object (CEL on the API server, Python here).
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self

    def wire(self) -> dict[str, Any]:
        """The object as it is written in YAML/JSON: aliases, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def exactly_one(*fields: str) -> Rule:
    """A rule that exactly one of the given (camelCase) fields is set."""
    names = " and ".join(f"`{f}`" for f in fields)
    cel = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"
    attrs = [_attr(f) for f in fields]
    return Rule(
        cel=cel,
        message=f"exactly one of {names} must be set",
        check=lambda m: sum(getattr(m, a) is not None for a in attrs) == 1,
    )


def _attr(camel: str) -> str:
    if camel == "from":
        return "from_"
    out = []
    for ch in camel:
        if ch.isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
