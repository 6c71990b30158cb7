"""`gatewayctl apply -f`: what a rollout file may hold, and the spec it stands for."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

from gateway.ctl.apply import read_rollout_file


def _file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_the_command_lines_fields_by_their_names_and_the_gates_under_analysis(tmp_path: Path) -> None:
    spec = read_rollout_file(_file(tmp_path, {
        "model": "classifier", "candidate": 2, "steps": "5, 25,50", "interval": "2m", "min_requests": 40,
        "analysis": {"shadow": {"min_agreement": 0.9}, "webhooks": []},
    }))  # fmt: skip
    assert (spec.model, spec.candidate, spec.baseline) == ("classifier", "2", "")
    assert list(spec.steps) == [5, 25, 50] and spec.interval_s == 120.0 and spec.min_requests == 40
    assert yaml.safe_load(spec.analysis_yaml) == {"shadow": {"min_agreement": 0.9}, "webhooks": []}
    plain = read_rollout_file(_file(tmp_path, {"model": "m", "candidate": "c", "interval": 1.5}))
    assert plain.interval_s == 1.5 and list(plain.steps) == [5, 25, 50] and plain.analysis_yaml == ""


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"model": "m", "candidate": "c", "stepz": [5]}, "stepz"),
        ({"model": "m"}, "candidate"),
        ({"model": "m", "candidate": "c", "interval": "soon"}, "interval"),
        ({"model": "m", "candidate": "c", "steps": "5,x"}, "steps"),
        ("model: [unclosed", "rollout.yaml"),
    ],
)
def test_a_bad_file_is_a_usage_error_naming_the_file_and_the_key(tmp_path: Path, content: object, named: str) -> None:
    with pytest.raises(typer.BadParameter) as raised:
        read_rollout_file(_file(tmp_path, content))
    assert "rollout.yaml" in raised.value.message and named in raised.value.message
