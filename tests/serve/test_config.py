"""Config validation: the shipped config is valid; every kind of mistake names its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from serve.cli import APP_IMPORT_PATH, app_entry, load_serve_config
from serve.config import AppConfig, ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "deploy" / "config.yaml"


def default_args() -> dict:
    return copy.deepcopy(app_entry(load_serve_config(DEFAULT), DEFAULT)["args"])


def test_the_default_config_is_a_serve_config_with_two_variants_and_an_experiment() -> None:
    document = yaml.safe_load(DEFAULT.read_text())
    [application] = document["applications"]
    assert application["import_path"] == APP_IMPORT_PATH
    config = AppConfig.from_args(application["args"] | {"check_model_files": False})
    assert len(config.variants) == 2
    [experiment] = config.experiments
    assert [a.weight for a in experiment.arms] == [1, 1]
    assert {a.variant for a in experiment.arms} == {v.name for v in config.variants}


def mutate(path: str, value: object) -> dict:
    args = default_args() | {"check_model_files": False}
    *parents, last = path.split(".")
    node = args
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return args


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("variants", [], "variants: List should have at least 1 item"),
        ("variants.0.model", DELETE, "variants.0.model: Field required"),
        ("variants.0.model", "hf://org/model", "variants.0.model: must be a local folder"),
        ("variants.1.name", "smollm2-concise", "variants.1.name: 'smollm2-concise' is used"),
        ("variants.0.sampling.temperature", 9, "variants.0.sampling.temperature"),
        ("variants.0.num_replicas", 0, "variants.0.num_replicas"),
        ("variants.0.colour", "red", "variants.0.colour: Extra inputs"),
        ("experiments.0.arms.1.variant", "ghost", "experiments.0.arms.1.variant: 'ghost' is not"),
        ("experiments.0.arms.0.weight", -1, "experiments.0.arms.0.weight"),
        ("experiments.0.name", "smollm2-concise", "experiments.0.name: 'smollm2-concise' is also"),
        ("experiments.0.unit", "device", "experiments.0.unit"),
        ("gateway_replicas", 0, "gateway_replicas"),
    ],
)
def test_config_errors_name_the_field(path: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        AppConfig.from_args(mutate(path, value))
    assert named in str(error.value)


def test_missing_model_folder_is_reported(tmp_path: Path) -> None:
    args = default_args()
    args["variants"][1]["model"] = str(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match=r"variants\.1\.model: no model at"):
        AppConfig.from_args(args)


def test_defaults_fill_engine_options() -> None:
    config = AppConfig.from_args(default_args() | {"check_model_files": False})
    engine = config.variants[0].resolved_engine_kwargs
    assert engine["enforce_eager"] is True and engine["kv_cache_memory_bytes"] > 0
    assert config.store_file.is_absolute()
