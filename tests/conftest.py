import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def share_the_cores() -> None:
    """README's test command runs the suite on pytest-xdist's workers, a test file to each. A worker, and the
    processes its tests start, get its share of the cores as PyTorch's threads: workers that each took every
    core would slow one another many times over. $OMP_NUM_THREADS, where set, wins."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(workers))))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


share_the_cores()


def invoke_dgm(*args, env=None):
    """Run a dgm command in this process (Typer's CliRunner), arguments as strings; stdout and stderr apart."""
    from typer.testing import CliRunner

    from dgm_cli.cli import app

    return CliRunner().invoke(app, [str(arg) for arg in args], env=env)


def load_script(name: str):
    """A module of scripts/, which is not a package: the tests call its functions as the script's command would."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def shared_mnist_root() -> Path | None:
    """The full official MNIST files beside the checkout (../shared/data/mnist), or $DGM_TEST_MNIST."""
    candidates = [Path(os.environ["DGM_TEST_MNIST"])] if os.environ.get("DGM_TEST_MNIST") else []
    candidates.append(REPO.parent / "shared" / "data" / "mnist")
    for root in candidates:
        if (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
            return root
    return None


@pytest.fixture
def mnist_root() -> Path:
    root = shared_mnist_root()
    if root is None:
        pytest.skip("the official MNIST files are not available (set DGM_TEST_MNIST)")
    return root


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder, offline, with an empty data cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DGM_OFFLINE", "1")
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "no-data"))
    return tmp_path
