#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
#
# Installs, in this order: torch/torchvision, build tools, mmengine, mmcv
# (built from the PyPI sdist with ops, cached outside the repository),
# mmdet, pycocotools and this package in editable mode with its dev extra.
# A second run with nothing changed only verifies the environment.
#
# Environment variables:
#   VENV                 where the environment lives (default: <repo>/.venv)
#   PYTHON               interpreter for a new environment (default: python3.11
#                        if present, else python3)
#   TORCH_SPEC           torch requirement (default: torch==2.14.1)
#   TORCHVISION_SPEC     torchvision requirement (default: torchvision==0.29.1)
#   TORCH_INDEX_URL      extra index for CUDA builds of torch, e.g.
#                        https://download.pytorch.org/whl/cu128
#   AUGLOCAL_CACHE_DIR   wheel cache (default: ~/.cache/auglocal_det)
#   MMCV_FORCE_CUDA      1: build mmcv CUDA ops even without a visible GPU;
#                        0: never build them. Default: build them when nvcc,
#                        a CUDA torch and a GPU are all present.
#   MAX_JOBS             parallel compile jobs for mmcv (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-torchvision==0.29.1}"
MMENGINE_SPEC="mmengine==0.10.7"
MMCV_VERSION="2.1.0"
MMDET_SPEC="mmdet==3.3.0"
CACHE_DIR="${AUGLOCAL_CACHE_DIR:-$HOME/.cache/auglocal_det}"

log() { printf '[setup_env] %s\n' "$*" >&2; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

# The stamp records what was installed; a matching stamp plus a passing
# verification means there is nothing to do.
stamp_inputs() {
    cat "$ROOT/tools/setup_env.sh" "$ROOT/pyproject.toml"
    echo "$TORCH_SPEC $TORCHVISION_SPEC ${TORCH_INDEX_URL:-} ${MMCV_FORCE_CUDA:-auto}"
}
STAMP_WANT="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
STAMP_FILE="$VENV/.auglocal_setup_stamp"

verify() {
    "$VENV/bin/python" - <<'PY'
import sys
try:
    import torch, torchvision, mmengine, mmdet, mmcv
    from mmcv.ops import nms, RoIAlign  # noqa: F401  (compiled ops)
    import pycocotools  # noqa: F401
    import auglocal_det
except Exception as exc:  # report and fail loudly
    print(f'[setup_env] verification failed: {type(exc).__name__}: {exc}',
          file=sys.stderr)
    sys.exit(1)
print(f'[setup_env] ok: torch {torch.__version__}, torchvision '
      f'{torchvision.__version__}, mmengine {mmengine.__version__}, mmcv '
      f'{mmcv.__version__} (ops), mmdet {mmdet.__version__}, auglocal_det '
      f'{auglocal_det.__version__}', file=sys.stderr)
PY
}

if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP_WANT" ]] && verify; then
    log "environment in $VENV is up to date"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

log "step 1/6: $TORCH_SPEC $TORCHVISION_SPEC"
torch_args=()
[[ -n "${TORCH_INDEX_URL:-}" ]] && torch_args+=(--extra-index-url "$TORCH_INDEX_URL")
"${PIP[@]}" install -q "${torch_args[@]}" "$TORCH_SPEC" "$TORCHVISION_SPEC"

log "step 2/6: build tools (setuptools<82 keeps pkg_resources for mmcv/mmengine)"
"${PIP[@]}" install -q "setuptools<82" wheel ninja

log "step 3/6: $MMENGINE_SPEC"
"${PIP[@]}" install -q "$MMENGINE_SPEC"

log "step 4/6: mmcv==$MMCV_VERSION with compiled ops"
read -r TORCH_VER TORCH_CUDA CUDA_VISIBLE CXX_STD < <("$PY" - <<'PY'
import re, torch, torch.utils.cpp_extension as ce
src = open(ce.__file__).read()
stds = [int(s) for s in re.findall(r"-std=c\+\+(\d+)", src)]
std = max(stds) if stds else 17
print(torch.__version__.split('+')[0], torch.version.cuda or 'none',
      int(torch.cuda.is_available()), std)
PY
)
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WITH_CUDA=0
case "${MMCV_FORCE_CUDA:-auto}" in
    1) WITH_CUDA=1 ;;
    0) WITH_CUDA=0 ;;
    *) if command -v nvcc >/dev/null 2>&1 && [[ "$TORCH_CUDA" != none && "$CUDA_VISIBLE" == 1 ]]; then WITH_CUDA=1; fi ;;
esac
VARIANT="cpu"; [[ $WITH_CUDA == 1 ]] && VARIANT="cu${TORCH_CUDA//./}"
WHEEL_DIR="$CACHE_DIR/mmcv-$MMCV_VERSION-torch$TORCH_VER-$PY_TAG-$VARIANT"
if "$PY" -c "import mmcv, sys; from mmcv.ops import nms; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
        log "no cached wheel in $WHEEL_DIR: building from source (about 12 min on 2 CPU cores, CUDA ops: $WITH_CUDA, C++$CXX_STD)"
        BUILD="$(mktemp -d)"
        trap 'rm -rf "$BUILD"' EXIT
        "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$BUILD"
        tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
        SRC="$BUILD/mmcv-$MMCV_VERSION"
        if (( CXX_STD > 17 )); then
            # mmcv hard-codes c++14/17; this torch's headers need a newer standard.
            sed -i -E "s/-std=c\+\+1[47]/-std=c++$CXX_STD/g; s#/std:c\+\+1[47]#/std:c++$CXX_STD#g" "$SRC/setup.py"
        fi
        mkdir -p "$WHEEL_DIR"
        (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=$WITH_CUDA MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD/dist" . ) \
            || die "mmcv build failed (see the compiler output above)"
        mv "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR"/
        log "cached $(ls "$WHEEL_DIR"/mmcv-*.whl)"
    else
        log "using cached wheel $(ls "$WHEEL_DIR"/mmcv-*.whl)"
    fi
    "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
    # mmcv's own runtime requirements (without re-resolving mmcv itself)
    "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python
fi
"$PY" -c "from mmcv.ops import nms, RoIAlign" \
    || die "mmcv is installed without compiled ops; delete $WHEEL_DIR and run again"

log "step 5/6: $MMDET_SPEC and pycocotools"
"${PIP[@]}" install -q "$MMDET_SPEC" pycocotools

log "step 6/6: auglocal_det (editable, with the dev extra)"
"${PIP[@]}" install -q --no-build-isolation -e "$ROOT[dev]"

verify || die "the environment does not import; see the message above"
echo "$STAMP_WANT" > "$STAMP_FILE"
log "done: activate with 'source $VENV/bin/activate'"
