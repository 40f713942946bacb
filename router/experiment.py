"""The experiment model: what an experimenter writes in the config, validated at deploy time.

Models are frozen so that a validated experiment can be shared between coroutines and used as a
cache key; every field error names its field (pydantic's `loc`), which the deploy error repeats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class Arm(BaseModel):
    """One arm of an experiment: a variant and its share of the experiment's units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: str = Field(pattern=NAME_PATTERN, description="Name of a configured variant.")
    weight: float = Field(
        default=1.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Relative weight; 0 pauses the arm without reshuffling the others.",
    )


class Experiment(BaseModel):
    """An A/B experiment: units (users) are split between arms by a salted hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    unit: Literal["user"] = Field(
        default="user",
        description="What is assigned: the OpenAI `user` field, else the X-User-Id header.",
    )
    salt: str | None = Field(
        default=None,
        min_length=1,
        description="Hash salt; defaults to the name. Changing it reshuffles every unit.",
    )
    arms: tuple[Arm, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _arms_are_distinct_and_live(self) -> Experiment:
        variants = [arm.variant for arm in self.arms]
        duplicated = sorted({v for v in variants if variants.count(v) > 1})
        if duplicated:
            raise ValueError(f"arms name a variant more than once: {', '.join(duplicated)}")
        if not any(arm.weight > 0 for arm in self.arms):
            raise ValueError("at least one arm needs a weight above 0")
        return self

    @property
    def hash_salt(self) -> str:
        return self.salt if self.salt is not None else self.name
