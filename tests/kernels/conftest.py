"""Run the kernel tests on CUDA when there is a GPU, else under the Triton interpreter, else skip
(`tests.triton_device`). On a CPU machine run `TRITON_INTERPRET=1 python -m pytest tests/kernels`.
"""

from pathlib import Path

import pytest

from tests.triton_device import device as device  # a fixture: pytest looks for it here
from tests.triton_device import skip_without_triton

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_without_triton(items, HERE)
