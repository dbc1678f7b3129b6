"""A small OCSF event validator driven by the facts extracted from the schema.

:func:`validate` checks one projected event against ``schema_1_3_0.json``
(made by :mod:`tests.ocsf.extract_schema` from the 1.3.0 release itself):

- the class exists, and its ``category_uid``, ``class_name``,
  ``category_name``, ``type_uid`` (``class_uid * 100 + activity_id``) and
  ``type_name`` agree with it, and ``metadata.version`` is the release's;
- every attribute, at every depth, is one the class or object defines,
  is not deprecated, and has the schema's type (arrays, objects, integers
  that are not booleans, port ranges, string lengths);
- every required attribute is present, those a profile brings in only when
  ``metadata.profiles`` names that profile, and an attribute of a profile
  the event does not name is refused (the profile must be declared);
- every enum value is one of the schema's ids, and a sibling caption
  (``activity_name``, ``severity``, ``status``...) is the id's caption,
  except for 99 Other, whose caption is the source's own word;
- object constraints (``at_least_one``, ``just_one``) hold.

It returns every problem found, each one line naming the attribute path,
so a test can say all that is wrong at once. No network, no schema
checkout: only the checked-in facts.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FACTS_FILE = Path(__file__).parent / "schema_1_3_0.json"

OTHER = "99"


@cache
def facts() -> dict[str, Any]:
    """The checked-in facts of the OCSF 1.3.0 release."""
    loaded: dict[str, Any] = json.loads(FACTS_FILE.read_text())
    return loaded


def class_by_uid(uid: int) -> tuple[str, dict[str, Any]] | None:
    """The class ``uid`` names, as (schema name, facts), or None."""
    for name, klass in facts()["classes"].items():
        if klass["class_uid"] == uid and name != "base_event":
            return name, klass
    return None


def validate(event: dict[str, Any]) -> list[str]:
    """Every way ``event`` breaks the OCSF 1.3.0 schema; empty if none."""
    errors: list[str] = []
    uid = event.get("class_uid")
    found = class_by_uid(uid) if isinstance(uid, int) and not isinstance(uid, bool) else None
    if found is None:
        return [f"class_uid: {uid!r} is not a class of OCSF {facts()['version']}"]
    name, klass = found
    metadata = event.get("metadata")
    profiles: set[str] = set()
    if isinstance(metadata, dict):
        if metadata.get("version") != facts()["version"]:
            errors.append(
                f"metadata.version: {metadata.get('version')!r}, expected {facts()['version']!r}"
            )
        declared = metadata.get("profiles", [])
        if isinstance(declared, list):
            profiles = {p for p in declared if isinstance(p, str)}
    _object(errors, name, event, klass["attributes"], {}, profiles)
    _classification(errors, klass, event)
    return errors


def _classification(errors: list[str], klass: dict[str, Any], event: dict[str, Any]) -> None:
    """The class's own numbers and names, and type_uid's arithmetic."""
    expect = {
        "category_uid": klass["category_uid"],
        "class_name": klass["caption"],
        "category_name": klass["category_name"],
    }
    for key, want in expect.items():
        if key in event and event[key] != want:
            errors.append(f"{key}: {event[key]!r}, the class says {want!r}")
    activity = event.get("activity_id")
    if not isinstance(activity, int):
        return
    if event.get("type_uid") != klass["class_uid"] * 100 + activity:
        errors.append(
            f"type_uid: {event.get('type_uid')!r}, expected class_uid * 100 + activity_id"
            f" = {klass['class_uid'] * 100 + activity}"
        )


def _object(
    errors: list[str],
    path: str,
    value: dict[str, Any],
    attributes: dict[str, Any],
    constraints: dict[str, Any],
    profiles: set[str],
) -> None:
    for key, item in value.items():
        where = f"{path}.{key}"
        spec = attributes.get(key)
        if spec is None:
            errors.append(f"{where}: not an attribute of {path.rsplit('.', 1)[-1]}")
            continue
        if spec.get("profile") and spec["profile"] not in profiles:
            errors.append(
                f"{where}: belongs to profile {spec['profile']!r}, not in metadata.profiles"
            )
        if spec.get("deprecated"):
            errors.append(f"{where}: deprecated in OCSF {facts()['version']}")
        if spec.get("is_array"):
            if not isinstance(item, list):
                errors.append(f"{where}: expected an array of {spec['type']}")
                continue
            for i, element in enumerate(item):
                _value(errors, f"{where}[{i}]", element, spec, profiles)
        else:
            _value(errors, where, item, spec, profiles)
        sibling = spec.get("sibling")
        if "enum" in spec and sibling in value and not _other(key, item):
            caption = spec["enum"].get(str(item))
            if caption is not None and value[sibling] != caption:
                errors.append(f"{path}.{sibling}: {value[sibling]!r}, {key} {item} is {caption!r}")
    for key, spec in attributes.items():
        needed = spec["requirement"] == "required"
        if needed and key not in value and spec.get("profile", "") in profiles | {""}:
            errors.append(f"{path}.{key}: required, missing")
    present = [k for k in constraints.get("at_least_one", []) if k in value]
    if "at_least_one" in constraints and not present:
        errors.append(f"{path}: needs at least one of {constraints['at_least_one']}")
    if "just_one" in constraints:
        count = sum(k in value for k in constraints["just_one"])
        if count != 1:
            errors.append(f"{path}: needs exactly one of {constraints['just_one']}")


def _value(
    errors: list[str], where: str, item: Any, spec: dict[str, Any], profiles: set[str]
) -> None:
    type_name = spec["type"]
    if type_name == "object":  # free form (``unmapped``)
        if not isinstance(item, dict):
            errors.append(f"{where}: expected an object")
        return
    objects = facts()["objects"]
    if type_name in objects:
        if not isinstance(item, dict):
            errors.append(f"{where}: expected a {type_name} object")
            return
        obj = objects[type_name]
        _object(errors, where, item, obj["attributes"], obj.get("constraints", {}), profiles)
        return
    scalar = facts()["types"].get(type_name)
    if scalar is None:
        errors.append(f"{where}: type {type_name!r} is not in the facts (regenerate them)")
        return
    kind = scalar["json"]
    ok = {
        "any": True,
        "boolean": isinstance(item, bool),
        "integer": isinstance(item, int) and not isinstance(item, bool),
        "number": isinstance(item, int | float) and not isinstance(item, bool),
        "string": isinstance(item, str),
    }[kind]
    if not ok:
        errors.append(f"{where}: {item!r} is not {kind} ({type_name})")
        return
    if "range" in scalar and not scalar["range"][0] <= item <= scalar["range"][1]:
        errors.append(f"{where}: {item} outside {scalar['range']} ({type_name})")
    if "max_len" in scalar and len(item) > scalar["max_len"]:
        errors.append(f"{where}: longer than {scalar['max_len']} ({type_name})")
    if "enum" in spec and str(item) not in spec["enum"]:
        errors.append(f"{where}: {item!r} is not one of {sorted(spec['enum'], key=_num)}")


def _other(key: str, item: Any) -> bool:
    """An id whose sibling caption is the source's own word: 99 Other (and
    ``type_uid`` ``class_uid * 100 + 99``, whose caption says Other)."""
    return str(item) == OTHER and key != "type_uid"


def _num(key: str) -> tuple[int, str]:
    return (int(key), "") if key.lstrip("-").isdigit() else (1 << 30, key)
