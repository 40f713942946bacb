"""The experiment engine: experiment model, deterministic assignment, event schema, outcome store.

Pure Python (stdlib, pydantic, numpy/scipy): no ray, vllm or torch, so all experiment logic is
testable in milliseconds without a cluster.
"""

from router.assignment import assign
from router.experiment import Arm, Experiment

__all__ = ["Arm", "Experiment", "assign"]
