"""Swap the Triton kernels into a loaded Hugging Face model, in the style of Liger-Kernel.

`apply_kernels(model)` works on Llama-family models (Llama, Qwen2, Mistral): every `*RMSNorm`
module becomes a `FusedRMSNorm` sharing its weight, every gated MLP (`gate_proj`, `up_proj`,
`down_proj`, SiLU) computes `silu(gate) * up` in one kernel, and the modeling module's
`apply_rotary_pos_emb` becomes the rotary kernel. The rotary swap is module-wide, as in Liger:
every model of that architecture in the process uses it from then on.

The fourth kernel, the fused reward head, is not patched into the model: `kernels.scorer` runs
the backbone without its final norm and calls it directly.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import torch
from torch import nn

from kernels.rms_norm import rms_norm
from kernels.rope import apply_rotary
from kernels.swiglu import swiglu


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


def apply_kernels(
    model: nn.Module, *, rms_norm: bool = True, swiglu: bool = True, rope: bool = True
) -> PatchReport:
    """Replace RMSNorm, SwiGLU and rotary embedding in `model` with the Triton kernels."""
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
                modeling.apply_rotary_pos_emb = apply_rotary
                report.rope.append(modeling.__name__)
                break
    return report
