"""Study files' YAML: a key given twice is refused naming the key and its lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.study import REPO
from hpo.study.spec import SpecError, load_study


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    """PyYAML alone keeps the last ``epochs`` silently; the study file is refused."""
    text = (REPO / "examples" / "quickstart.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("epochs:"))
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines.insert(at + 1, f"{indent}epochs: 7")
    study = tmp_path / "twice.yaml"
    study.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as info:
        load_study(study)
    assert info.value.problems == [
        f"not valid YAML: key 'epochs' appears twice in one mapping (lines {at + 1} and "
        f"{at + 2}); keep one"
    ]


def test_the_same_key_in_two_mappings_and_merge_keys_are_fine(tmp_path: Path) -> None:
    from hpo.study.spec.load import load_yaml

    assert load_yaml("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}
    assert load_yaml("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n")["c"] == {"x": 1, "y": 2}
