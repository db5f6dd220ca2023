"""The HPOStudy CustomResourceDefinition, generated from the spec model.

One source: the pydantic model that validates ``hpo run`` also yields the
CRD's OpenAPI schema, so the API server and the Python validation enforce the
same bounds. ``hpo crd`` prints it; ``manifests/crd.yaml`` is that output.
"""

from __future__ import annotations

from typing import Any

import yaml

from hpo.study.spec import API_GROUP, DNS_LABEL, KIND, StudySpec

PLURAL = "hpostudies"
SINGULAR = "hpostudy"
VERSION = "v1alpha1"
SHORT_NAMES = ["hpo", "hpos"]

# Keys of JSON Schema that a structural OpenAPI v3 schema does not take.
_DROP = {"title", "$defs", "examples"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s and rewrite JSON Schema idioms into their OpenAPI v3 forms."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    out: dict[str, Any] = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        kinds = [a for a in any_of if a.get("type") != "null"]
        if len(kinds) == 1 and len(any_of) == 2:
            out.update(_resolve(kinds[0], defs))
            out["nullable"] = True
        else:
            out["anyOf"] = _resolve(any_of, defs)
    for key, value in node.items():
        if key in _DROP or key == "anyOf":
            continue
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out["properties"] = {k: _resolve(v, defs) for k, v in value.items()}
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out["additionalProperties"] = _resolve(value, defs)
            # ``false`` is the API server's pruning already.
        elif key == "default" and (value is None or (isinstance(value, dict | list) and value)):
            # Object defaults are applied by the Python model, not the API server; a null
            # default would make ``has()`` in the CEL rules below true for an unset field.
            continue
        elif key == "items":
            out["items"] = _resolve(value, defs)
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {"name": "Trainings", "type": "string", "jsonPath": ".status.trainings"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.counts.running"},
    {"name": "Best MAE", "type": "number", "jsonPath": ".status.best.maeMean"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


#: The study's name becomes pod-name prefixes and label values: a DNS label (<= 63),
#: stricter than the DNS subdomain (<= 253) the API server asks of any object.
NAME_RULE = {
    "rule": f"size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS_LABEL}')",
    "message": "metadata.name must be a DNS label: at most 63 lower-case letters, digits "
    "and '-', starting and ending with a letter or digit",
}


def spec_schema() -> dict[str, Any]:
    raw = StudySpec.model_json_schema(by_alias=True)
    return _resolve(raw, raw.get("$defs", {}))


def crd() -> dict[str, Any]:
    spec = spec_schema()
    spec["description"] = "A two-stage hyperparameter optimisation study; see the README."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `hpo crd` from operator/hpo/study/spec/; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
