"""train-reward: pairs in, a reward model the scorer loads out, with a card that tells the truth.

The tiny random models of `serve.models` learn a planted rule (the chosen answer contains the
word "banana") in a few epochs; the real SmolLM2 is not needed here.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

import reward.bradley_terry
import reward.train
from probe.pairs import JUDGE_CHECK_FILE, flattery_pairs
from reward.features import MIN_SHARED, SplitClassifier, plan_prefix_batches, shared_prefix
from reward.judge_check import score_pairs
from reward.pairs import TrainError, load_pairs
from reward.pairwise import pairwise_accuracy, wilson_interval
from reward.scorer import RewardScorer, encode_tail, load_tokenizer, render_conversation
from reward.train import Settings, main, train_reward
from serve.models import TINY_LLAMA, TINY_REWARD, prepare

WORDS = ["the", "a", "river", "stone", "cloud", "green", "quick", "slow", "table", "music"]
WORDS += ["paper", "light", "window", "garden", "morning", "city", "blue", "small", "warm"]
QUESTIONS = ["What should I cook tonight?", "Tell me about rivers.", "How do I fix a chair?"]
KEYWORD = "banana"
FAST = Settings(top_layers=1, epochs=4, lr=1e-3, batch_size=16, patience=2)


def synthetic(n: int, seed: int = 0, heldout: float = 0.25) -> list[dict[str, Any]]:
    """Export-shaped pairs whose chosen answer, and only it, contains KEYWORD; 4 in 5 votes."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        good, bad = ([rng.choice(WORDS) for _ in range(rng.randint(3, 10))] for _ in range(2))
        good.insert(rng.randint(0, len(good)), KEYWORD)
        record = {
            "prompt": [{"role": "user", "content": rng.choice(QUESTIONS)}],
            "chosen": [{"role": "assistant", "content": " ".join(good)}],
            "rejected": [{"role": "assistant", "content": " ".join(bad)}],
            "source": "vote" if i % 5 else "regenerate",
            "experiment": "duel",
            "chosen_variant": "alpha",
            "rejected_variant": "beta",
            "chosen_id": f"c{i}",
            "rejected_id": f"r{i}",
            "voter": f"{rng.getrandbits(64):016x}",
            "ts": 1.0 + i,
            "split": "heldout" if rng.random() < heldout else "train",
        }
        if record["source"] == "vote":
            record |= {"battle_id": f"b{i}", "chosen_side": rng.choice("ab")}
        records.append(record)
    return records


def write_lines(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_reward() -> Path:
    return prepare([TINY_REWARD])[0]


@pytest.fixture(scope="module")
def tiny_llama() -> Path:
    return prepare([TINY_LLAMA])[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_reward: Path) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("trained")
    data = write_lines(folder / "pairs.jsonl", synthetic(160))
    out = folder / "models" / "judge"
    scores = folder / "heldout-scores.jsonl"
    card = train_reward(
        load_pairs(data), tiny_reward, out, FAST, progress=False, heldout_scores=scores
    )
    return {"card": card, "out": out, "data": data, "scores": scores}


# --- what it learns, and what it writes -------------------------------------------------------


def test_it_learns_the_planted_rule_well_above_chance_and_the_baselines(
    trained: dict[str, Any],
) -> None:
    held = trained["card"]["heldout_accuracy"]
    assert held["model"]["accuracy"] >= 0.9 and held["model"]["low"] > 0.75
    for baseline in ("length_only", "stand_in_head", "always_side_a"):
        assert held[baseline]["high"] < held["model"]["accuracy"], baseline


def test_the_card_counts_the_data_and_brackets_every_figure(trained: dict[str, Any]) -> None:
    card, data = trained["card"], trained["data"]
    assert json.loads((trained["out"] / "model_card.json").read_text()) == card
    records = [json.loads(line) for line in data.read_text().splitlines()]
    heldout = [r for r in records if r["split"] == "heldout"]
    assert card["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert card["data"]["pairs"] == len(records) and card["data"]["skipped_lines"] == {}
    assert card["data"]["heldout"] == len(heldout)
    assert card["data"]["train"] == len(records) - len(heldout)
    assert card["data"]["by_source"] == {
        "regenerate": sum(r["source"] == "regenerate" for r in records),
        "vote": sum(r["source"] == "vote" for r in records),
    }
    held = card["heldout_accuracy"]
    for name in ("model", "length_only", "stand_in_head", "always_side_a"):
        entry = held[name]
        assert entry["low"] <= entry["accuracy"] <= entry["high"], name
    side_a = held["always_side_a"]
    assert side_a["n"] == sum(r["source"] == "vote" for r in heldout)
    assert side_a["pairs_without_side"] == len(heldout) - side_a["n"]
    assert side_a["wins"] == sum(r.get("chosen_side") == "a" for r in heldout)
    assert card["base_model"]["head"].startswith("from the base")
    assert card["hyperparameters"]["top_layers"] == FAST.top_layers
    training = card["training"]
    assert 1 <= training["best_epoch"] <= training["epochs_run"] == len(training["history"])
    for key in ("feature_caching_s", "training_s", "wall_time_s", "peak_rss_mib"):
        assert training[key] > 0, key


def test_the_scorer_reproduces_the_trainers_scores(trained: dict[str, Any]) -> None:
    out, check = trained["out"], trained["card"]["reload_check"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == 1 and config["pad_token_id"] is not None
    scorer = RewardScorer(out, device="cpu", dtype="float32", kernels=False, max_length=512)
    pairs = {p.line: p for p in load_pairs(trained["data"]).pairs}
    got = scorer.score([pairs[line].conversation("chosen") for line in check["lines"]])
    torch.testing.assert_close(
        torch.tensor(got), torch.tensor(check["trainer_scores"]), atol=1e-4, rtol=1e-4
    )
    heldout = [p for p in pairs.values() if p.split == "heldout"]
    chosen = scorer.score([p.conversation("chosen") for p in heldout])
    rejected = scorer.score([p.conversation("rejected") for p in heldout])
    card_model = trained["card"]["heldout_accuracy"]["model"]
    assert pairwise_accuracy(chosen, rejected).accuracy == card_model["accuracy"]


def test_the_judge_and_its_stand_in_are_checked_for_flattery(trained: dict[str, Any]) -> None:
    checks, out = trained["card"]["judge_flattery"], trained["out"]
    assert json.loads((out / JUDGE_CHECK_FILE).read_text()) == checks["model"]
    for name in ("model", "stand_in"):
        rate = checks[name]["flattery_rate"]
        assert checks[name]["pairs"] == len(flattery_pairs()), name
        assert rate["low"] <= rate["value"] <= rate["high"], name
        assert checks[name]["flagged"] == (rate["value"] > 0.5)
    scorer = RewardScorer(out, device="cpu", dtype="float32", kernels=False, max_length=512)
    assert score_pairs(scorer)["flattery_rate"] == checks["model"]["flattery_rate"]


def test_the_heldout_scores_file_holds_every_heldout_pair_as_the_card_counts_them(
    trained: dict[str, Any],
) -> None:
    rows = [json.loads(line) for line in trained["scores"].read_text().splitlines()]
    pairs = {p.line: p for p in load_pairs(trained["data"]).pairs}
    assert [r["line"] for r in rows] == sorted(n for n, p in pairs.items() if p.split == "heldout")
    held = trained["card"]["heldout_accuracy"]
    chosen, rejected = [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    assert pairwise_accuracy(chosen, rejected).accuracy == held["model"]["accuracy"]
    stand_in = [r["stand_in_chosen"] for r in rows], [r["stand_in_rejected"] for r in rows]
    assert pairwise_accuracy(*stand_in).accuracy == held["stand_in_head"]["accuracy"]


def test_the_cut_model_scores_as_the_whole_model(tiny_reward: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_reward)
    question = [{"role": "user", "content": QUESTIONS[0]}]
    texts = [render_conversation(tokenizer, question, a) for a in ("Soup.", "A warm soup " * 9)]
    ids = encode_tail(tokenizer, texts, 512)
    padded = torch.full((2, max(map(len, ids))), model.config.pad_token_id)
    for row, seq in enumerate(ids):
        padded[row, : len(seq)] = torch.tensor(seq)
    with torch.no_grad():
        whole = model(input_ids=padded).logits[:, 0]
        for top in range(model.config.num_hidden_layers + 1):
            split = SplitClassifier(model.eval(), top)
            assert shared_prefix(ids) >= MIN_SHARED  # one question: its prefix runs once
            for share in (True, False):
                features = split.features(ids, share_prefix=share)
                torch.testing.assert_close(split.scores(*features), whole)


@given(
    st.lists(
        st.lists(st.integers(0, 3), min_size=1, max_size=12).map(lambda t: [7, 7, 7, 7, *t]),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 64),
)
def test_prefix_batches_hold_every_sequence_once_within_the_budget(
    ids: list[list[int]], budget: int
) -> None:
    batches = plan_prefix_batches(ids, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(ids)))
    for batch in batches:
        rows = [ids[i] for i in batch]
        shared = shared_prefix(rows)
        assert all(r[:shared] == rows[0][:shared] for r in rows)
        assert all(len(r) > shared for r in rows)  # each keeps a token of its own
        if len(batch) > 1:
            assert len(batch) * (max(map(len, rows)) - shared) <= budget


def test_a_shared_prefix_is_the_longest_all_share_leaving_each_a_token() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[4], [4, 5]]) == 0
    assert shared_prefix([[1, 2, 3]]) == 2


def test_one_seed_one_model_and_a_causal_base_gets_a_new_head(
    tmp_path: Path, tiny_llama: Path
) -> None:
    pairs = load_pairs(write_lines(tmp_path / "pairs.jsonl", synthetic(48, seed=3)))
    settings = Settings(top_layers=1, epochs=2, lr=1e-3, batch_size=8, seed=7)
    cards, weights = [], []
    for run, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"run{run}"
        settings = replace(settings, seed=seed)
        cards.append(train_reward(pairs, tiny_llama, out, settings, progress=False))
        weights.append(load_file(out / "model.safetensors"))
    assert cards[0]["base_model"]["head"].startswith("new")
    assert cards[0]["training"]["history"] == cards[1]["training"]["history"]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["score.weight"], weights[2]["score.weight"])


# --- bad input: one clear line each -----------------------------------------------------------

GOOD = synthetic(1)[0]


@pytest.mark.parametrize(
    ("third_line", "message"),
    [
        ('{"prompt": [', "line 3: not a JSON line"),
        ("[1, 2]", "line 3: not a JSON object"),
        (
            {k: v for k, v in GOOD.items() if k not in ("split", "chosen")},
            "line 3: missing field(s) chosen, split",
        ),
        (
            {"prompt": [], "completion": [], "label": True, "source": "thumbs"},
            "not *.unpaired.jsonl",
        ),
        ({**GOOD, "split": "test"}, "line 3: split is 'train' or 'heldout', not 'test'"),
        ({**GOOD, "chosen": "Paris"}, "line 3: 'chosen' is not a list of messages"),
        ({**GOOD, "rejected": [{"role": "user", "content": "x"}]}, "is not the assistant's"),
        ({**GOOD, "chosen_side": "c"}, "chosen_side is 'a' or 'b'"),
    ],
)
def test_a_bad_record_is_named_by_file_and_line(
    tmp_path: Path, third_line: Any, message: str
) -> None:
    path = write_lines(tmp_path / "pairs.jsonl", [GOOD, GOOD, third_line])
    with pytest.raises(TrainError, match="^" + str(path).replace(".", r"\.")) as caught:
        load_pairs(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_blank_lines_and_pairs_without_a_preference_are_skipped_and_counted(
    tmp_path: Path,
) -> None:
    same = {**GOOD, "rejected": GOOD["chosen"]}
    pairs = load_pairs(write_lines(tmp_path / "pairs.jsonl", [GOOD, "", same, "  ", GOOD]))
    assert [p.line for p in pairs.pairs] == [1, 5]
    assert pairs.counts()["skipped_lines"] == {"blank": 2, "identical_answers": 1}


def _config_folder(tmp_path: Path, source: Path, **changes: Any) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    config = {**json.loads((source / "config.json").read_text()), **changes}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "a 'gpt2' model"),
        ({"id2label": {"0": "bad", "1": "good"}}, "a sequence classifier with 2 labels"),
    ],
)
def test_an_unsupported_base_is_refused_before_loading(
    tmp_path: Path, tiny_reward: Path, changes: dict[str, Any], message: str
) -> None:
    pairs = load_pairs(write_lines(tmp_path / "pairs.jsonl", synthetic(20)))
    base = _config_folder(tmp_path, tiny_reward, **changes)
    with pytest.raises(TrainError, match=message):
        train_reward(pairs, base, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_base_and_a_split_without_pairs_are_refused(tmp_path: Path) -> None:
    pairs = load_pairs(write_lines(tmp_path / "pairs.jsonl", synthetic(20)))
    with pytest.raises(TrainError, match="no base model folder at"):
        train_reward(pairs, tmp_path / "nowhere", tmp_path / "out", progress=False)
    for split, missing in (("train", "no held-out pairs"), ("heldout", "no train pairs")):
        only = [{**r, "split": split} for r in synthetic(20)]
        one_sided = load_pairs(write_lines(tmp_path / f"{split}.jsonl", only))
        with pytest.raises(TrainError, match=missing):
            train_reward(one_sided, tmp_path / "nowhere", tmp_path / "out", progress=False)


def _cli(tmp_path: Path, data: Path, base: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--base", str(base), "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("corrupt", "line 2: not a JSON line"),
        ("no base", "no base model folder"),
        ("no held-out", "no held-out pairs"),
        ("out exists", "exists: pass --force"),
    ],
)
def test_the_command_says_what_is_wrong_in_one_line_with_status_2(
    tmp_path: Path, tiny_reward: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    records: list[Any] = synthetic(20)
    base = tiny_reward
    if case == "corrupt":
        records[1] = '{"prompt": oops}'
    elif case == "no base":
        base = tmp_path / "missing"
    elif case == "no held-out":
        records = [{**r, "split": "train"} for r in records]
    else:
        (tmp_path / "out").mkdir()
    data = write_lines(tmp_path / "pairs.jsonl", records)
    assert main(_cli(tmp_path, data, base, "--no-progress")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# --- interruptions ----------------------------------------------------------------------------


def test_an_interrupted_run_leaves_no_folder_behind(
    tmp_path: Path, tiny_reward: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = load_pairs(write_lines(tmp_path / "pairs.jsonl", synthetic(40)))
    steps = []

    def interrupted(*args: Any) -> float:
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt
        return original(*args)

    original = reward.bradley_terry.train_step
    monkeypatch.setattr(reward.bradley_terry, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_reward(pairs, tiny_reward, tmp_path / "models" / "judge", FAST, progress=False)
    assert len(steps) == 2
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_an_interrupted_save_keeps_the_old_model_and_leaves_no_sibling(
    tmp_path: Path,
    tiny_reward: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_lines(tmp_path / "pairs.jsonl", synthetic(40))
    old = tmp_path / "out"
    old.mkdir()
    (old / "marker").write_text("the model before")

    def interrupted(card: dict[str, Any], folder: Path) -> Path:
        assert (folder / "model.safetensors").is_file()  # half a model stands in the sibling
        raise KeyboardInterrupt

    monkeypatch.setattr(reward.train, "write_card", interrupted)
    args = _cli(tmp_path, data, tiny_reward, "--force", "--no-progress", "--epochs", "1")
    assert main(args) == 130
    assert "nothing written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.jsonl"]
    assert [p.name for p in old.iterdir()] == ["marker"]

    monkeypatch.undo()
    assert main(args) == 0
    assert "held-out pairwise accuracy" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.jsonl"]
    assert (old / "model_card.json").is_file() and not (old / "marker").exists()


# --- the interval -----------------------------------------------------------------------------


def test_the_wilson_interval() -> None:
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(1.0, 10)[1] == 1.0 and wilson_interval(0.0, 10)[0] == 0.0
    assert 0 < wilson_interval(0.0, 10)[1] < 0.35
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def test_the_command_line_builds_its_parser_without_importing_torch() -> None:
    """`arena-serve` imports reward.train for every command; torch loads only to train."""
    code = (
        "import argparse, sys; import reward.train as t; "
        "t.add_arguments(argparse.ArgumentParser()); "
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
