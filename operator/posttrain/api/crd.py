"""Generate the CustomResourceDefinitions from the pydantic models (`posttrain crds`).

pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3.0 schema. The translation:
inline every `$ref`, turn `Optional[X]` into `X` (unset fields are simply absent), turn numeric
`exclusiveMinimum`/`exclusiveMaximum` into the v3.0 boolean form, map `dict[str, X]` to
`additionalProperties`, move defaults into the descriptions (defaults in a spec would make GitOps tools
see drift; the one schema default is the status of an object not yet observed), and attach each model's CEL rules as `x-kubernetes-validations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from posttrain.api import curriculum
from posttrain.api.base import ApiModel
from posttrain.api.metrics import Progression
from posttrain.api.resources import CATEGORY, GROUP, KINDS, VERSION, KindInfo
from posttrain.api.status import Status, unobserved_default

JSONSchema = dict[str, Any]


def _rules_by_title(model: type[ApiModel], seen: dict[str, type[ApiModel]]) -> None:
    """Collect every ApiModel reachable from `model`, keyed by its JSON-schema title."""
    if model.__name__ in seen:
        return
    seen[model.__name__] = model
    for field in model.model_fields.values():
        for arg in _types_in(field.annotation):
            if isinstance(arg, type) and issubclass(arg, ApiModel):
                _rules_by_title(arg, seen)


def _types_in(annotation: Any) -> list[Any]:
    """The annotation and every type argument nested in it."""
    out = [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_types_in(arg))
    return out


def _convert(node: Any, defs: dict[str, JSONSchema], models: dict[str, type[ApiModel]]) -> Any:
    """One node of pydantic's JSON schema in the structural OpenAPI v3.0 form (recursively)."""
    if isinstance(node, list):
        return [_convert(item, defs, models) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = _convert(defs[name], defs, models)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **_convert(extra, defs, models)}
    if "anyOf" in node:
        return _without_null_option(node, defs, models)
    return _convert_object(node, defs, models)


def _without_null_option(
    node: JSONSchema, defs: dict[str, JSONSchema], models: dict[str, type[ApiModel]]
) -> JSONSchema:
    """`Optional[X]` as `X`: an unset field is absent. Any other union is refused."""
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    if len(options) != 1:
        raise ValueError(f"unions are not supported in CRD schemas: {node}")
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    merged = _convert(options[0], defs, models)
    return {**merged, **_convert(rest, defs, models)}


def _convert_object(
    node: JSONSchema, defs: dict[str, JSONSchema], models: dict[str, type[ApiModel]]
) -> JSONSchema:
    """A schema without `$ref` or `anyOf`: its keywords converted, the default described, rules attached."""
    out: JSONSchema = {}
    for key, value in node.items():
        if key not in ("title", "$defs", "default"):
            out.update(_convert_keyword(key, value, defs, models))
    default = node.get("default")
    if default is not None and not isinstance(default, (dict, list)):
        described = out.get("description", "").rstrip()
        shown = str(default).lower() if isinstance(default, bool) else repr(default).strip("'")
        out["description"] = (described + f" Default: {shown}.").strip()
    if out.get("type") == "object" and "properties" in out:
        model = models.get(node.get("title") or "")
        if model is not None and model.rules:
            out["x-kubernetes-validations"] = [r.to_schema() for r in model.rules]
    if out.get("type") == "array" and "items" in out and "maxItems" not in out:
        out["maxItems"] = 256
    return out


def _convert_keyword(
    key: str, value: Any, defs: dict[str, JSONSchema], models: dict[str, type[ApiModel]]
) -> JSONSchema:
    """The OpenAPI v3.0 keywords that stand for one JSON Schema 2020-12 keyword (none when dropped)."""
    if key == "const":
        return {"enum": [value]}
    if key == "properties":
        return {"properties": {k: _convert(v, defs, models) for k, v in value.items()}}
    if key == "additionalProperties":
        if not isinstance(value, dict):
            return {}
        if not value:
            return {"x-kubernetes-preserve-unknown-fields": True}
        return {"additionalProperties": _convert(value, defs, models)}
    if key in ("exclusiveMinimum", "exclusiveMaximum"):
        # v3.0 spells an exclusive bound as the bound plus a boolean.
        bound = "minimum" if key == "exclusiveMinimum" else "maximum"
        return {bound: value, key: True}
    if key == "items":
        return {"items": _convert(value, defs, models)}
    return {key: value}


def openapi_schema(model: type[ApiModel]) -> JSONSchema:
    """The structural OpenAPI v3 schema of a model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    models: dict[str, type[ApiModel]] = {}
    _rules_by_title(model, models)
    defs = raw.pop("$defs", {})
    schema: JSONSchema = _strip_empty(_convert(raw, defs, models))
    return schema


def _strip_empty(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_empty(v) for k, v in node.items() if not (k == "required" and not v)}
    if isinstance(node, list):
        return [_strip_empty(v) for v in node]
    return node


def _columns(info: KindInfo) -> list[JSONSchema]:
    extra = info.extra_column
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Ready condition",
        },
        {
            "name": "Progress",
            "type": "string",
            "jsonPath": ".status.progress.summary",
            "description": "Progress of the running workload",
        },
        {
            "name": extra.name,
            "type": extra.type,
            "jsonPath": extra.json_path,
            "description": extra.description,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


@dataclass(frozen=True)
class KindNames:
    """The names and models a CRD is made of."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[ApiModel]
    status_model: type[ApiModel]
    description: str
    columns: list[JSONSchema]


def crd(info: KindInfo) -> JSONSchema:
    """The CustomResourceDefinition of one of the five workload kinds."""
    names = KindNames(
        info.kind, info.plural, info.short_names, info.spec_model, Status, info.description, _columns(info)
    )
    return definition(names)


def curriculum_crd() -> JSONSchema:
    """The CustomResourceDefinition of the Curriculum kind."""
    columns: list[JSONSchema] = [
        {"name": "Stage", "type": "string", "jsonPath": ".status.stageSummary", "description": "Stage k/N"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Ready condition",
        },
        {
            "name": "Elo",
            "type": "number",
            "jsonPath": Progression.ELO.json_path(),
            "description": Progression.ELO.description,
        },
        {"name": "Gate", "type": "string", "jsonPath": ".status.lastGate", "description": "The last gate"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    names = KindNames(
        curriculum.KIND,
        curriculum.PLURAL,
        curriculum.SHORT_NAMES,
        curriculum.CurriculumSpec,
        curriculum.CurriculumStatus,
        curriculum.DESCRIPTION,
        columns,
    )
    out = definition(names)
    spec = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in curriculum.TEMPLATE_FIELDS:
        spec[field] = brief(spec[field])
    return out


def brief(schema: Any, depth: int = 0, keep: int = 1) -> Any:
    """A schema without descriptions below `keep` levels of properties.

    The Curriculum's templates repeat the other kinds' settings; their full documentation is in those
    kinds' CRDs (`kubectl explain trainstages.spec`), and repeating it would push the Curriculum's CRD
    past what client-side `kubectl apply` can store (its last-applied annotation holds 256 KiB).
    """
    if isinstance(schema, list):
        return [brief(item, depth, keep) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description" and depth > keep:
            continue
        if key == "properties":
            out[key] = {name: brief(sub, depth + 1, keep) for name, sub in value.items()}
        else:
            out[key] = brief(value, depth, keep)
    return out


def definition(names: KindNames) -> JSONSchema:
    """A CustomResourceDefinition from its names, models and printer columns."""
    spec_model = names.spec_model
    spec_schema = openapi_schema(spec_model)
    spec_schema["description"] = spec_model.__doc__.strip() if spec_model.__doc__ else ""
    status_schema = openapi_schema(names.status_model)
    conditions = status_schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    # A default on `status` itself: a new object reads as not yet observed (see api/status.py).
    # It never shows as drift: GitOps tools compare spec, and the status subresource is the operator's.
    status_schema["default"] = unobserved_default()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "posttrain"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": names.kind,
                "listKind": f"{names.kind}List",
                "plural": names.plural,
                "singular": names.kind.lower(),
                "shortNames": list(names.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": names.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": names.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, JSONSchema]:
    """File name (`<plural>.yaml`) -> CRD, for every kind."""
    out = {f"{info.plural}.yaml": crd(info) for info in KINDS.values()}
    out[f"{curriculum.PLURAL}.yaml"] = curriculum_crd()
    return out
