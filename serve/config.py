"""The application config: the `args` of a Ray Serve config file, validated by one pydantic model.

`AppConfig.from_args` is called by the app builder at deploy time, so a bad config fails `serve
deploy` / `serve run` with `ConfigError`, whose message names every bad field by its path
(`variants.0.model`, `experiments.1.arms.0.variant`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from router.experiment import NAME_PATTERN, Experiment

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Engine settings that work on a CPU-only machine (see README): explicit KV-cache budget, eager
# execution. A GPU config overrides them.
DEFAULT_ENGINE_KWARGS: dict[str, Any] = {
    "enforce_eager": True,
    "kv_cache_memory_bytes": 512 * 1024**2,
    "max_model_len": 2048,
    "dtype": "bfloat16",
}


class ConfigError(ValueError):
    """A config that cannot be deployed; the message names each bad field."""


class SamplingDefaults(BaseModel):
    """Sampling parameters a variant applies when the request does not set them."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    def as_request_fields(self) -> dict[str, float | int]:
        return self.model_dump(exclude_none=True)


class VariantConfig(BaseModel):
    """One model variant: a vLLM engine in its own deployment, plus what the gateway adds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(description="Local model folder (absolute, or relative to the project).")
    system_prompt: str | None = None
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    num_replicas: int = Field(default=1, ge=1)
    cpus_per_replica: float = Field(default=1.0, gt=0)

    @field_validator("model")
    @classmethod
    def _model_is_local(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("must be a local folder: nothing is fetched from a model hub")
        return value

    @property
    def model_path(self) -> Path:
        path = Path(self.model)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def resolved_engine_kwargs(self) -> dict[str, Any]:
        return {**DEFAULT_ENGINE_KWARGS, **self.engine_kwargs}


class AppConfig(BaseModel):
    """Everything `serve.app.build_app` needs: variants, experiments and where outcomes go."""

    model_config = ConfigDict(extra="forbid")

    variants: list[VariantConfig] = Field(min_length=1)
    experiments: list[Experiment] = Field(default_factory=list)
    store_path: str = Field(default="data/outcomes.db", description="SQLite file (WAL mode).")
    gateway_replicas: int = Field(default=1, ge=1)
    check_model_files: bool = Field(
        default=True, description="Fail at deploy when a variant's model folder has no config."
    )

    @model_validator(mode="after")
    def _names_resolve(self) -> AppConfig:
        variant_names = [v.name for v in self.variants]
        for i, name in enumerate(variant_names):
            if variant_names.index(name) != i:
                raise ValueError(f"variants.{i}.name: {name!r} is used by another variant")
        seen_experiments: set[str] = set()
        for i, experiment in enumerate(self.experiments):
            if experiment.name in variant_names:
                raise ValueError(
                    f"experiments.{i}.name: {experiment.name!r} is also a variant name; "
                    "`model` could not tell them apart"
                )
            if experiment.name in seen_experiments:
                raise ValueError(f"experiments.{i}.name: {experiment.name!r} is used twice")
            seen_experiments.add(experiment.name)
            for j, arm in enumerate(experiment.arms):
                if arm.variant not in variant_names:
                    raise ValueError(
                        f"experiments.{i}.arms.{j}.variant: {arm.variant!r} is not a configured "
                        f"variant (known: {', '.join(variant_names)})"
                    )
        if self.check_model_files:
            for i, variant in enumerate(self.variants):
                if not (variant.model_path / "config.json").is_file():
                    raise ValueError(
                        f"variants.{i}.model: no model at {variant.model_path} "
                        "(run `python -m serve.models prepare`)"
                    )
        return self

    @property
    def store_file(self) -> Path:
        path = Path(self.store_path)
        return path if path.is_absolute() else PROJECT_ROOT / path

    def variant(self, name: str) -> VariantConfig:
        return next(v for v in self.variants if v.name == name)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> AppConfig:
        """Validate the Serve config `args`, raising `ConfigError` that names each bad field."""
        try:
            return cls.model_validate(args)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {message}" if where else message)
            raise ConfigError("invalid arena-serve config:\n  " + "\n  ".join(problems)) from None
