#!/usr/bin/env bash
# Set up segbalance on a fresh machine: a virtual environment in .venv with torch, MONAI, nnU-Net v2 and
# the package itself (editable, with test extras). Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

# nnunetv2 pulls timm -> torchvision, whose build must match torch: install the pair explicitly first.
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  case "$(uname -m)" in
    aarch64|arm64) python -m pip install -q "torch==2.9.1" "torchvision==0.24.1" ;;
    *) python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" ;;
  esac
fi
if ! python -c "import segbalance, monai, nnunetv2, edt, pytest, xdist" >/dev/null 2>&1; then
  python -m pip install -q -e ".[dev]"
fi
python -c "import torch, torchvision, monai, nnunetv2; print('segbalance env: torch', torch.__version__, \
'| torchvision', torchvision.__version__, '| monai', monai.__version__)"
