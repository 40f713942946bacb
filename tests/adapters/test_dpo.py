"""train-variant: DPO on a LoRA adapter learns a known preference rule from a pairs file, and
writes an adapter folder the tiny engine can serve."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from adapters.dpo import dpo_loss
from adapters.folder import check_fits, read_adapter
from adapters.style import synthetic_chats
from serve.cli import main
from serve.models import TINY_LLAMA, prepare


def test_the_loss_is_dpos() -> None:
    import torch

    policy = (torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -5.0]))
    reference = (torch.tensor([-3.5, -5.0]), torch.tensor([-3.5, -5.0]))
    loss, margins = dpo_loss(policy, reference, beta=0.5)
    # pair 0: 0.5 * ((-3 + 3.5) - (-4 + 3.5)) = 0.5; pair 1: no change from the reference.
    assert margins.tolist() == pytest.approx([0.5, 0.0])
    expected = (math.log1p(math.exp(-0.5)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected)


def pairs_file(path: Path, count: int = 48, seed: int = 0) -> Path:
    """Voters who prefer the answer that opens with "Ahoy!" (the known rule), split by voter."""
    rng = random.Random(seed)
    lines = []
    for i, (question, styled) in enumerate(synthetic_chats(count, seed)):
        plain = styled.removeprefix("Ahoy! ").capitalize()
        lines.append(
            {
                "prompt": [{"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": styled}],
                "rejected": [{"role": "assistant", "content": plain}],
                "source": "vote",
                "split": "heldout" if i % 4 == 0 else "train",
                "chosen_side": rng.choice("ab"),
                "voter": f"v{i}",
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_train_variant_learns_the_voters_rule_and_writes_a_servable_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [base] = prepare([TINY_LLAMA])
    data = pairs_file(tmp_path / "prefs.jsonl")
    out = tmp_path / "tiny-dpo"
    argv = ["train-variant", "--data", str(data), "--base", str(base), "--out", str(out)]
    assert main([*argv, "--epochs", "4", "--learning-rate", "2e-3"]) == 0
    assert "held-out preference accuracy" in capsys.readouterr().out
    card = json.loads((out / "dpo_card.json").read_text())
    assert card["data"]["train"] == 36 and card["data"]["heldout"] == 12
    # Before training both margins are 0: accuracy 0.5 by construction. The rule is learned.
    assert card["heldout_preference_accuracy"] >= 0.9
    assert len(card["history"]) == 4 and 1 <= card["best_epoch"] <= 4
    check_fits(read_adapter(out), base, max_lora_rank=8)
    # An existing folder is kept unless --force.
    assert main(argv) == 2
    assert "exists: pass --force" in capsys.readouterr().err


def test_train_variant_refuses_unusable_input_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [base] = prepare([TINY_LLAMA])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": []}\n')
    out = tmp_path / "never"
    assert main(["train-variant", "--data", str(bad), "--base", str(base), "--out", str(out)]) == 2
    assert "missing field" in capsys.readouterr().err and not out.exists()
    data = pairs_file(tmp_path / "prefs.jsonl")
    nowhere = tmp_path / "no-model"
    assert (
        main(["train-variant", "--data", str(data), "--base", str(nowhere), "--out", str(out)]) == 2
    )
    assert "no model folder" in capsys.readouterr().err
    assert (
        main(
            [
                "train-variant",
                "--data",
                str(data),
                "--base",
                str(base),
                "--out",
                str(out),
                "--beta",
                "0",
            ]
        )
        == 2
    )
    assert "--beta must be above 0" in capsys.readouterr().err and not out.exists()


def test_train_variant_can_train_on_a_seeded_subset(tmp_path: Path) -> None:
    [base] = prepare([TINY_LLAMA])
    data = pairs_file(tmp_path / "prefs.jsonl")
    cards = []
    for run in ("one", "two"):
        out = tmp_path / run
        argv = ["train-variant", "--data", str(data), "--base", str(base), "--out", str(out)]
        argv += ["--epochs", "1", "--max-train-pairs", "8", "--max-heldout-pairs", "4"]
        assert main(argv) == 0
        cards.append(json.loads((out / "dpo_card.json").read_text()))
    assert cards[0]["trained_on"] == {"train": 8, "heldout": 4}
    assert cards[0]["history"] == cards[1]["history"]  # the same draw, the same training


def test_answer_logprobs_are_the_full_forwards_own() -> None:
    """Scoring only the answers' positions gives the sums a full forward gives."""
    import torch
    from transformers import AutoModelForCausalLM

    from adapters.dpo import sequence_logprobs

    [base] = prepare([TINY_LLAMA])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    sequences = [([5, 9, 14, 3, 7, 8], 3), ([5, 9, 2, 11], 2), ([4, 4, 6, 1, 2, 3, 9, 10], 6)]
    expected = []
    with torch.no_grad():
        for tokens, start in sequences:
            logits = model(input_ids=torch.tensor([tokens])).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            expected.append(
                sum(logprobs[i - 1, tokens[i]].item() for i in range(start, len(tokens)))
            )
        found = sequence_logprobs(model, sequences, pad_id=0)
    assert found.tolist() == pytest.approx(expected, abs=1e-4)
