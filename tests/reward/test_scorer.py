"""The reward scorer: batching plan, pooling, and patched (Triton) scores matching transformers."""

from __future__ import annotations

import ctypes
import math
import platform
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.patch import FusedRMSNorm, apply_kernels
from reward.scorer import RewardScorer, last_real_index, plan_batches, retain_freed_memory
from serve.models import MODELS_DIR, TINY_REWARD, prepare

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ANSWERS = [
    "Paris.",
    "The capital of France is Paris, a city on the Seine.",
    "I am not sure, but I think it might be Lyon or maybe Paris; let me explain at length " * 3,
    "",
]


@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=60),
    budget=st.integers(1, 2000),
    max_batch=st.none() | st.integers(1, 16),
)
def test_plan_batches_covers_every_sequence_within_budget(
    lengths: list[int], budget: int, max_batch: int | None
) -> None:
    batches = plan_batches(lengths, budget, max_batch)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1  # a long sequence gets a batch of its own
        assert max_batch is None or len(batch) <= max_batch
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat, reverse=True), "neighbours in length share a batch"


def test_plan_batches_refuses_an_empty_budget() -> None:
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches([3], 0)


def test_last_real_index_is_the_rightmost_non_pad_token() -> None:
    ids = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8], [0, 5, 0, 0]])
    assert last_real_index(ids, 0).tolist() == [1, 3, 1]
    assert last_real_index(ids, None).tolist() == [3, 3, 3]


@pytest.fixture(scope="module")
def reward_model() -> str:
    [folder] = prepare([TINY_REWARD])
    return str(folder)


def test_render_puts_the_response_last(reward_model: str) -> None:
    scorer = RewardScorer(reward_model, device="cpu", kernels=False)
    text = scorer.render(QUESTION, "Paris.")
    assert text.index("capital of France") < text.index("Paris.")
    assert scorer.backend == "torch"


def test_batching_does_not_change_scores(reward_model: str) -> None:
    scorer = RewardScorer(reward_model, device="cpu", dtype="float32", kernels=False)
    pairs = [(QUESTION, answer) for answer in ANSWERS]
    ids = scorer.encode([scorer.render(*pair) for pair in pairs])
    alone = [scorer.score([pair])[0] for pair in pairs]
    for budget in (2 * max(map(len, ids)), 10_000):  # two padded buckets; then one batch
        assert len(plan_batches([len(x) for x in ids], budget)) < len(pairs)
        together = scorer.score(pairs, token_budget=budget)
        torch.testing.assert_close(
            torch.tensor(together), torch.tensor(alone), atol=1e-4, rtol=1e-4
        )


def test_a_truncated_text_keeps_its_end(reward_model: str) -> None:
    scorer = RewardScorer(reward_model, device="cpu", kernels=False, max_length=16)
    [ids] = scorer.encode([scorer.render(QUESTION, "Paris. " * 50)])
    assert len(ids) == 16
    assert scorer.tokenizer.decode(ids).endswith("<|im_end|>\n")


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [("float32", 1e-4), ("bfloat16", 5e-2), ("float16", 1e-2)]
)
def test_patched_scores_match_transformers(
    reward_model: str, device: str, dtype: str, tolerance: float
) -> None:
    """The Triton backend (kernels patched in, fused head) against the unpatched model."""
    pairs = [(QUESTION, answer) for answer in (ANSWERS[0], ANSWERS[1], ANSWERS[3])]  # ragged
    reference = RewardScorer(reward_model, device=device, dtype=dtype, kernels=False)
    patched = RewardScorer(reward_model, device=device, dtype=dtype, kernels=True)
    assert patched.backend == "triton"
    assert any(isinstance(m, FusedRMSNorm) for m in patched.model.modules())
    expected, got = reference.score(pairs), patched.score(pairs)
    torch.testing.assert_close(
        torch.tensor(got), torch.tensor(expected), atol=tolerance, rtol=tolerance
    )


def test_the_rotary_kernel_runs_in_patched_models_only(reward_model: str, device: str) -> None:
    """The rotary swap is the patched model's, not the process's: a model loaded beside it
    keeps transformers' own rotary (and the patched one is checked against that)."""
    from transformers.models.llama import modeling_llama

    from kernels import patch

    pairs = [(QUESTION, answer) for answer in ANSWERS[:2]]
    before = RewardScorer(reward_model, device=device, dtype="float32", kernels=False)
    expected = before.score(pairs)
    calls: list[str] = []
    original = patch.apply_rotary

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("kernel")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    patch.apply_rotary = counting  # type: ignore[assignment]
    try:
        patched = RewardScorer(reward_model, device=device, dtype="float32", kernels=True)
        assert modeling_llama.apply_rotary_pos_emb is not original
        assert before.score(pairs) == expected and calls == []  # still transformers' rotary
        fresh = RewardScorer(reward_model, device=device, dtype="float32", kernels=False)
        assert fresh.score(pairs) == expected and calls == []
        got = patched.score(pairs)
        assert calls  # the kernel ran, in the patched forward only
    finally:
        patch.apply_rotary = original
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-4, rtol=1e-4)


def test_the_kernels_refuse_architectures_they_do_not_compute(reward_model: str) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(MODELS_DIR / TINY_REWARD)
    model.config.model_type = "gemma2"  # its norms scale by 1 + w
    with pytest.raises(ValueError, match="not 'gemma2'"):
        apply_kernels(model)


def test_a_pair_the_template_refuses_scores_nan_alone(reward_model: str) -> None:
    scorer = RewardScorer(reward_model, device="cpu", dtype="float32", kernels=False)
    good = scorer.score([(QUESTION, "Paris.")])
    refusing = "{{ raise_exception('roles must alternate') if messages[0].role == 'system' }}"
    scorer.tokenizer.chat_template = refusing + scorer.tokenizer.chat_template
    system = [{"role": "system", "content": "Be brief."}, *QUESTION]
    scores = scorer.score([(QUESTION, "Paris."), (system, "Paris.")])
    assert scores[0] == pytest.approx(good[0], abs=1e-6) and math.isnan(scores[1])
    assert scorer.score([]) == []


def test_apply_kernels_reports_what_it_replaced(reward_model: str) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(MODELS_DIR / TINY_REWARD)
    layers = model.config.num_hidden_layers
    report = apply_kernels(model)
    assert report.rms_norm == 2 * layers + 1  # two per layer and the final norm
    assert report.swiglu == layers
    assert report.rope == ["transformers.models.llama.modeling_llama"]


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (malloc.h), for the main arena."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def test_freed_activations_stay_in_the_heap_after_retain_freed_memory() -> None:
    """A 24 MiB block (an activation of a large batch) comes from the heap, not its own mmap,
    and stays there once freed: the next op reuses it without page-faulting it in again."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt and mallinfo2 are glibc's")
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 24 << 20
    assert retain_freed_memory()
    mapped = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    assert block
    try:
        assert libc.mallinfo2().hblkhd == mapped, "the block got an mmap of its own"
    finally:
        libc.free(block)
    assert libc.mallinfo2().fordblks >= size, "the freed block went back to the kernel"
