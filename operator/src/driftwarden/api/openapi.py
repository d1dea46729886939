"""The CRD's structural schema, read and applied the way the apiserver applies it.

A deliberately small subset of OpenAPI v3 - exactly the keywords crds/modeloptimization.yaml
uses: types, properties, required, additionalProperties, enum, minimum/maximum,
minLength/maxLength, pattern, minItems/maxItems, maxProperties, x-kubernetes-int-or-string,
x-kubernetes-list-type set/map, default. CEL rules are not evaluated here (the pydantic models
mirror them; the e2e test runs them in the real apiserver). Used by the tests that prove the
models agree with the CRD and by the reference generator.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

Schema = dict[str, Any]

CRD_FILE = "crds/modeloptimization.yaml"
VERSION = "v1alpha1"


def load_crd(path: str | Path = CRD_FILE) -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(Path(path).read_text()))


def version_of(crd: dict[str, Any], version: str = VERSION) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return cast(dict[str, Any], entry)
    raise KeyError(f"the CRD has no version {version}")


def root_schema(crd: dict[str, Any], version: str = VERSION) -> Schema:
    return cast(Schema, version_of(crd, version)["schema"]["openAPIV3Schema"])


@dataclass(frozen=True)
class Field:
    """One field of the schema, e.g. path "spec.pipeline[*].prune.amountPercent"."""

    path: str
    schema: Schema
    required: bool


def iter_fields(schema: Schema, path: str = "") -> Iterator[Field]:
    """Every field below ``schema``, depth first, in declaration order."""
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        sub_path = f"{path}.{name}" if path else name
        yield Field(sub_path, sub, name in required)
        yield from _children(sub, sub_path)


def _children(schema: Schema, path: str) -> Iterator[Field]:
    if schema.get("type") == "object":
        yield from iter_fields(schema, path)
    elif schema.get("type") == "array":
        items = schema.get("items", {})
        yield from _children(items, f"{path}[*]")


def iter_schemas(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """``schema`` and every schema below it with its path (list items as ``[*]``)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from iter_schemas(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from iter_schemas(schema["items"], f"{path}[*]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from iter_schemas(extra, f"{path}[*]")


def apply_defaults(schema: Schema, value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, as the apiserver does.

    A missing property with a default gets it (a copy), then its own properties are defaulted
    in turn, so ``default: {}`` on an object brings its children's defaults along.
    """
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: Schema, value: Any) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_in_place(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default_in_place(extra, item)
    elif isinstance(value, list) and schema.get("type") == "array":
        for item in value:
            _default_in_place(schema.get("items", {}), item)


def validate(schema: Schema, value: Any, path: str = "") -> list[str]:
    """The structural errors of ``value`` (defaults not applied), apiserver-style messages.

    Unknown fields are errors, as with kubectl's default --validate=strict.
    """
    errors: list[str] = []
    _validate(schema, value, path, errors)
    return errors


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _validate(schema: Schema, value: Any, path: str, errors: list[str]) -> None:
    actual = _type_of(value)
    if schema.get("x-kubernetes-int-or-string"):
        if actual not in ("integer", "string"):
            errors.append(f"{path}: Invalid value: {actual!r}: must be an integer or a string")
            return
    elif "type" in schema:
        expected = schema["type"]
        # JSON has one number type: an integral number is an integer, not the reverse.
        if not (expected == actual or (expected == "number" and actual == "integer")):
            errors.append(f"{path}: Invalid value: {actual!r}: {path} must be of type {expected}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value: {value!r}: supported values: {schema['enum']}")
    if actual in ("integer", "number"):
        _check_number(schema, value, path, errors)
    elif actual == "string":
        _check_string(schema, value, path, errors)
    elif actual == "array":
        _check_array(schema, value, path, errors)
    elif actual == "object":
        _check_object(schema, value, path, errors)


def _check_number(schema: Schema, value: float, path: str, errors: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: Invalid value: {value}: should be >= {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: Invalid value: {value}: should be <= {schema['maximum']}")


def _check_string(schema: Schema, value: str, path: str, errors: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: Invalid value: {value!r}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{path}: Invalid value: {value!r}: should match {schema['pattern']!r}")


def _check_array(schema: Schema, value: list[Any], path: str, errors: list[str]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: Invalid value: {len(value)}: at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']}")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        keys: list[Any] = value
    elif list_type == "map":
        map_keys = schema.get("x-kubernetes-list-map-keys", [])
        keys = [tuple(item.get(k) for k in map_keys) for item in value if isinstance(item, dict)]
    else:
        keys = []
    for index, key in enumerate(keys):
        if key in keys[:index]:
            errors.append(f"{path}[{index}]: Duplicate value: {key!r}")
    for index, item in enumerate(value):
        _validate(schema.get("items", {}), item, f"{path}[{index}]", errors)


def _check_object(schema: Schema, value: dict[str, Any], path: str, errors: list[str]) -> None:
    prefix = f"{path}." if path else ""
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{prefix}{name}: Required value")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{path}: Too many: {len(value)}: at most {schema['maxProperties']}")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    for name, item in value.items():
        if name in properties:
            _validate(properties[name], item, f"{prefix}{name}", errors)
        elif isinstance(extra, dict):
            _validate(extra, item, f"{prefix}{name}", errors)
        elif not preserve and (properties or extra is False):
            errors.append(f'unknown field "{prefix}{name}"')
