import os
from pathlib import Path

import pytest
import torch

# keep the CPU test run predictable on the 2-core CI machine
torch.set_num_threads(min(2, os.cpu_count() or 1))

#: Cropped copies of the real CT/MR volumes with lesion masks (tests/data/real/README.md), in the repository
#: so that the real-data tests run from any clone.
REAL_DATA = Path(__file__).resolve().parent / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """Folder with ``{lung1,brain1,breast1}_{image,label}.nrrd`` (real CT/MR with lesion masks)."""
    return REAL_DATA


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """A fresh ``nnUNet_results`` folder; no ``nnUNet_preprocessed`` and no segbalance loss from the
    environment (``SEGBALANCE_LOSS``), so trainers built in a test see only what the test gives them."""
    from segbalance.trainers.configurable import LOSS_ENV

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv(LOSS_ENV, raising=False)
    return tmp_path / "results"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_grad_mode_restored():
    """Every test leaves torch's grad mode as it found it (a leaked ``set_grad_enabled(False)`` breaks
    every later test in the same worker, far from its cause)."""
    enabled = torch.is_grad_enabled()
    yield
    leaked = torch.is_grad_enabled() != enabled
    torch.set_grad_enabled(enabled)
    assert not leaked, "the test changed torch's grad mode and did not restore it"
