"""Where tests of Triton code run: on CUDA when there is a GPU, else under the Triton interpreter,
else nowhere (skipped). The conftests of tests/kernels and tests/reward share this.

TRITON_INTERPRET=1 has to be in the environment before triton is first imported, and it must not
be set in the main test process, which also starts vLLM engines; so this module only reads it.
On a CPU machine run `TRITON_INTERPRET=1 python -m pytest tests/kernels tests/reward`.
"""

import os
from pathlib import Path

import pytest
import torch

ON_CUDA = torch.cuda.is_available()
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
SKIP_REASON = (
    "Triton kernels need a CUDA device or the interpreter: "
    "run with TRITON_INTERPRET=1; `make test` does"
)


def skip_without_triton(items: list[pytest.Item], folder: Path) -> None:
    """Without CUDA or the interpreter, mark every test under `folder` skipped."""
    if ON_CUDA or INTERPRETED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if folder in item.path.parents:
            item.add_marker(skip)


@pytest.fixture
def device() -> str:
    """Where the tensors live: the GPU when there is one, else the CPU (interpreter)."""
    return "cuda" if ON_CUDA else "cpu"
