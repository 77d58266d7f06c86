"""The official OpenAI spec as response validators: the part of it these tests read, vendored
in ``tests/vendor/openai-openapi/`` (its README says where from and how it was cut).

The spec is OpenAPI 3.1 with a few 3.0 leftovers (``exclusiveMinimum: true``,
``nullable: true``), rewritten into JSON Schema 2020-12 before use. It is loaded once per
test session.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "vendor" / "openai-openapi" / "openapi.yaml"
_URI = "urn:openai-openapi"


def _normalise(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _normalise(v) for k, v in node.items()}
    if out.get("exclusiveMinimum") is True and "minimum" in out:
        out["exclusiveMinimum"] = out.pop("minimum")
    elif isinstance(out.get("exclusiveMinimum"), bool):
        out.pop("exclusiveMinimum")
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = _URI + out["$ref"]
    return out


@cache
def spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open(encoding="utf-8") as fh:
        raw = yaml.load(fh, Loader=loader)
    normalised: dict[str, Any] = _normalise(raw)
    return normalised


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(spec(), default_specification=DRAFT202012)
    return Registry().with_resource(_URI, resource)


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    """The JSON schema of ``method path``'s response (path as in the spec: ``/files/{file_id}``)."""
    operation = spec()["paths"][path][method.lower()]
    content = operation["responses"][status]["content"]
    media = content.get("application/json") or next(iter(content.values()))
    schema: dict[str, Any] = media["schema"]
    return schema


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"{_URI}#/components/schemas/{name}"}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``instance`` does not match."""
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise errors[0]


def azure_variant(name: str) -> dict[str, Any]:
    """A component schema with Azure's documented differences (reference §2.3): statuses
    ``pending``/``created`` and file ``pending``/``running``, ``organisation_id`` instead of
    ``organization_id``, ``result_files`` null until done, no ``method``/``metadata``."""
    schema = copy.deepcopy(spec()["components"]["schemas"][name])
    props = schema.get("properties", {})
    if "status" in props and "enum" in props["status"]:
        extra = ["pending", "created"] if name == "FineTuningJob" else ["pending", "running"]
        props["status"]["enum"] = [*props["status"]["enum"], *extra]
    if name == "FineTuningJob":
        schema["required"] = [r for r in schema["required"] if r != "organization_id"]
        props["organisation_id"] = {"type": ["string", "null"]}
        props["result_files"] = {"anyOf": [props["result_files"], {"type": "null"}]}
        for field in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            props["hyperparameters"]["properties"][field] = {
                "type": "number",
                "exclusiveMinimum": 0,
            }
    return schema
