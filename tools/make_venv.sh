#!/usr/bin/env bash
# Build the project's virtual environment in $1 (default .venv).
# Each step names itself; a failure says which step failed and leaves no stamp,
# so the next `make` retries from a clean venv.
set -uo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}
STAMP="$VENV/.stamp"
REQ="$(dirname "$0")/../requirements.txt"
pin() { grep -E "^$1([=<>]|$)" "$REQ" | head -n1; }

step() {
  local name=$1; shift
  echo "[env] $name"
  if ! "$@"; then
    echo "[env] FAILED at step: $name (command: $*)" >&2
    rm -f "$STAMP"
    exit 1
  fi
}

rm -f "$STAMP"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  step "create venv with $PYTHON" "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
step "build tools (setuptools<70, wheel, ninja)" $PIP install -q "setuptools<70" wheel ninja
step "torch + torchvision" $PIP install -q "$(pin torch)" "$(pin torchvision)" "$(pin numpy)"
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  # mmcv has no CPU wheel on the index: compile it with its ops against the torch above.
  step "mmcv (compiled with ops, several minutes)" env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    $PIP install -q --no-build-isolation "$(pin mmcv)"
fi
step "remaining requirements" $PIP install -q -r "$REQ"
step "import check" "$VENV/bin/python" -c "import torch, torchvision, mmcv.ops, mmengine, mmseg.models, pydensecrf.densecrf, cv2, skimage, scipy; print('[env] torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmseg ok')"
date -u +%FT%TZ > "$STAMP"
echo "[env] ready: $VENV"
