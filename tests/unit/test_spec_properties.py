"""Property tests over the spec model (hypothesis, bounded and derandomized for CI).

1. No input, however malformed, makes parsing raise anything but ``SpecError``.
2. The CRD's openAPIV3Schema (what ``kubectl apply`` is checked against) and the
   Python model accept and reject the same studies: one hypothesis run per spec
   field and per section (values drawn from the schema: on and off its bounds,
   enums and patterns, wrong types, duplicates, unknown keys), plus a
   deterministic sweep of every scalar's boundary values. Checked by mutation:
   removing any one of 14 schema rules (an enum, uniqueness, a bound, a pattern,
   a CEL rule...) from the evaluated schema makes one of these tests fail.

How the schema is evaluated here: with ``jsonschema``'s Draft 4 validator (the
draft of OpenAPI v3's boolean ``exclusiveMinimum``), after these translations of
the Kubernetes extensions: ``nullable: true`` admits null;
``x-kubernetes-list-type: set`` is ``uniqueItems``; an object with ``properties``
admits no other keys (kubectl's default strict field validation refuses unknown
fields; the model forbids them); ``x-kubernetes-preserve-unknown-fields`` admits
anything of the type; defaults are kept (JSON Schema ignores them; the CEL
twins read them, as the API server applies them before validating). ``x-kubernetes-validations`` (CEL) rules are
evaluated by the Python twins in ``CEL`` below; every rule in the CRD must have
one, so a new rule cannot go unchecked. CEL's ``has(f)`` is taken as "present and
not null".

What is NOT compared: three cross-field rules that a schema cannot state (and
that CEL could only state with per-item loops whose cost the API server bounds):
a label also listed as a feature, ``referenceValues`` naming a non-label and
``result.thresholds`` naming a non-label. The API server admits such a study;
the operator then refuses it with a ``Valid=False`` condition. Where the model
alone refuses, every one of its problems must be one of these three
(``PYTHON_ONLY``). Strings hold no newline (Python's ``re`` lets ``$`` match
before a final newline, Go's RE2 does not), and numbers are JSON numbers
(no NaN or infinity; an integer field is given JSON integers, as Draft 4 means
them).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.study import FEATURES, LABELS, study_dict
from hpo.kube.crd import crd
from hpo.study.spec import IPV4, SpecError, load_study, parse_study

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- 1. only SpecError ---------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: YAML has .nan and .inf
    | st.text(max_size=12)
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

#: Every section and field of the spec (camelCase), plus the resource's own fields.
FIELD_PATHS = [
    "apiVersion",
    "kind",
    "metadata",
    "metadata.name",
    "metadata.namespace",
    "spec",
]


def _collect_paths(node: dict[str, Any], prefix: str) -> None:
    for key, sub in node.get("properties", {}).items():
        FIELD_PATHS.append(f"{prefix}.{key}")
        _collect_paths(sub, f"{prefix}.{key}")


_SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
_collect_paths(_SCHEMA["properties"]["spec"], "spec")


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    return raw


def _parses_or_spec_error(raw: Any) -> None:
    try:
        parse_study(raw)
    except SpecError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@BOUNDED
@given(raw=json_like)
def test_any_document_parses_or_raises_spec_error(raw: Any) -> None:
    _parses_or_spec_error(raw)


@BOUNDED
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(FIELD_PATHS) | st.text(max_size=8), json_like), max_size=4
    )
)
def test_any_field_value_parses_or_raises_spec_error(changes: list[tuple[str, Any]]) -> None:
    raw = study_dict()
    for path, value in changes:
        _set(raw, path if path.startswith(("spec", "metadata")) else f"spec.{path}", value)
    _parses_or_spec_error(raw)


@BOUNDED
@given(text=st.text(max_size=200) | json_like.map(lambda v: yaml.safe_dump(v)))
def test_any_study_file_loads_or_raises_spec_error(text: str, tmp_path_factory: Any) -> None:
    f = tmp_path_factory.mktemp("study") / "study.yaml"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_study(f)
    except SpecError as exc:
        assert exc.problems


# -- 2. the CRD schema and the model agree ----------------------------------------------


def _default(schema: dict[str, Any], key: str) -> Any:
    return schema["properties"][key].get("default")


def _has(obj: dict[str, Any], key: str) -> bool:
    return obj.get(key) is not None


#: Python twins of the CRD's CEL rules: ``rule -> (self, schema) -> bool``.
CEL: dict[str, Callable[[Any, dict[str, Any]], bool]] = {
    "self.min <= self.max": lambda s, sch: (
        s.get("min", _default(sch, "min")) <= s.get("max", _default(sch, "max"))
    ),
    "has(self.maxMae) || has(self.maxPercent)": lambda s, sch: (
        _has(s, "maxMae") or _has(s, "maxPercent")
    ),
    "self.type != 's3' || (has(self.endpoint) && has(self.bucket))": lambda s, sch: (
        s.get("type", _default(sch, "type")) != "s3" or (_has(s, "endpoint") and _has(s, "bucket"))
    ),
    "!has(self.bucket) || !self.bucket.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')": (
        lambda s, sch: not _has(s, "bucket") or re.search(IPV4, s["bucket"]) is None
    ),
    (
        "size(self.metadata.name) <= 63 && "
        "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    ): lambda s, sch: (
        len(s["metadata"]["name"]) <= 63
        and re.search("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", s["metadata"]["name"]) is not None
    ),
}

#: Problems only the model finds (see the module docstring): the three cross-field rules.
PYTHON_ONLY = [
    r"^spec\.dataset: column '.*' is listed both as a label and as a feature$",
    r"^spec\.dataset: referenceValues names '.*', which is not a label$",
    r"^spec: result\.thresholds names '.*', which is not one of the labels",
    r"^spec\.dataset: categorical names '.*', a label: labels are numbers to predict$",
    r"^spec\.dataset: categorical names '.*', which is not one of the features$",
    # Keys of trainer.podLabels / podAnnotations: CEL over a map's keys costs more than
    # the API server's budget (their length is unbounded); the values are in the schema.
    r"^spec\.trainer\.pod(Labels|Annotations): '.*' is not a valid (label|annotation) key",
    r"^spec\.trainer\.pod(Labels|Annotations): (label|annotation) '.*' cannot be set here",
    r"^spec\.trainer\.podAnnotations: annotations take \d+ bytes",
    # trainer.resources is a free-form ResourceRequirements in the schema
    r"^spec\.trainer\.resources: (limits|requests)\.nvidia\.com/gpu must",
]


def _to_draft4(node: Any) -> Any:
    """The CRD schema as plain JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [_to_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "x-kubernetes-preserve-unknown-fields"):
            continue
        if key == "nullable":
            continue
        if key == "x-kubernetes-list-type":
            assert value == "set", value
            out["uniqueItems"] = True
        elif key == "x-kubernetes-validations":
            out[key] = value
        elif key == "properties":
            out[key] = {k: _to_draft4(v) for k, v in value.items()}
        else:
            out[key] = _to_draft4(value)
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["additionalProperties"] = False
    return out


def _cel_keyword(
    validator: Any, rules: list[dict[str, str]], instance: Any, schema: dict[str, Any]
) -> Any:
    if not isinstance(instance, dict):
        return
    for rule in rules:
        try:
            ok = CEL[rule["rule"]](instance, schema)
        except (TypeError, KeyError):
            ok = True  # a wrongly typed field: its schema error is reported, CEL is not run
        if not ok:
            yield jsonschema.ValidationError(rule["message"])


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-validations": _cel_keyword}
)
_DRAFT4 = _to_draft4(_SCHEMA)
_DRAFT4["properties"].pop("status")  # the spec is compared; status is the operator's
VALIDATOR = _Validator(_DRAFT4)


def test_every_cel_rule_has_a_python_twin_and_the_schema_is_valid_draft4() -> None:
    rules = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            rules.extend(r["rule"] for r in node.get("x-kubernetes-validations", []))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(_SCHEMA)
    assert set(rules) == set(CEL), set(rules) ^ set(CEL)
    jsonschema.Draft4Validator.check_schema(_DRAFT4)


# Values are drawn from the schema itself: near its bounds, from its enums and
# patterns, and off them (wrong types, near-misses), so both verdicts are common.

_text = st.text(
    alphabet=st.characters(blacklist_characters="\n\r", max_codepoint=0x2FF), max_size=10
)
_word = st.text(alphabet="abcxyzABC019._-:/ é", min_size=1, max_size=12)
_names = st.sampled_from(LABELS) | st.sampled_from([*FEATURES, "other", ""]) | _text
_keys = st.sampled_from(LABELS) | _names
_junk = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.just(1.5)
    | _text
    | st.just([])
    | st.just({})
)


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` five times in six, a wrongly typed value otherwise (``a | b`` would
    flatten both into one choice among all their branches)."""
    return st.integers(0, 5).flatmap(lambda i: _junk if i == 0 else good)


def _valid_scalar(schema: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    """Values a scalar schema surely admits (to build lists with a valid duplicate)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("type") == "integer" and "minimum" in schema and "maximum" in schema:
        return st.sampled_from([schema["minimum"], schema["maximum"]])
    if schema.get("type") == "string" and not schema.get("pattern"):
        return st.sampled_from(LABELS)
    return None


def _values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if kind == "integer":
        lo = schema.get("minimum", -5)
        hi = schema.get("maximum", lo + 1000)
        edges = st.sampled_from([lo - 1, lo, hi, hi + 1])
        good = edges | edges | st.integers(lo - 2, hi + 2)
        return _mostly(good | good | good | good.map(float))
    if kind == "number":
        lo, hi = schema.get("minimum", -1e6), schema.get("maximum", 1e6)
        floats = st.floats(lo - 1, hi + 1, allow_nan=False, allow_infinity=False)
        edges = st.sampled_from([lo, hi, 0, -1, 2])
        zero = st.sampled_from([0, 0.0])  # the boundary of most rules
        good = edges | edges | zero | floats | st.integers(int(lo) - 1, int(hi) + 1)
        return _mostly(good)
    if kind == "boolean":
        return _mostly(st.booleans())
    if kind == "string":
        if "enum" in schema:
            enum = schema["enum"]
            near = st.sampled_from(enum).map(lambda v: v.swapcase())  # 'GP' -> 'gp'
            return _mostly(st.sampled_from(enum) | near)
        options = [_word, _names, _word]
        if "minLength" in schema:
            options.append(st.just(""))
        if "pattern" in schema:
            matching = st.from_regex(schema["pattern"], fullmatch=True)
            options[:0] = [matching.filter(lambda s: "\n" not in s)] * 2
            options.append(
                st.sampled_from(["10.0.0.1", "minio:9000", "a..b", "abc", "x" * 70, "../x", "/abs"])
            )
        return _mostly(st.one_of(*options))
    if kind == "array":
        items = _values(schema.get("items", {}))
        lists = st.lists(items, max_size=4) | st.lists(items, min_size=1, max_size=2)
        valid = _valid_scalar(schema.get("items", {}))
        if valid is not None:  # a duplicate of a valid item: only uniqueness is wrong
            lists = lists | st.lists(valid, min_size=1, max_size=2).map(lambda v: v + v[:1])
        return _mostly(lists)
    if kind == "object":
        if "properties" in schema:
            return _objects(schema)
        if "additionalProperties" in schema:
            return _mostly(
                st.dictionaries(_keys, _values(schema["additionalProperties"]), max_size=3)
            )
        return _mostly(st.dictionaries(_text, scalars.filter(lambda v: v == v), max_size=2))
    return _junk


def _objects(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    props = schema["properties"]
    required = set(schema.get("required", []))
    fixed = {k: _values(v) for k, v in props.items() if k in required}
    optional = {k: _values(v) for k, v in props.items() if k not in required}
    base = st.fixed_dictionaries(fixed, optional=optional)
    extra = st.fixed_dictionaries({**fixed, "unknownField": st.integers()}, optional=optional)
    return _mostly(base | base | base | extra)


#: One property run per field (and per section, replaced whole), so that each field
#: gets drawn values of its own rather than a share of 200 spread over ~80 fields.
TARGETS = ["metadata.name", *(p for p in FIELD_PATHS if p.startswith("spec."))]


def _node(path: str) -> dict[str, Any]:
    node = _SCHEMA["properties"]["spec"]
    for part in path.split(".")[1:]:
        node = node["properties"][part]
    return node


def _draw_value(draw: st.DrawFn, path: str) -> Any:
    if path == "metadata.name":
        names = st.sampled_from(["ok-name", "a.b", "UPPER", "x" * 63, "x" * 64, "-x", "x-"])
        return draw(names | names | _text)
    return draw(_values(_node(path)))


@st.composite
def studies(draw: st.DrawFn, target: str) -> dict[str, Any]:
    """A valid study with ``target`` set to a drawn value or removed, and sometimes one
    more field of the same section changed (for the cross-field rules)."""
    raw = study_dict()
    if draw(st.integers(0, 9)) == 0 and target.count(".") > 1:
        parent, _, key = target.rpartition(".")
        holder: Any = raw
        for part in parent.split("."):
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder.pop(key, None)  # absent rather than set
    else:
        _set(raw, target, _draw_value(draw, target))
    section = ".".join(target.split(".")[:2])
    siblings = [p for p in TARGETS if p.startswith(section + ".") and p != target]
    if siblings and draw(st.integers(0, 3)) == 0:
        other = draw(st.sampled_from(siblings))
        if not target.startswith(other + ".") and not other.startswith(target + "."):
            _set(raw, other, _draw_value(draw, other))
    return raw


def _python_verdict(raw: dict[str, Any]) -> tuple[bool, list[str]]:
    try:
        parse_study(copy.deepcopy(raw))
    except SpecError as exc:
        return False, exc.problems
    return True, []


@pytest.mark.parametrize("target", TARGETS)
def test_crd_schema_and_model_accept_and_reject_the_same_studies(target: str) -> None:
    seen: Counter[str] = Counter()
    node = _node(target) if target.startswith("spec.") else {}
    # Lists and maps hold more ways to be wrong than one scalar: more examples there.
    examples = 50 if node.get("type") in ("array", "object") else 20

    @settings(BOUNDED, max_examples=examples)
    @given(raw=studies(target))
    def agree(raw: dict[str, Any]) -> None:
        ok, problems = _python_verdict(raw)
        errors = [e.message for e in VALIDATOR.iter_errors(raw)]
        if ok:
            assert not errors, f"the model accepts, the CRD refuses: {errors}\n{raw['spec']}"
            seen["both accept"] += 1
        elif errors:
            seen["both refuse"] += 1
        else:
            only = [p for p in problems if not any(re.search(r, p) for r in PYTHON_ONLY)]
            assert not only, f"the CRD accepts, the model refuses: {only}\n{raw['spec']}"
            seen["python-only rule"] += 1

    agree()
    if "properties" not in node:  # a whole section is rarely drawn valid throughout
        assert seen["both accept"] and seen["both refuse"], seen


def _edges(node: dict[str, Any]) -> list[Any]:
    """Each scalar's boundary values, on and just off every limit the schema states."""
    kind = node.get("type")
    if kind in ("integer", "number"):
        lo, hi = node.get("minimum"), node.get("maximum")
        values: list[Any] = [0, 0.0, -1, True, "1", None]
        for limit in (lo, hi):
            if limit is not None:
                values += [limit - 1, limit, limit + 1, float(limit), limit - 0.5, limit + 0.5]
        return values
    if kind == "string":
        values = ["", "x", "a" * 254, 1, None, *node.get("enum", [])]
        values += [v.swapcase() for v in node.get("enum", [])]
        return values
    if kind == "boolean":
        return [True, False, 0, 1, "true", None]
    return []


def test_every_scalar_field_agrees_at_its_edges() -> None:
    """Deterministic complement of the property: bounds met exactly and missed by one."""
    checked = 0
    for target in TARGETS[1:]:
        for value in _edges(_node(target)):
            raw = _set(study_dict(), target, value)
            ok, problems = _python_verdict(raw)
            errors = [e.message for e in VALIDATOR.iter_errors(raw)]
            assert ok == (not errors), (target, value, problems, errors)
            checked += 1
    assert checked > 400


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.dataset.features", ["W_um", "Id_mA"]),
        ("spec.dataset.referenceValues", {"nope": 1.0}),
        ("spec.result.thresholds", {"Vout": {"maxMae": 1}}),
    ],
)
def test_the_python_only_rules_are_exactly_the_excluded_ones(path: str, value: Any) -> None:
    """Guards the exclusion list: each excluded rule is real and the schema admits it."""
    raw = _set(study_dict(), path, value)
    ok, problems = _python_verdict(raw)
    assert not ok and len(problems) == 1
    assert any(re.search(r, problems[0]) for r in PYTHON_ONLY), problems
    assert not list(VALIDATOR.iter_errors(raw))
