"""deploy/kuberay/rayservice.yaml: a RayService KubeRay accepts, serving what deploy/config.gpu.yaml
serves.

The manifest is checked against the vendored CRD's v1 schema made strict (a misspelled field is
an error, as `kubectl apply --validate=strict` would make it), its Serve config with the app's
own validation (`ServeFile`), and against the GPU config, so that the two cannot drift apart.
No cluster, no kubectl, no network.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import serve.config
from serve.config import ServeFile
from serve.deploy import DIRECT_INGRESS_DRAIN, HAPROXY_RETRY_ON, QUIET_RAY, THROUGHPUT_MODE

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFEST = KUBERAY / "rayservice.yaml"
CRD = KUBERAY / "crd" / "ray.io_rayservices.yaml"
GPU_CONFIG = ROOT / "deploy" / "config.gpu.yaml"

MODELS = "/app/models"  # where every Ray container mounts the model volume
SECRET = {"name": "arena-serve-store", "key": "dsn"}
STORE_ENV = "ARENA_STORE_DSN"
# What the cluster's args add to the GPU config's (beside model paths on the volume).
CLUSTER_ARGS = {"gateway_replicas": 2, "check_model_files": True, "check_resources": False}
CLUSTER_STORE = {"url": f"env:{STORE_ENV}", "log_replicas": 2}

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD is 1 MB: C parses it in 0.2 s


def load(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)


def manifest() -> dict[str, Any]:
    """The RayService (the file holds only it: the Secret is made apart), as a tree of its own:
    what the file's YAML aliases share (`env: *ray-env`) is copied, so that a test changing one
    container changes only that one."""
    documents = list(yaml.load_all(MANIFEST.read_text(encoding="utf-8"), Loader=Loader))
    assert [d["kind"] for d in documents] == ["RayService"]
    return json.loads(json.dumps(documents[0]))


def serve_config(document: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(document["spec"]["serveConfigV2"])


# --- the schema ------------------------------------------------------------------------------

# The CRD's own metadata schema is `type: object`: Kubernetes checks ObjectMeta itself.
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict(schema: Any) -> Any:
    """A CRD schema as jsonschema should read it to reject what Kubernetes would not keep:
    every object with `properties` and no say about other fields gets `additionalProperties:
    false` (Kubernetes prunes unknown fields silently; strict field validation rejects them);
    `x-kubernetes-int-or-string` accepts an int or a string; `nullable` accepts null; a
    required field with a default is optional (the API server fills it in before validating)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and not (
        "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "required" in out:
        properties = out.get("properties", {})
        out["required"] = [
            name for name in out["required"] if "default" not in properties.get(name, {})
        ]
    return out


@functools.cache
def crd_schema() -> dict[str, Any]:
    """The RayService v1 schema as the CRD states it."""
    crd = load(CRD)
    assert (
        crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "RayService"
    )
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


@functools.cache
def rayservice_schema() -> dict[str, Any]:
    schema = strict(crd_schema())
    schema["properties"]["metadata"] = METADATA
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"]["apiVersion"] = {"enum": ["ray.io/v1"]}  # OpenAPI v3 has no `const`
    schema["properties"]["kind"] = {"enum": ["RayService"]}
    return schema


def problems(document: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Each schema error as `path: message`, an unknown field's path ending at the field."""
    validator = jsonschema.Draft4Validator(schema or rayservice_schema())
    found = []
    for error in validator.iter_errors(document):
        where = [str(part) for part in error.absolute_path]
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            found += [
                ".".join([*where, name]) + ": unknown field"
                for name in error.instance
                if name not in known
            ]
        else:
            found.append(".".join(where) + f": {error.message}")
    return sorted(found)


def test_the_rayservice_matches_the_crd_strictly() -> None:
    assert problems(manifest()) == []


def node(document: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        document = document[int(part)] if part.isdigit() else document[part]
    return document


def renamed(path: str, new_name: str) -> dict[str, Any]:
    """The manifest with the field at `path` renamed."""
    document = manifest()
    *parents, name = path.split(".")
    parent = node(document, ".".join(parents))
    parent[new_name] = parent.pop(name)
    return document


HEAD = "spec.rayClusterConfig.headGroupSpec"
GPU_GROUP = "spec.rayClusterConfig.workerGroupSpecs.1"
GPU_CONTAINER = f"{GPU_GROUP}.template.spec.containers.0"


@pytest.mark.parametrize(
    ("path", "misspelled"),
    [
        (f"{HEAD}.rayStartParams", "rayStartParam"),
        ("spec.rayClusterConfig.workerGroupSpecs.0.replicas", "replica"),
        (f"{GPU_CONTAINER}.resources", "resource"),
        (f"{GPU_CONTAINER}.env.0.valueFrom.secretKeyRef", "secretRef"),
        (f"{GPU_GROUP}.template.spec.volumes.2.emptyDir.sizeLimit", "size"),
        ("spec.serveConfigV2", "serveConfig"),
        ("metadata.labels", "label"),
    ],
)
def test_a_misspelled_field_is_an_error_naming_its_path(path: str, misspelled: str) -> None:
    document = renamed(path, misspelled)
    *parents, _ = path.split(".")
    bad = ".".join([*parents, misspelled]) + ": unknown field"
    assert problems(document) == [bad]


def test_the_crd_alone_would_let_a_misspelling_through() -> None:
    """Why the schema is made strict: the CRD says nothing about unknown fields."""
    document = renamed(f"{GPU_CONTAINER}.resources", "resource")
    assert problems(document, crd_schema()) == []
    assert problems(document) != []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "spec.rayClusterConfig.workerGroupSpecs.0.replicas",
            "two",
            "'two' is not of type 'integer'",
        ),
        (f"{HEAD}.rayStartParams.num-cpus", 0, "0 is not of type 'string'"),
        (f"{GPU_CONTAINER}.resources.limits.memory", "24 gigs", "'24 gigs' does not match"),
        (f"{GPU_CONTAINER}.env", {"name": "X"}, "is not of type 'array'"),
        ("metadata.name", "Arena_Serve", "does not match"),
        ("apiVersion", "ray.io/v1alpha1", "is not one of ['ray.io/v1']"),
    ],
)
def test_a_wrong_value_is_an_error_naming_its_path(path: str, value: Any, message: str) -> None:
    document = manifest()
    *parents, name = path.split(".")
    node(document, ".".join(parents))[name] = value
    [problem] = problems(document)
    assert problem.startswith(f"{path}: ") and message in problem


# --- the Serve config --------------------------------------------------------------------------


@pytest.fixture
def engine_options_of_the_gpu_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's engine option names, as far as the GPU config uses them, without importing vLLM
    (8 s). The manifest's engine_kwargs must equal the GPU config's (below), and
    tests/serve/test_config.py checks those against vLLM itself."""
    args = load(GPU_CONFIG)["applications"][0]["args"]
    names = tuple(name for v in args["variants"] for name in v.get("engine_kwargs", {}))
    assert names, "the GPU config sets engine options: the stand-in must know them"
    monkeypatch.setattr(serve.config, "engine_option_names", lambda: names)


def served() -> ServeFile:
    """The manifest's Serve config through the app's own validation, Ray Serve's schema
    included. Model folders are not checked: they live on the cluster's volume."""
    return ServeFile.from_document(
        serve_config(manifest()), "serveConfigV2", check_model_files=False
    )


@pytest.mark.usefixtures("engine_options_of_the_gpu_config")
def test_the_serve_config_is_a_valid_arena_serve_config() -> None:
    app = served()
    assert app.app.store.url == f"env:{STORE_ENV}"
    assert app.app.store.log_replicas == 2
    assert [e.name for e in app.gateway.experiments] == [
        "concise-vs-friendly",
        "smollm2-arena",
        "agreeable-arena",
    ]
    document = app.document
    assert document["proxy_location"] == "EveryNode"
    assert document["http_options"] == {"host": "0.0.0.0", "port": 8000}


@pytest.mark.usefixtures("engine_options_of_the_gpu_config")
def test_a_bad_serve_config_fails_with_the_app_validation() -> None:
    document = manifest()
    config = serve_config(document)
    config["applications"][0]["args"]["variants"][0]["num_replicas"] = 0
    document["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    with pytest.raises(serve.config.ConfigError, match=r"variants\.0\.num_replicas"):
        ServeFile.from_document(serve_config(document), "serveConfigV2", check_model_files=False)


def on_the_volume(path: str) -> str:
    return f"{MODELS}/{Path(path).name}"


def test_the_cluster_serves_the_gpu_configs_app() -> None:
    """The same variants, scorer and experiments as deploy/config.gpu.yaml: it differs only in
    the store (PostgreSQL from the Secret, two log replicas), the model folders (on the volume),
    the gateway replicas and the deploy-time checks."""
    [cluster] = serve_config(manifest())["applications"]
    [gpu] = load(GPU_CONFIG)["applications"]
    assert {k: v for k, v in cluster.items() if k != "args"} == {
        k: v for k, v in gpu.items() if k != "args"
    }  # name, import_path, route_prefix, deployments: the experiments (gateway user_config)
    expected = copy.deepcopy(gpu["args"])
    del expected["store_path"]  # SQLite's file: the cluster's store is PostgreSQL
    expected["store"] |= CLUSTER_STORE
    expected |= CLUSTER_ARGS
    for owner in [v for v in expected["variants"] if "model" in v] + [expected["scorer"]]:
        owner["model"] = on_the_volume(owner["model"])
    assert cluster["args"] == expected


def test_engines_and_scorer_fit_only_on_gpu_workers() -> None:
    """Everything that asks Ray for CPUs also asks for a GPU share, the head offers no CPUs, so
    engines and scorer land on the GPU group, whose pods hold them."""
    document = manifest()
    cluster = document["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    args = serve_config(document)["applications"][0]["args"]
    owners = [v for v in args["variants"] if "model" in v]
    asks = [
        (o.get("cpus_per_replica", 1.0), o["gpus_per_replica"], o.get("num_replicas", 1))
        for o in owners
    ]
    scorer = args["scorer"]
    asks.append(
        (
            scorer.get("cpus_per_replica", 1.0),
            scorer["gpus_per_replica"],
            scorer.get("num_replicas", 1),
        )
    )
    assert all(gpus > 0 for _, gpus, _ in asks)
    [group] = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    cpus, gpus = (
        float(limits["cpu"]) * group["replicas"],
        int(limits["nvidia.com/gpu"]) * group["replicas"],
    )
    assert sum(c * n for c, _, n in asks) <= cpus and sum(g * n for _, g, n in asks) <= gpus


# --- containers ----------------------------------------------------------------------------------


def groups(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    cluster = document["spec"]["rayClusterConfig"]
    yield "head", cluster["headGroupSpec"]
    for group in cluster["workerGroupSpecs"]:
        yield group["groupName"], group


def containers(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, group in groups(document):
        for container in group["template"]["spec"]["containers"]:
            yield f"{name}/{container['name']}", container


def test_the_gpu_group_asks_kubernetes_for_a_gpu_and_no_other_group_does() -> None:
    for name, container in containers(manifest()):
        resources = container["resources"]
        gpu = [resources.get(kind, {}).get("nvidia.com/gpu") for kind in ("requests", "limits")]
        assert gpu == ([1, 1] if name.startswith("gpu/") else [None, None]), name


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def test_every_ray_container_reads_the_store_dsn_from_the_secret() -> None:
    seen = []
    for name, container in containers(manifest()):
        variable = env(container).get(STORE_ENV)
        assert variable == {"name": STORE_ENV, "valueFrom": {"secretKeyRef": SECRET}}, name
        seen.append(name)
    assert seen == ["head/ray-head", "cpu/ray-worker", "gpu/ray-worker"]


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_no_dsn_nor_url_with_credentials_is_written_in_the_manifest() -> None:
    document = manifest()
    texts = [*strings(document), *strings(serve_config(document))]
    assert not [t for t in texts if re.search(r"postgres(ql)?://|://[^/\s]*:[^/\s]*@", t)]


def test_every_ray_container_runs_serve_in_throughput_mode_as_make_serve_does() -> None:
    wanted = THROUGHPUT_MODE | HAPROXY_RETRY_ON | DIRECT_INGRESS_DRAIN | QUIET_RAY
    for name, container in containers(manifest()):
        values = {k: v.get("value") for k, v in env(container).items()}
        assert {k: values.get(k) for k in wanted} == wanted, name


def test_every_ray_container_mounts_the_model_volume_where_the_config_points() -> None:
    document = manifest()
    for name, group in groups(document):
        spec = group["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        [container] = spec["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == MODELS]
        assert mount["readOnly"] is True, name
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim == "arena-serve-models", name
    args = serve_config(document)["applications"][0]["args"]
    folders = [v["model"] for v in args["variants"] if "model" in v] + [args["scorer"]["model"]]
    assert all(folder.startswith(MODELS + "/") for folder in folders)
