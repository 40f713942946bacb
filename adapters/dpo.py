"""Train a variant from votes: `arena-serve train-variant --data prefs.jsonl --base MODEL --out
models/NAME` (or `python -m adapters.dpo` with the same flags) writes a LoRA adapter folder that an
adapter variant serves (`{name, engine: <the base's variant>, adapter: models/NAME}`).

The input is the pairs file of `arena-serve export-preferences` (`reward.pairs`, split by voter).
The method is DPO (Rafailov et al., 2023) on a peft LoRA of the base, in plain torch:

- every answer is rendered with the base's chat template as vLLM renders the chat (the prompt's
  messages, then the answer as the assistant's turn), and scored by its summed token
  log-probability under the policy (base + LoRA) and under the reference (the base, the adapter
  switched off);
- the loss is `-log sigmoid(beta * ((pc - rc) - (pr - rr)))` over the train pairs, where p and r
  are the policy's and the reference's log-probabilities of the chosen (c) and rejected (r)
  answers; the reference's are computed once, before training (it does not change);
- after every epoch, the held-out preference accuracy (how often the policy's implicit reward,
  `beta * (p - r)`, ranks the chosen answer above the rejected one) and loss are measured; the
  best epoch's adapter is kept (ties: the lower held-out loss). Before training that accuracy is
  0.5 by construction (both margins are 0), so the figure says what the adapter learned.

Why not TRL's `DPOTrainer`: it is not a dependency of the project (it pulls `datasets` and its
own pins of transformers), and its data collation and chat rendering would have to be made to
match the engine's; the loss is a few lines. The output folder is built beside its target and
renamed into place only once complete (`reward.train.staged_folder`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.chat import encode_chat, pad_id_of
from adapters.lora import with_lora
from reward.pairs import Pair, Pairs, TrainError, load_pairs, require_both_splits


@dataclass(frozen=True, kw_only=True)
class DPOSettings:
    beta: float = 0.1
    learning_rate: float = 5e-4
    epochs: int = 3
    batch_size: int = 4
    rank: int = 8
    alpha: int = 16
    max_length: int = 512
    max_train_pairs: int | None = None
    max_heldout_pairs: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Encoded:
    """One pair's two token sequences and where each answer starts."""

    chosen: list[int]
    chosen_start: int
    rejected: list[int]
    rejected_start: int


def encode_answer(tokenizer: Any, pair: Pair, side: str, max_length: int) -> tuple[list[int], int]:
    """(token ids, index of the answer's first token): the conversation rendered by the chat
    template with the answer as the assistant's last turn; long prompts lose their start."""
    messages, answer = pair.conversation(side)  # type: ignore[arg-type]
    try:
        ids, start = encode_chat(tokenizer, messages, answer)
    except ValueError as exc:
        raise TrainError(f"line {pair.line}: {exc}") from None
    cut = max(0, len(ids) - max_length)
    return ids[cut:], max(1, start - cut)  # at least one token of context before the answer


def encode(tokenizer: Any, pairs: list[Pair], max_length: int) -> list[Encoded]:
    out = []
    for pair in pairs:
        chosen, c_start = encode_answer(tokenizer, pair, "chosen", max_length)
        rejected, r_start = encode_answer(tokenizer, pair, "rejected", max_length)
        out.append(Encoded(chosen, c_start, rejected, r_start))
    return out


def sequence_logprobs(model: Any, sequences: list[tuple[list[int], int]], pad_id: int) -> Any:
    """The summed log-probability of each sequence's tokens from its answer start on. Logits
    are computed only from the position before the earliest answer start on (the prompts, most
    of each sequence, need none): the same sums, for less of the vocabulary projection."""
    import torch

    width = max(len(ids) for ids, _ in sequences)
    first = min(start for _, start in sequences) - 1  # the position predicting an answer's start
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    scored = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (tokens, start) in enumerate(sequences):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        scored[row, start : len(tokens)] = True
    keep = torch.arange(first, width - 1)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()
    targets = ids[:, first + 1 :]
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return (token_logprobs * scored[:, first + 1 :]).sum(dim=1)


def pair_logprobs(model: Any, batch: list[Encoded], pad_id: int) -> tuple[Any, Any]:
    """(chosen, rejected) summed answer log-probabilities of a batch, in one forward."""
    sequences = [(e.chosen, e.chosen_start) for e in batch]
    sequences += [(e.rejected, e.rejected_start) for e in batch]
    both = sequence_logprobs(model, sequences, pad_id)
    return both[: len(batch)], both[len(batch) :]


def dpo_loss(policy: tuple[Any, Any], reference: tuple[Any, Any], beta: float) -> tuple[Any, Any]:
    """(mean loss, per-pair margins `beta * ((pc - rc) - (pr - rr))`)."""
    import torch.nn.functional as F

    margins = beta * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
    return -F.logsigmoid(margins).mean(), margins


def _batches(items: list[int], size: int, what: str | None = None) -> Any:
    """`items` in batches of `size`; with a progress bar on stderr when `what` names the pass."""
    from tqdm import tqdm

    batches = [items[i : i + size] for i in range(0, len(items), size)]
    if what is None:
        return batches
    return tqdm(batches, desc=what, unit="batch", file=sys.stderr, leave=False)


@dataclass
class Fit:
    best_epoch: int
    heldout_accuracy: float
    heldout_loss: float
    history: list[dict[str, float]]
    state: dict[str, Any]


def reference_logprobs(
    model: Any, data: list[Encoded], pad_id: int, batch_size: int
) -> tuple[Any, Any]:
    """The reference's (the base's: the adapter switched off) chosen and rejected answer
    log-probabilities of every pair, computed once."""
    import torch

    chunks = []
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        for batch in _batches(list(range(len(data))), batch_size, "reference"):
            chunks.append(pair_logprobs(model, [data[i] for i in batch], pad_id))
    return torch.cat([c for c, _ in chunks]), torch.cat([r for _, r in chunks])


def _reference_of(reference: tuple[Any, Any], batch: list[int]) -> tuple[Any, Any]:
    import torch

    index = torch.tensor(batch)
    return reference[0][index], reference[1][index]


def evaluate(
    model: Any, data: list[Encoded], reference: tuple[Any, Any], pad_id: int, settings: DPOSettings
) -> tuple[float, float]:
    """(preference accuracy: the share of pairs whose margin is positive, mean DPO loss)."""
    import torch

    model.eval()
    loss_sum, margins = 0.0, []
    with torch.no_grad():
        for batch in _batches(list(range(len(data))), settings.batch_size, "held out"):
            policy = pair_logprobs(model, [data[i] for i in batch], pad_id)
            loss, margin = dpo_loss(policy, _reference_of(reference, batch), settings.beta)
            loss_sum += loss.item() * len(batch)
            margins.append(margin)
    return (torch.cat(margins) > 0).float().mean().item(), loss_sum / len(data)


def train_epoch(
    model: Any,
    optimizer: Any,
    data: list[Encoded],
    reference: tuple[Any, Any],
    order: list[int],
    pad_id: int,
    settings: DPOSettings,
) -> float:
    """One pass over `data` in `order`; the mean train loss."""
    model.train()
    loss_sum = 0.0
    for batch in _batches(order, settings.batch_size, "train"):
        policy = pair_logprobs(model, [data[i] for i in batch], pad_id)
        loss, _ = dpo_loss(policy, _reference_of(reference, batch), settings.beta)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_sum += loss.item() * len(batch)
    return loss_sum / len(data)


def train_dpo(
    model: Any,
    train: list[Encoded],
    heldout: list[Encoded],
    pad_id: int,
    settings: DPOSettings,
    log: Any = print,
) -> Fit:
    """Train `model` (a peft model) by DPO; the best epoch's adapter weights are in the result."""
    import torch

    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    train_ref = reference_logprobs(model, train, pad_id, settings.batch_size)
    heldout_ref = reference_logprobs(model, heldout, pad_id, settings.batch_size)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    best: Fit | None = None
    history = []
    for epoch in range(1, settings.epochs + 1):
        order = list(range(len(train)))
        rng.shuffle(order)
        train_loss = train_epoch(model, optimizer, train, train_ref, order, pad_id, settings)
        accuracy, heldout_loss = evaluate(model, heldout, heldout_ref, pad_id, settings)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "heldout_loss": heldout_loss,
                "heldout_accuracy": accuracy,
            }
        )
        log(
            f"epoch {epoch}: train loss {train_loss:.4f}, held-out loss {heldout_loss:.4f}, "
            f"held-out preference accuracy {accuracy:.3f}"
        )
        if best is None or (accuracy, -heldout_loss) > (best.heldout_accuracy, -best.heldout_loss):
            state = {n: t.detach().clone() for n, t in model.state_dict().items() if n in trainable}
            best = Fit(epoch, accuracy, heldout_loss, history, state)
    assert best is not None
    best.history = history
    return best


def subset(pairs: list[Pair], cap: int | None, rng: random.Random) -> list[Pair]:
    """At most `cap` of the pairs, drawn at random (seeded), in file order."""
    if cap is None or len(pairs) <= cap:
        return pairs
    keep = set(rng.sample(range(len(pairs)), cap))
    return [pair for i, pair in enumerate(pairs) if i in keep]


def train_variant(
    data: Path, base: Path, out: Path, settings: DPOSettings, force: bool = False, log: Any = print
) -> dict[str, Any]:
    """Train the adapter and write it to `out` with `dpo_card.json`; return the card."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reward.train import check_out, staged_folder

    check_out(out, force)
    started = time.perf_counter()
    pairs: Pairs = load_pairs(data)
    require_both_splits(pairs)
    if not (base / "config.json").is_file():
        raise TrainError(f"--base {base}: no model folder there (a config.json)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    padding = pad_id_of(tokenizer)
    torch.manual_seed(settings.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = with_lora(model, settings.rank, settings.alpha)
    rng = random.Random(settings.seed)
    chosen = {
        split: subset(pairs.of_split(split), cap, rng)
        for split, cap in (
            ("train", settings.max_train_pairs),
            ("heldout", settings.max_heldout_pairs),
        )
    }
    train = encode(tokenizer, chosen["train"], settings.max_length)
    heldout = encode(tokenizer, chosen["heldout"], settings.max_length)
    log(f"{len(train)} train and {len(heldout)} held-out pairs; DPO on a rank-{settings.rank} LoRA")
    fit = train_dpo(model, train, heldout, padding, settings, log=log)
    model.load_state_dict(fit.state, strict=False)
    card = {
        "method": "DPO on a LoRA adapter (plain torch and peft; adapters.dpo)",
        "base": str(base),
        "data": {"path": str(data), "sha256": pairs.sha256, **pairs.counts()},
        "trained_on": {"train": len(train), "heldout": len(heldout)},
        "settings": asdict(settings),
        "best_epoch": fit.best_epoch,
        "heldout_preference_accuracy": fit.heldout_accuracy,
        "heldout_loss": fit.heldout_loss,
        "history": fit.history,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }
    with staged_folder(out, force) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        (staging / "dpo_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DPOSettings()
    parser.add_argument("--data", required=True, type=Path, help="pairs file of export-preferences")
    parser.add_argument("--base", required=True, type=Path, help="local causal LM folder")
    parser.add_argument("--out", required=True, type=Path, help="adapter folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--rank", type=int, default=defaults.rank, choices=(1, 8, 16, 32, 64))
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument(
        "--max-train-pairs", type=int, help="train on at most this many pairs (a seeded draw)"
    )
    parser.add_argument(
        "--max-heldout-pairs", type=int, help="evaluate on at most this many held-out pairs"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)


def run(args: argparse.Namespace) -> int:
    settings = DPOSettings(
        beta=args.beta,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        rank=args.rank,
        alpha=2 * args.rank,
        max_length=args.max_length,
        max_train_pairs=args.max_train_pairs,
        max_heldout_pairs=args.max_heldout_pairs,
        seed=args.seed,
    )
    for name in ("beta", "learning_rate"):
        if getattr(settings, name) <= 0:
            print(f"error: --{name.replace('_', '-')} must be above 0", file=sys.stderr)
            return 2
    for name in ("epochs", "batch_size", "max_length", "max_train_pairs", "max_heldout_pairs"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        card = train_variant(args.data, args.base, args.out, settings, force=args.force)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: held-out preference accuracy {card['heldout_preference_accuracy']:.3f} "
        f"(epoch {card['best_epoch']}), {card['seconds']} s. Serve it as an adapter variant: "
        f"{{name: ..., engine: <the variant serving {args.base.name}>, adapter: {args.out}}}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.dpo", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
