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

# System packages: bubblewrap (the sandbox), libseccomp (its syscall filter), util-linux
# (setpriv and prlimit start each sandbox; nsenter for the multi-host tests), a CJK font,
# and for the multi-host and TLS tests iproute2 (network namespaces) and openssl.
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v setpriv >/dev/null && command -v prlimit >/dev/null && command -v nsenter >/dev/null \
  || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 || missing+=(libseccomp2)
[ -n "$(ls /usr/share/fonts/truetype/wqy 2>/dev/null)" ] || missing+=(fonts-wqy-zenhei)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}" || echo "setup: continuing without ${missing[*]}" >&2
fi

# The sandbox never runs as root: when the bot is, each sandbox runs as a host uid of its own
# from SANDBOX_UID_BASE (SANDBOX_UID_COUNT of them). They need no /etc/passwd entry; this checks
# that no user (nor a subordinate range, /etc/subuid) holds one of them.
if [ "$(id -u)" = 0 ]; then
  UID_BASE=${SANDBOX_UID_BASE:-2000000000}
  UID_COUNT=${SANDBOX_UID_COUNT:-1024}
  UID_TOP=$((UID_BASE + UID_COUNT))
  taken=$(getent passwd | awk -F: -v lo="$UID_BASE" -v hi="$UID_TOP" '$3 >= lo && $3 < hi {print $1}')
  if [ -f /etc/subuid ]; then
    taken+=$(awk -F: -v lo="$UID_BASE" -v hi="$UID_TOP" \
      '$2 < hi && $2 + $3 > lo {print " subuid:" $1}' /etc/subuid)
  fi
  if [ -n "$taken" ]; then
    echo "setup: the sandbox uids $UID_BASE-$((UID_TOP - 1)) are in use ($taken);" \
      "set SANDBOX_UID_BASE to a free range" >&2
    exit 1
  fi
fi

# Idle sessions share their preloaded pages through the kernel's same-page merging (KSM,
# SANDBOX_SHARE_MEMORY): start it when it is stopped. It scans only memory a process marks
# mergeable, so nothing else on the machine changes. A root bot starts it too (after a reboot).
KSM_RUN=/sys/kernel/mm/ksm/run
if [ "$(id -u)" = 0 ] && [ -w "$KSM_RUN" ] && [ "$(cat "$KSM_RUN")" = 0 ]; then
  echo 1 > "$KSM_RUN" || echo "setup: could not start KSM (idle sessions will not share memory)" >&2
fi

"$UV" sync --frozen --quiet --python "$PYTHON"

# The sandbox runtime: its own venv, never the bot's, rebuilt when its requirements change.
RUNTIME=${LABBOT_RUNTIME_DIR:-$PWD/.runtime}
REQS=labbot/sandbox/runtime/requirements.txt
if ! cmp -s "$REQS" "$RUNTIME/.requirements.txt" 2>/dev/null; then
  [ -x "$RUNTIME/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$RUNTIME"
  "$UV" pip install --quiet --python "$RUNTIME/bin/python" -r "$REQS"
  cp "$REQS" "$RUNTIME/.requirements.txt"
fi
# Matplotlib's font cache and settings, built once so each sandbox starts fast.
mkdir -p "$RUNTIME/mplconfig"
cp labbot/sandbox/runtime/matplotlibrc "$RUNTIME/mplconfig/matplotlibrc"
if [ ! -f "$RUNTIME/mplconfig/.fonts-built" ] || [ -n "$(find /usr/share/fonts -newer "$RUNTIME/mplconfig/.fonts-built" -print -quit 2>/dev/null)" ]; then
  rm -f "$RUNTIME"/mplconfig/fontlist-*.json
  MPLCONFIGDIR="$RUNTIME/mplconfig" "$RUNTIME/bin/python" -c "import matplotlib.font_manager"
  touch "$RUNTIME/mplconfig/.fonts-built"
fi
# The sandbox user reads the runtime and the kernel's code, whatever the umask was.
chmod -R a+rX "$RUNTIME" labbot/sandbox/runtime
echo "setup: ok ($("$UV" --version), $(.venv/bin/python --version), runtime $RUNTIME)"

# `labbot` on the PATH, as the README's examples type it: a link to .venv/bin/labbot in
# /usr/local/bin (root) or ~/.local/bin. An existing `labbot` there that is not such a link is
# left alone; LABBOT_BIN_DIR chooses the folder, LABBOT_BIN_DIR=none skips this step.
BIN_DIR=${LABBOT_BIN_DIR:-$([ "$(id -u)" = 0 ] && echo /usr/local/bin || echo "$HOME/.local/bin")}
if [ "$BIN_DIR" != none ]; then
  LINK=$BIN_DIR/labbot
  OLD=$(readlink "$LINK" 2>/dev/null || true)
  if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
    echo "setup: $LINK exists and is not a link; run labbot as $PWD/.venv/bin/labbot" >&2
  elif [ -n "$OLD" ] && [ "$OLD" != "$PWD/.venv/bin/labbot" ] && [ -e "$OLD" ]; then
    echo "setup: $LINK runs another checkout's labbot ($OLD); this one is $PWD/.venv/bin/labbot" >&2
  elif mkdir -p "$BIN_DIR" && ln -sfn "$PWD/.venv/bin/labbot" "$LINK"; then
    case ":$PATH:" in
      *":$BIN_DIR:"*) echo "setup: labbot is on your PATH ($LINK -> .venv/bin/labbot)" ;;
      *) echo "setup: linked $LINK; add $BIN_DIR to your PATH, or run $PWD/.venv/bin/labbot" ;;
    esac
  else
    echo "setup: could not link $LINK; run labbot as $PWD/.venv/bin/labbot" >&2
  fi
fi
