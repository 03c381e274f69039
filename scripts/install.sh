#!/usr/bin/env bash
# Idempotent set-up of nasdet's virtual environment (.venv by default).
#
# The expensive parts are cached:
#   * mmcv 2.1.0 with ops is built once from the PyPI source archive and kept in
#     $NASDET_CACHE/wheels (default ~/.cache/nasdet/wheels), keyed by mmcv, torch,
#     CUDA and Python versions;
#   * a stamp in the venv records the hash of the install inputs, so a second run
#     returns within seconds.
#
# Environment knobs:
#   NASDET_VENV=path        where the venv lives (default: <repo>/.venv)
#   NASDET_PYTHON=python3.x interpreter that creates it (default: python3.11, else python3)
#   NASDET_TORCH_SPEC="..." torch pip spec; GPU users put their CUDA build here, e.g.
#                           NASDET_TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128"
#   NASDET_SKIP_TORCH=1     keep whatever torch the venv already has (bring your own)
#   MAX_JOBS=N              parallel compile jobs for mmcv (default: nproc)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NASDET_VENV:-$repo/.venv}"
cache="${NASDET_CACHE:-$HOME/.cache/nasdet}"
torch_spec="${NASDET_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
mmcv_version="2.1.0"

log() { printf '[install] %s\n' "$*" >&2; }
# pip -q still warns about each configured find-links location that lacks a package.
quiet_pip() {
  "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}

stamp="$venv/.nasdet-install-stamp"
inputs_hash="$( (cat "$repo/pyproject.toml" "$repo/setup.py" "$repo/MANIFEST.in" "$repo/scripts/install.sh"; echo "$torch_spec"; echo "${NASDET_SKIP_TORCH:-}") | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_hash" ]]; then
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  py="${NASDET_PYTHON:-$(command -v python3.11 || command -v python3)}"
  log "creating venv at $venv with $py"
  "$py" -m venv "$venv"
fi
pip=(quiet_pip install)

if [[ -z "${NASDET_SKIP_TORCH:-}" ]]; then
  log "installing $torch_spec"
  # shellcheck disable=SC2086
  "${pip[@]}" $torch_spec
fi
key="$("$venv/bin/python" - <<'PY'
import sys, torch
cuda = torch.version.cuda if torch.cuda.is_available() or __import__('os').environ.get('FORCE_CUDA') else None
print(f"torch{torch.__version__.split('+')[0]}-{'cu' + cuda.replace('.', '') if cuda else 'cpu'}-py{sys.version_info.major}{sys.version_info.minor}")
PY
)"
wheel_dir="$cache/wheels/mmcv-$mmcv_version-$key"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
  log "building mmcv $mmcv_version with ops for $key (once; 12-25 min on 2 cores)"
  # mmcv's setup.py imports pkg_resources, which setuptools>=70 dropped; torch wants
  # setuptools>=77 at run time, so the old one is only there during the build.
  "${pip[@]}" "setuptools<70" wheel ninja
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  quiet_pip download --no-deps --no-binary :all: \
    "mmcv==$mmcv_version" -d "$build"
  tar -xzf "$build"/mmcv-"$mmcv_version".tar.gz -C "$build"
  src="$build/mmcv-$mmcv_version"
  # torch>=2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++14/c++17.
  sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$src/setup.py"
  grep -q 'c++20' "$src/setup.py" || { log "could not patch mmcv's setup.py for C++20"; exit 1; }
  (cd "$src" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" MMCV_WITH_OPS=1 \
    quiet_pip wheel --no-deps --no-build-isolation . -w "$build/out")
  mkdir -p "$wheel_dir"
  # Atomic publish: copy under a temp name, then rename.
  whl="$(ls "$build"/out/mmcv-*.whl)"
  cp "$whl" "$wheel_dir/.tmp-$(basename "$whl")"
  mv "$wheel_dir/.tmp-$(basename "$whl")" "$wheel_dir/$(basename "$whl")"
  "${pip[@]}" "setuptools>=77,<81"
fi
log "installing cached mmcv wheel from $wheel_dir"
"${pip[@]}" --no-deps "$wheel_dir"/mmcv-*.whl

log "installing nasdet and its dependencies"
"${pip[@]}" -e "$repo[dev]"

"$venv/bin/python" -c "from mmcv.ops import RoIAlign, nms; import mmdet, optuna, ray" \
  || { log "import check failed"; exit 1; }
echo "$inputs_hash" > "$stamp"
log "ready: $venv"
