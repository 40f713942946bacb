"""The benchmark's helpers (`reward.bench`): the model it times where only a config came along."""

from __future__ import annotations

import shutil
from pathlib import Path

from reward.bench import _figure, bench_model, workloads
from reward.scorer import RewardScorer
from serve.models import TINY_REWARD, prepare


def test_a_model_without_weights_is_timed_with_random_weights_of_its_shape(
    tmp_path: Path,
) -> None:
    [source] = prepare([TINY_REWARD])
    carried = tmp_path / "carried"
    carried.mkdir()
    for file in source.iterdir():  # what a GPU machine gets: everything but the weights
        if file.suffix != ".safetensors":
            shutil.copy(file, carried / file.name)
    built = tmp_path / "built"
    built.mkdir()

    path, name = bench_model(carried, built)

    assert path == built and name == "carried with random weights of its shape"
    original = RewardScorer(source, device="cpu", dtype="float32")
    timed = RewardScorer(path, device="cpu", dtype="float32")
    shapes = {k: v.shape for k, v in original.model.state_dict().items()}
    assert {k: v.shape for k, v in timed.model.state_dict().items()} == shapes
    pair = workloads(1)["chat answers"][0]
    assert timed.encode([timed.render(*pair)]) == original.encode([original.render(*pair)])
    assert timed.score([pair]) != original.score([pair])  # other weights, same tokens


def test_a_model_with_weights_is_timed_as_it_is(tmp_path: Path) -> None:
    [source] = prepare([TINY_REWARD])
    assert bench_model(source, tmp_path) == (source, TINY_REWARD)
    assert not any(tmp_path.iterdir())


def test_workloads_have_the_asked_number_of_conversations_and_ragged_chat_answers() -> None:
    loads = workloads(40)
    assert {name: len(pairs) for name, pairs in loads.items()} == {
        "chat answers": 40,
        "one-line answers": 40,
    }
    lengths = {len(answer) for _, answer in loads["chat answers"]}
    assert len(lengths) > 20  # answers of 1 to 32 sentences


def test_figures_keep_two_significant_digits_below_one() -> None:
    assert [_figure(x) for x in (512.34, 1.0, 0.0173, 0.000216)] == [
        "512.3",
        "1.0",
        "0.017",
        "0.00022",
    ]
