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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
