"""The experiment engine: experiment model, deterministic assignment, event schema, outcome store.

Pure Python (stdlib, pydantic, numpy/scipy): no ray, vllm or torch, so all experiment logic is
testable in milliseconds without a cluster.
"""

from router.assignment import Assignment, CompiledExperiment, assign, draw_pair
from router.experiment import Arm, Experiment, Guardrail, Pair

__all__ = [
    "Arm",
    "Assignment",
    "CompiledExperiment",
    "Experiment",
    "Guardrail",
    "Pair",
    "assign",
    "draw_pair",
]
