"""The app builder: `import_path: serve.app:build_app` in a Ray Serve config file.

Turns the validated `AppConfig` into bound deployments: one `VariantServer` (Ray Serve LLM's
`LLMServer` with the first token unbatched, `serve.variant`) per engine, the single `OutcomeLog`
writer, the `RewardScorerDeployment` when a scorer is configured, and the `Gateway` ingress (a plain
class, made a Ray Serve ingress deployment here) that holds handles to them.
The experiments are not built here: they are the gateway's `user_config` in the config file,
which Ray Serve passes to `Gateway.reconfigure` (live, without rebuilding anything).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.llm import LLMConfig, build_llm_deployment

from serve.config import (
    DRAIN_S,
    GATEWAY_DEPLOYMENT,
    VARIANT_PREFIX,
    AppConfig,
    ConfigError,
    VariantConfig,
)
from serve.gateway import Gateway, app
from serve.outcome_log import OutcomeLog
from serve.scorer import RewardScorerDeployment
from serve.variant import VariantServer


def variant_llm_config(
    variant: VariantConfig, engine_kwargs: dict[str, Any] | None = None
) -> LLMConfig:
    """The Ray Serve LLM config of one variant's engine deployment (`engine_kwargs`: the app's
    `AppConfig.engine_kwargs` of it, adapters included; by default the variant's own)."""
    return LLMConfig(
        model_loading_config={"model_id": variant.name, "model_source": str(variant.model_path)},
        engine_kwargs=variant.resolved_engine_kwargs if engine_kwargs is None else engine_kwargs,
        # The replica actor only relays; the engine's bundle holds the variant's CPUs.
        deployment_config={
            "num_replicas": variant.num_replicas,
            "ray_actor_options": {"num_cpus": 0},
            "max_ongoing_requests": variant.max_ongoing_requests,
            "max_queued_requests": variant.max_queued_requests,
        },
        placement_group_config={"bundles": [engine_bundle(variant)]},
        server_cls=VariantServer,
        experimental_configs={"stream_batching_interval_ms": variant.stream_interval_ms},
    )


def engine_bundle(variant: VariantConfig) -> dict[str, float]:
    """The resources one engine replica holds: its CPUs, and its GPU share where it has one."""
    bundle = {"CPU": variant.cpus_per_replica}
    if variant.engine_gpus:
        bundle["GPU"] = variant.engine_gpus
    return bundle


def check_cluster_fits(config: AppConfig, resources: Mapping[str, float]) -> None:
    """`ConfigError` when the cluster's logical CPUs or GPUs (`resources`, as
    `ray.cluster_resources()` gives them) cannot hold every engine and scorer replica: Ray
    would leave the rest waiting forever, and the app would never become healthy (with the
    scorer left out, scoring would silently never happen)."""
    if not config.check_resources:
        return
    needed, have = config.logical_cpus_needed, resources.get("CPU", 0.0)
    if needed > have + 1e-9:
        asks = ", ".join(what for what, _ in config.cpu_demands)
        raise ConfigError(
            f"this config asks Ray for {needed:g} logical CPUs ({asks}) and the cluster has "
            f"{have:g}: the replicas beyond them would wait forever. Start Ray with more "
            "(`ray start --head --num-cpus N`), lower cpus_per_replica, let prompt-only "
            "variants share an engine (`engine:`), or set args.check_resources: false where "
            "an autoscaler adds nodes."
        )
    gpus = sum(n for _, n in config.gpu_demands)
    if gpus > resources.get("GPU", 0.0) + 1e-9:
        asks = ", ".join(what for what, _ in config.gpu_demands)
        raise ConfigError(
            f"this config asks Ray for {gpus:g} GPUs ({asks}) and the cluster has "
            f"{resources.get('GPU', 0.0):g}: give engines and the scorer fractions of a GPU "
            "(gpus_per_replica), or score on CPUs (scorer.gpus_per_replica: 0)"
        )


# The ingress deployment: `Gateway` stays a plain class (tests build it without a cluster);
# its routes are declared on `serve.gateway.app`.
GatewayDeployment = serve.deployment(
    name=GATEWAY_DEPLOYMENT,
    max_ongoing_requests=1024,
    ray_actor_options={"num_cpus": 0},
    user_config={"experiments": []},
    # A replica being replaced (redeploy, scale-down, shutdown) first finishes its streams.
    graceful_shutdown_timeout_s=DRAIN_S,
)(serve.ingress(app)(Gateway))


def build_app(args: dict[str, Any]) -> Application:
    """Validate `args` (raising `ConfigError` naming each bad field, or saying why the cluster
    cannot hold the app) and bind the application."""
    config = AppConfig.from_args(args)
    if ray.is_initialized():  # `serve deploy` and `serve run` build on the cluster
        check_cluster_fits(config, ray.cluster_resources())
    owned = {
        v.name: build_llm_deployment(
            variant_llm_config(v, config.engine_kwargs(v)), name_prefix=VARIANT_PREFIX
        )
        for v in config.variants
        if v.engine is None
    }
    engines = {v.name: owned[v.engine_name] for v in config.variants}  # prompt-only: shared
    # Kept text is purged past its retention even once keep_text is off again.
    outcome_log = OutcomeLog.options(num_replicas=config.store.replicas).bind(
        config.store_location, retention_days=config.store.retention_days
    )
    scorer = None
    if config.scorer is not None:
        scorer = RewardScorerDeployment.options(
            num_replicas=config.scorer.num_replicas,
            # The model it serves; the config file's user_config for it swaps models live.
            user_config={"model": config.scorer.model},
            ray_actor_options={
                "num_cpus": config.scorer.cpus_per_replica,
                "num_gpus": config.scorer.gpus_per_replica,
            },
        ).bind(config.scorer.model_copy(update={"priority": config.scorer_priority}), outcome_log)
    return GatewayDeployment.options(num_replicas=config.gateway_replicas).bind(
        config, engines, outcome_log, scorer
    )
