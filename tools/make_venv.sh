#!/usr/bin/env bash
# Build one of the project's virtual environments:
#   tools/make_venv.sh core [.venv]      requirements.txt: every stage of `make demo` and the tests
#   tools/make_venv.sh mm   [.venv-mm]   requirements-mm.txt: + mmcv (compiled) and mmsegmentation
# Each step names itself; a failure says which step failed and leaves no stamp,
# so the next `make` retries from where it stopped.
set -uo pipefail
KIND=${1:-core}
case "$KIND" in
  core) REQ_NAME=requirements.txt;    DEFAULT_VENV=.venv ;;
  mm)   REQ_NAME=requirements-mm.txt; DEFAULT_VENV=.venv-mm ;;
  *) echo "usage: $0 core|mm [VENV]" >&2; exit 2 ;;
esac
VENV=${2:-$DEFAULT_VENV}
PYTHON=${PYTHON:-python3.11}
STAMP="$VENV/.stamp"
REQ="$(dirname "$0")/../$REQ_NAME"
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

if [ "$KIND" = core ]; then
  step "torch ($(pin torch))" $PIP install -q "$(pin torch)" "$(pin numpy)"
  step "remaining requirements" $PIP install -q -r "$REQ"
  step "import check" "$VENV/bin/python" -c "import torch, numpy, scipy, cv2, skimage, PIL, pydensecrf.densecrf, mmengine.config, matplotlib; print('[env] torch', torch.__version__, 'numpy', numpy.__version__)"
else
  step "build tools (setuptools<70, wheel, ninja)" $PIP install -q "setuptools<70" wheel ninja
  step "torch + torchvision" $PIP install -q "$(pin torch)" "$(pin torchvision)" "$(pin numpy)"
  if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    # mmcv has no CPU wheel on the index: compile it with its ops against the torch above.
    step "mmcv (compiled with ops, several minutes)" env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      $PIP install -q --no-build-isolation "$(pin mmcv)"
  fi
  step "remaining requirements" $PIP install -q -r "$REQ"
  step "import check" "$VENV/bin/python" -c "import torch, torchvision, mmcv.ops, mmengine, mmseg.models, pydensecrf.densecrf, cv2, skimage, scipy; print('[env] torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmseg ok')"
fi
date -u +%FT%TZ > "$STAMP"
echo "[env] ready: $VENV ($KIND)"
