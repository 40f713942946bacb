"""Swap the Triton kernels into a loaded Hugging Face model, in the style of Liger-Kernel.

`apply_kernels(model)` works on Llama-family models (Llama, Qwen2, Mistral; others are refused:
Gemma's norms scale by 1 + w, Phi-3 and GLM rotate part of a head or interleaved halves): every
`*RMSNorm` module becomes a `FusedRMSNorm` sharing its weight, every gated MLP (`gate_proj`,
`up_proj`, `down_proj`, SiLU) computes `silu(gate) * up` in one kernel, and the rotary
embedding runs on the rotary kernel. Unlike Liger's module-wide swap, the rotary is the
kernel's only inside the patched model's forward: the modeling module's `apply_rotary_pos_emb`
becomes a dispatcher that calls the original for every other model in the process.

The fourth kernel, the fused reward head, is not patched into the model: `reward.scorer` runs
the backbone without its final norm and calls it directly.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kernels.rms_norm import rms_norm
from kernels.rope import apply_rotary
from kernels.swiglu import swiglu

# Architectures whose norms, MLPs and rotary are exactly what the kernels compute.
PATCHABLE_MODEL_TYPES = ("llama", "mistral", "qwen2")
_TRITON_ROPE: ContextVar[bool] = ContextVar("triton_rope", default=False)
_ORIGINAL_ROPE: dict[str, Callable[..., Any]] = {}


class FusedRMSNorm(nn.Module):
    """RMSNorm on the Triton kernel; holds the original module's weight (not a copy)."""

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, triton"


def _fused_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _is_silu(act: object) -> bool:
    return isinstance(act, nn.SiLU) or type(act).__name__ in ("SiLU", "SiLUActivation")


@dataclass
class PatchReport:
    """What `apply_kernels` replaced: counts of modules, and the patched modeling modules."""

    rms_norm: int = 0
    swiglu: int = 0
    rope: list[str] = field(default_factory=list)


def _install_rope_dispatch(modeling: types.ModuleType) -> None:
    """Make `modeling.apply_rotary_pos_emb` the kernel inside patched forwards only (once)."""
    if modeling.__name__ in _ORIGINAL_ROPE:
        return
    original = modeling.apply_rotary_pos_emb
    _ORIGINAL_ROPE[modeling.__name__] = original

    @functools.wraps(original)
    def apply_rotary_pos_emb(*args: Any, **kwargs: Any) -> Any:
        return (apply_rotary if _TRITON_ROPE.get() else original)(*args, **kwargs)

    modeling.apply_rotary_pos_emb = apply_rotary_pos_emb


def _with_triton_rope(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _TRITON_ROPE.set(True)
        try:
            return forward(*args, **kwargs)
        finally:
            _TRITON_ROPE.reset(token)

    return run


def apply_kernels(
    model: nn.Module, *, rms_norm: bool = True, swiglu: bool = True, rope: bool = True
) -> PatchReport:
    """Replace RMSNorm, SwiGLU and rotary embedding in `model` with the Triton kernels.

    Raises ValueError for a model type outside `PATCHABLE_MODEL_TYPES`.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in PATCHABLE_MODEL_TYPES:
        raise ValueError(
            f"the Triton kernels compute Llama-family layers ({', '.join(PATCHABLE_MODEL_TYPES)}),"
            f" not {model_type!r} ones"
        )
    report = PatchReport()
    for name, module in list(model.named_modules()):
        if rms_norm and type(module).__name__.endswith("RMSNorm") and hasattr(module, "weight"):
            eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
            model.set_submodule(name, FusedRMSNorm(module.weight, float(eps)))
            report.rms_norm += 1
        elif (
            swiglu
            and all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn"))
            and _is_silu(module.act_fn)
        ):
            module.forward = types.MethodType(_fused_mlp_forward, module)
            report.swiglu += 1
    if rope:
        for cls in type(model).__mro__:
            modeling = sys.modules.get(cls.__module__)
            if modeling is not None and hasattr(modeling, "apply_rotary_pos_emb"):
                _install_rope_dispatch(modeling)
                # The backbone's forward: both the full model's and the scorer's path run it.
                backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
                backbone.forward = _with_triton_rope(backbone.forward)
                report.rope.append(modeling.__name__)
                break
    return report
