"""Extract the OCSF facts tracehound's projection must respect from the schema itself.

Regenerates ``tests/ocsf/schema_1_3_0.json`` (the file the OCSF validation
test reads; the test itself never touches the network) from the
``ocsf/ocsf-schema`` repository at its ``1.3.0`` tag::

    git clone https://github.com/ocsf/ocsf-schema /tmp/ocsf-schema
    python -m tests.ocsf.extract_schema /tmp/ocsf-schema            # git tag 1.3.0
    python -m tests.ocsf.extract_schema /tmp/ocsf-schema --ref ''   # the work tree as is

The schema's source files are not the schema: a class inherits attributes
from its parent (``extends``: ``process_activity`` -> ``system`` ->
``base_event``), pulls more in through ``$include`` (``includes/*.json``
and ``profiles/*.json``), and every attribute's type, array-ness and the
base of its enum live in ``dictionary.json``. This script does that
compiling (the subset of the OCSF server's rules these facts need) and
writes, for each class in :data:`CLASSES` and each object reachable from
them: the class's uid (``category_uid * 1000 + uid``), its category,
caption and every attribute with its requirement, type, enum (id ->
caption), array flag, sibling and, for an attribute that only a profile
brings in, that profile's name; for objects, also their constraints
(``at_least_one``, ``just_one``).

What can go wrong: a class named in :data:`CLASSES` that the release does
not have, or an attribute missing from the dictionary, stops the script
with a one-line error naming it; nothing is guessed.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "schema_1_3_0.json"
REF = "1.3.0"

CLASSES = (
    # projected today
    "process_activity",
    "file_activity",
    "network_activity",
    # the classes issue 10's new records map to (see agent/evidence/ocsf.py)
    "kernel_extension",
    "module_activity",
    "kernel_activity",
    "memory_activity",
    "base_event",
)
"""The event classes to extract, by their schema ``name``."""

Reader = Callable[[str], Any]


class SchemaError(Exception):
    """The schema checkout does not hold what the extraction needs."""


def reader(repo: Path, ref: str) -> tuple[Reader, Callable[[str], list[str]], str]:
    """Functions that read a JSON file and list a folder of the schema at ``ref``
    (a git tag or commit; ``""``: the plain files), and the commit read."""
    if ref:

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                why = (done.stderr.strip().splitlines() or ["failed"])[0]
                raise SchemaError(f"git {' '.join(args)}: {why}")
            return done.stdout

        commit = git("rev-parse", f"{ref}^{{commit}}").strip()

        def read_git(path: str) -> Any:
            return json.loads(git("show", f"{commit}:{path}"))

        def list_git(folder: str) -> list[str]:
            out = git("ls-tree", "-r", "--name-only", commit, folder)
            return [line for line in out.splitlines() if line.endswith(".json")]

        return read_git, list_git, commit

    def read_file(path: str) -> Any:
        return json.loads((repo / path).read_text())

    def list_files(folder: str) -> list[str]:
        return sorted(str(p.relative_to(repo)) for p in (repo / folder).rglob("*.json"))

    return read_file, list_files, "work tree"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested dicts merged (as enums are: a class's
    activity ids join the dictionary's 0 Unknown and 99 Other)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _enum_order(key: str) -> tuple[int, int, str]:
    """Numeric enum ids in numeric order, then the few string-valued enums (TLP)."""
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)


class Compiler:
    """Resolves ``extends``, ``$include`` and the dictionary for classes and objects."""

    def __init__(self, read: Reader, listing: Callable[[str], list[str]]) -> None:
        self.read = read
        dictionary = read("dictionary.json")
        self.dictionary: dict[str, Any] = dictionary["attributes"]
        self.types: dict[str, Any] = dictionary["types"]["attributes"]
        self.categories: dict[str, Any] = read("categories.json")["attributes"]
        self.events = {self._name(p): p for p in listing("events")}
        self.objects = {self._name(p): p for p in listing("objects")}

    def _name(self, path: str) -> str:
        return str(self.read(path)["name"])

    def _attributes(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A file's attributes with its ``$include`` files merged under them."""
        merged: dict[str, Any] = {}
        for path in raw.get("$include", []):
            included = self.read(path)
            attrs = self._attributes(included.get("attributes", {}))
            if path.startswith("profiles/"):
                attrs = {k: {**v, "profile": included["name"]} for k, v in attrs.items()}
            merged = deep_merge(merged, attrs)
        for name, spec in raw.items():
            if name == "$include":
                continue
            prior = merged.get(name, {})
            prior.pop("profile", None)  # the file itself defines it: not only a profile's
            merged[name] = deep_merge(prior, spec)
        return merged

    def _chain(self, kind: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the merged source file, the merged attributes) of a class or object."""
        table = self.events if kind == "class" else self.objects
        if name not in table:
            raise SchemaError(f"{kind} {name!r}: not in this schema release")
        raw = self.read(table[name])
        attrs = self._attributes(raw.get("attributes", {}))
        parent = raw.get("extends")
        if parent:
            parent_raw, parent_attrs = self._chain(kind, parent)
            raw = {**parent_raw, **{k: v for k, v in raw.items() if k != "attributes"}}
            merged = dict(parent_attrs)
            for key, spec in attrs.items():
                prior = copy.deepcopy(merged.get(key, {}))
                if "profile" not in spec:
                    prior.pop("profile", None)
                merged[key] = deep_merge(prior, spec)
            attrs = merged
        return raw, attrs

    def _typed(self, owner: str, attrs: dict[str, Any]) -> dict[str, Any]:
        """Each attribute with its dictionary entry under it, reduced to the facts."""
        out: dict[str, Any] = {}
        for name in sorted(attrs):
            if name not in self.dictionary:
                raise SchemaError(f"{owner}.{name}: not in dictionary.json")
            spec = deep_merge(self.dictionary[name], attrs[name])
            fact: dict[str, Any] = {
                "type": spec["type"],
                "requirement": spec.get("requirement", "optional"),
            }
            if spec.get("is_array"):
                fact["is_array"] = True
            if "enum" in spec:
                fact["enum"] = {
                    k: spec["enum"][k].get("caption", "")
                    for k in sorted(spec["enum"], key=_enum_order)
                }
            for key in ("sibling", "profile"):
                if key in spec:
                    fact[key] = spec[key]
            if "@deprecated" in spec:
                fact["deprecated"] = True
            out[name] = fact
        return out

    def scalar(self, type_name: str) -> dict[str, Any]:
        """A scalar type reduced to its JSON base type and bounds."""
        spec = self.types[type_name]
        base = type_name
        while "type" in self.types[base]:
            base = self.types[base]["type"]
        json_type = {
            "boolean_t": "boolean",
            "float_t": "number",
            "integer_t": "integer",
            "long_t": "integer",
            "json_t": "any",
            "string_t": "string",
        }[base]
        fact: dict[str, Any] = {"json": json_type}
        for key in ("range", "max_len"):
            if key in spec:
                fact[key] = spec[key]
        return fact

    def klass(self, name: str) -> dict[str, Any]:
        raw, attrs = self._chain("class", name)
        category = raw.get("category", "other")
        category_uid = self.categories[category]["uid"] if category in self.categories else 0
        uid = raw.get("uid", 0)
        class_uid = category_uid * 1000 + uid if name != "base_event" else 0
        category_name = (
            self.categories[category]["caption"] if category in self.categories else "Uncategorized"
        )
        typed = self._typed(name, attrs)
        # As the OCSF server compiles them: a class's category_uid, class_uid
        # and type_uid take exactly its own values (type_uid one per activity).
        typed["category_uid"]["enum"] = {str(category_uid): category_name}
        typed["class_uid"]["enum"] = {str(class_uid): raw["caption"]}
        typed["type_uid"]["enum"] = {
            str(class_uid * 100 + int(k)): f"{raw['caption']}: {caption}"
            for k, caption in typed["activity_id"]["enum"].items()
        }
        return {
            "caption": raw["caption"],
            "class_uid": class_uid,
            "category_uid": category_uid,
            "category_name": category_name,
            "attributes": typed,
        }

    def obj(self, name: str) -> dict[str, Any]:
        raw, attrs = self._chain("object", name)
        fact: dict[str, Any] = {"caption": raw["caption"]}
        if raw.get("constraints"):
            fact["constraints"] = raw["constraints"]
        fact["attributes"] = self._typed(name, attrs)
        return fact


def extract(repo: Path, ref: str) -> dict[str, Any]:
    """The facts: classes, every object they reach, and the scalar types."""
    read, listing, commit = reader(repo, ref)
    compiler = Compiler(read, listing)
    version = read("version.json")["version"]
    classes = {name: compiler.klass(name) for name in CLASSES}
    objects: dict[str, Any] = {}
    todo = [a["type"] for c in classes.values() for a in c["attributes"].values()]
    while todo:
        name = todo.pop()
        if name in objects or name in compiler.types or name == "object":
            continue
        objects[name] = compiler.obj(name)
        todo += [a["type"] for a in objects[name]["attributes"].values()]
    return {
        "version": version,
        "source": {"repository": "ocsf/ocsf-schema", "ref": ref, "commit": commit},
        "classes": classes,
        "objects": dict(sorted(objects.items())),
        "types": {name: compiler.scalar(name) for name in sorted(compiler.types)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a clone of github.com/ocsf/ocsf-schema")
    parser.add_argument("--ref", default=REF, help="tag or commit ('' for the work tree)")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        facts = extract(args.repo, args.ref)
    except (SchemaError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"extract_schema: {args.repo}: {exc}", file=sys.stderr)
        return 1
    args.output.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    print(f"{args.output}: {len(facts['classes'])} classes, {len(facts['objects'])} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
