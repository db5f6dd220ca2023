"""Reading study files: YAML as the API server reads it, validation, and messages that
name each wrong field by its camelCase path."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hpo.study.spec.base import DNS_LABEL_RE, PATTERN_HELP, SpecError
from hpo.study.spec.resource import Study


def _format_error(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    # pydantic prefixes messages from our validators; the field path says enough.
    msg = msg.removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        if pattern in PATTERN_HELP:
            msg = f"{err['input']!r} {PATTERN_HELP[pattern]}"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known field"
    inp = err.get("input")
    if err["type"] == "extra_forbidden":
        known = _known_fields(err["loc"][:-1])
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        if close:
            msg = f"{msg}; did you mean {close[0]!r}?"
    elif (
        not isinstance(inp, dict | list)
        and err["type"] not in ("missing", "value_error", "string_pattern_mismatch")
        and "(got" not in msg
    ):
        msg = f"{msg} (got {inp!r})"
    return f"{loc}: {msg}" if loc else msg


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The camelCase field names valid at ``loc``, for did-you-mean hints."""
    model: Any = Study
    for part in loc:
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        field = fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return [f.alias or n for n, f in model.model_fields.items()]


def study_resource(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an API object that make the study (no ``status``)."""
    return {k: obj.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}


def parse_study(raw: Any) -> Study:
    """Validate a resource dict; raises ``SpecError`` naming every wrong field."""
    if not isinstance(raw, dict):
        raise SpecError(["the study file must be a YAML mapping (an HPOStudy resource)"])
    try:
        return Study.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_format_error(e) for e in exc.errors()]) from None


class _Loader(yaml.SafeLoader):
    """YAML as the API server reads it: ``1e-4`` is a number (PyYAML's YAML 1.1
    resolver wants a dot and would hand the strict model a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9][0-9_]*)?\.?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


#: Most nodes a study file may expand to once its aliases are followed. A real study
#: has a few hundred; an alias bomb ("billion laughs") has billions, which cost nothing
#: to parse (aliases are shared references) but exhaust memory wherever the study is
#: copied or dumped (saving ``study.yaml``, the ledger's ``Study`` sheet).
MAX_YAML_NODES = 100_000


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes ``root`` stands for with every alias followed, counted without
    expanding anything (each shared node's count is computed once); a node that
    contains itself counts as too many."""
    counts: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in counts:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if children_done:
            open_.discard(id(node))
            total = 1 + sum(counts[id(c)] for c in children)
            counts[id(node)] = min(total, MAX_YAML_NODES + 1)
            continue
        if id(node) in open_:
            return MAX_YAML_NODES + 1  # recursive: infinitely many
        open_.add(id(node))
        stack.append((node, True))
        for c in children:
            if id(c) in open_:
                return MAX_YAML_NODES + 1
            if id(c) not in counts:
                stack.append((c, False))
    return counts[id(root)]


def _duplicate_key(root: yaml.Node) -> str | None:
    """The first key given twice in one mapping, with both lines; None if there is none.

    PyYAML keeps the last value silently, so a study file with ``epochs`` twice would run
    with a value its author may not have meant; the API server refuses such a file too.
    """
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                first = lines.setdefault((key.tag, key.value), line)
                if first != line:
                    return (
                        f"key {key.value!r} appears twice in one mapping (lines {first} and "
                        f"{line}); keep one"
                    )
        if isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return None


def load_yaml(text: str) -> Any:
    """Parse a study file's YAML (``yaml.safe_load``, plus YAML 1.2 exponent floats).

    The one loader of study files (``hpo validate``, ``hpo run``, ``hpo report``):
    a document expanding past ``MAX_YAML_NODES`` through its aliases, or giving a key
    twice in one mapping, is refused before anything is built from it.
    """
    loader = _Loader(text)  # a SafeLoader subclass: safe
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_NODES:,} nodes through its "
                "aliases (*name) or refers to itself; write the values out instead"
            )
        duplicate = _duplicate_key(node)
        if duplicate is not None:
            raise yaml.YAMLError(duplicate)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_study(path: Path | str) -> Study:
    """Read a study file; a relative local dataset path is taken from the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(["study file not found"]) from None
    except IsADirectoryError:
        raise SpecError(["is a folder, not a study file"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            [
                f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start}); save the study file as UTF-8"
            ]
        ) from None
    except OSError as exc:
        raise SpecError([f"cannot read the study file: {exc.strerror or exc}"]) from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML: {exc}"]) from None
    except RecursionError:
        raise SpecError(["not valid YAML: nested too deeply"]) from None
    study = parse_study(raw)
    ds = study.spec.dataset
    if "://" not in ds.path and not Path(ds.path).is_absolute():
        try:
            resolved = str((path.parent / ds.path).resolve())
        except (RuntimeError, OSError):  # Python 3.11: RuntimeError on a symlink loop
            raise SpecError(
                [f"spec.dataset.path: {ds.path} is a symbolic link loop; point it at the file"]
            ) from None
        new_ds = ds.model_copy(update={"path": resolved})
        new_spec = study.spec.model_copy(update={"dataset": new_ds})
        study = study.model_copy(update={"spec": new_spec})
    warm = study.spec.warm_start
    if warm is not None:
        studies = [_local_source(path.parent, s) for s in warm.studies]
        new_warm = warm.model_copy(update={"studies": studies})
        new_warm._written = tuple(warm.written)
        study = study.model_copy(
            update={"spec": study.spec.model_copy(update={"warm_start": new_warm})}
        )
    return study


def is_study_name(source: str) -> bool:
    """A ``warmStart.studies`` entry naming a study in this study's own store (no '/')."""
    return "/" not in source and bool(DNS_LABEL_RE.match(source))


def _local_source(folder: Path, source: str) -> str:
    """A warm-start folder relative to the study file, made absolute (like ``dataset.path``)."""
    if "://" in source or is_study_name(source) or Path(source).is_absolute():
        return source
    try:
        return str((folder / source).resolve())
    except (RuntimeError, OSError):
        raise SpecError(
            [f"spec.warmStart.studies: {source} is a symbolic link loop; point it at the folder"]
        ) from None
