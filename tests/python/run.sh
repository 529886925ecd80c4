#!/usr/bin/env bash
# Conformance suite for lang-agent: runs the Python SDK tests (dashscope + openai)
# in several virtualenvs, one per dashscope / openai SDK pairing.
#
# Usage: tests/python/run.sh [extra pytest args...]
#   LANG_AGENT_BIN   path of the server binary (default: $REPO/target/debug/lang-agent)
#   PYENV_ONLY       run only the venv with this name (e.g. dashscope-1.23.1)
#   PYTHON           interpreter used to create the venvs (default: python3)
# The binary is NOT built here; build it first (cargo build).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYENV_ROOT_DIR="$REPO/target/pyenv"
PYTHON="${PYTHON:-python3}"
export LANG_AGENT_BIN="${LANG_AGENT_BIN:-$REPO/target/debug/lang-agent}"

if [[ ! -x "$LANG_AGENT_BIN" ]]; then
    echo "run.sh: server binary not found or not executable: $LANG_AGENT_BIN (build it first)" >&2
    exit 2
fi

COMMON_REQS=(pytest pytest-timeout requests)

# name|the SDKs' requirements (space-separated)
VENVS=(
    "xiaozhi-pins|dashscope==1.25.2 openai==2.8.1"  # what current Xiaozhi pins
    "dashscope-1.23.1|dashscope==1.23.1 openai"     # what older Xiaozhi releases pin
    "dashscope-1.x-latest|dashscope<2 openai"       # newest 1.x
    "dashscope-latest|dashscope openai"             # newest overall (2.x)
)

setup_venv() {
    local name="$1" sdkreqs="$2"
    local dir="$PYENV_ROOT_DIR/$name"
    local reqs stamp want
    # shellcheck disable=SC2086
    reqs="$(printf '%s\n' "${COMMON_REQS[@]}" $sdkreqs)"
    want="$( { "$PYTHON" --version 2>&1; printf '%s\n' "$reqs"; } | sha256sum | cut -d' ' -f1)"
    stamp="$dir/.requirements.sha256"
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo "run.sh: (re)creating venv $dir" >&2
    rm -rf "$dir"
    mkdir -p "$PYENV_ROOT_DIR"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # shellcheck disable=SC2086
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check $reqs
    echo "$want" > "$stamp"
}

failed=()
for entry in "${VENVS[@]}"; do
    name="${entry%%|*}"
    sdkreqs="${entry#*|}"
    if [[ -n "${PYENV_ONLY:-}" && "$PYENV_ONLY" != "$name" ]]; then
        continue
    fi
    setup_venv "$name" "$sdkreqs"
    py="$PYENV_ROOT_DIR/$name/bin/python"
    versions="$("$py" -c 'import importlib.metadata as m; print("dashscope", m.version("dashscope"), "openai", m.version("openai"))' 2>/dev/null || echo '?')"
    echo "==================== [$name] $versions ===================="
    rc=0
    (cd "$REPO" && "$py" -m pytest "$HERE" -p no:cacheprovider "$@") || rc=$?
    if [[ $rc -ne 0 ]]; then
        failed+=("$name(rc=$rc)")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run.sh: pytest failed in: ${failed[*]}" >&2
    exit 1
fi
echo "run.sh: all pytest runs passed"
