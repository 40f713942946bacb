"""The experiment model rejects what cannot be run, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router import Arm, Experiment


def arms(*weights: float) -> list[dict]:
    return [{"variant": f"v{i}", "weight": w} for i, w in enumerate(weights)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "e", "arms": arms(1)}, "at least 2"),
        ({"name": "e", "arms": arms(0, 0)}, "weight above 0"),
        ({"name": "e", "arms": arms(1, -1)}, "greater than or equal to 0"),
        ({"name": "e", "arms": [{"variant": "a"}, {"variant": "a"}]}, "more than once"),
        ({"name": "has space", "arms": arms(1, 1)}, "pattern"),
        ({"name": "e", "unit": "device", "arms": arms(1, 1)}, "'user'"),
        ({"name": "e", "arms": arms(1, 1), "colour": "red"}, "Extra inputs"),
        ({"name": "e", "salt": "", "arms": arms(1, 1)}, "at least 1 character"),
        ({"name": "e", "arms": arms(1, float("inf"))}, "finite"),
    ],
)
def test_invalid_experiments_are_rejected(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Experiment.model_validate(spec)


def test_defaults() -> None:
    exp = Experiment(name="e", arms=(Arm(variant="a"), Arm(variant="b", weight=3)))
    assert exp.unit == "user"
    assert exp.hash_salt == "e"
    assert [a.weight for a in exp.arms] == [1.0, 3.0]


def test_experiments_are_hashable_and_frozen() -> None:
    exp = Experiment(name="e", arms=(Arm(variant="a"), Arm(variant="b")))
    assert hash(exp) == hash(Experiment.model_validate(exp.model_dump()))
    with pytest.raises(ValidationError):
        exp.name = "other"  # type: ignore[misc]
