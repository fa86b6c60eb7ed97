#!/usr/bin/env bash
# Set up segbalance on a fresh machine: a virtual environment in .venv with torch, MONAI, nnU-Net v2, the
# I/O libraries and the package itself (editable, extras [all] + test tools). Safe to re-run: it only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

# nnunetv2 pulls timm -> torchvision, whose build must match torch: install the pair explicitly first.
# nnunetv2 >= 2.6.4 excludes torch 2.9.*; 2.14.1 / 0.29.1 have wheels for x86_64 and aarch64 alike.
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
# every import of the [all] extra and the test tools; a missing one (e.g. a dependency added since this
# .venv was made) re-runs the install of the package
if ! python -c "import segbalance, monai, nnunetv2, edt, SimpleITK, nibabel, pydicom, highdicom, cc3d, \
skimage, PIL, tqdm, matplotlib, submitit, pytest, xdist" >/dev/null 2>&1; then
  python -m pip install -q -e ".[dev]"
fi
# rt-utils, the test-only reference of the RTSTRUCT reader (tests/test_rtstruct_rasterization.py): it pins the
# full opencv-python (GUI libraries) and a dataclasses backport, so it goes in without its pins, beside the
# headless OpenCV it actually uses
if ! python -c "import rt_utils, cv2" >/dev/null 2>&1; then
  python -m pip install -q --no-deps "rt-utils>=1.2.7" opencv-python-headless
fi
python -c "import torch, torchvision, monai, nnunetv2, segbalance; print('segbalance', segbalance.__version__, \
'env: torch', torch.__version__, '| torchvision', torchvision.__version__, '| monai', monai.__version__, \
'| nnunetv2', __import__('importlib.metadata').metadata.version('nnunetv2'))"
