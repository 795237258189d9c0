#!/usr/bin/env bash
# Everything `make run` and `make test` need on a fresh Debian machine with Python 3.11:
# system packages (when root), uv, and the project's locked virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "setup: please install: $* (as root: apt-get install $*)" >&2
    return 1
  fi
}

# uv: use one on PATH, else a private copy in .tools/ (never the system Python's site-packages).
if command -v uv >/dev/null; then
  UV=$(command -v uv)
else
  if [ ! -x .tools/bin/uv ]; then
    if ! "$PYTHON" -m venv .tools >/dev/null 2>&1; then
      rm -rf .tools
      apt_install python3-venv python3-pip
      "$PYTHON" -m venv .tools
    fi
    .tools/bin/pip install --quiet "uv==$UV_VERSION"
  fi
  UV=$PWD/.tools/bin/uv
fi

"$UV" sync --frozen --quiet --python "$PYTHON"
echo "setup: ok ($("$UV" --version), $(.venv/bin/python --version))"
