#!/usr/bin/env bash
# Proves the container path: builds the image, then inside it runs `labbot doctor`, `labbot run`
# without a token or a terminal (must fail with one line), a sandboxed `labbot exec` with pandas
# and a plot (the PNG must be stored), and the sandbox-escape probes as the image's user.
#
# Needs a Docker engine. When python:3.11-slim-bookworm can be neither found nor pulled, it
# builds a stand-in under that name from Debian's packages (debootstrap, as root) and keeps it,
# so later runs reuse it. On a cgroup v1 host, as root, the probes run with per-session cgroups
# delegated to the container (README.md, "Docker"); elsewhere without them.
# Exits non-zero when any check fails; each check prints one `ok`/`FAIL` line.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${LABBOT_TEST_IMAGE:-labbot:container-test}
BASE=python:3.11-slim-bookworm
BOT_UID=10001 # the image's `labbot` user
SANDBOX_OPTS=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --security-opt systempaths=unconfined)
PROBES=(tests/sandbox/test_attacks.py tests/sandbox/test_review_attacks.py
  tests/sandbox/test_security.py::test_row6_fork_bomb_is_contained
  tests/sandbox/test_security.py::test_row7_memory_bomb_is_killed_with_a_clear_message
  tests/sandbox/test_security.py::test_row8_disk_fill_stops_at_the_sandbox_quota
  tests/sandbox/test_security.py::test_row17_kernel_attack_surface_is_closed)

WORK=$(mktemp -d /var/tmp/labbot-container-test.XXXXXX)
VOLUME=labbot-container-test-$$
CGROUPS=()
failed=0
started=$SECONDS

say() { printf 'test-container: %s\n' "$*"; }
die() {
  say "FAIL $*"
  exit 1
}
cleanup() {
  docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  for dir in "${CGROUPS[@]}"; do
    find "$dir" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$dir" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# check NAME COMMAND...: runs the command, prints one line, and on failure its last lines.
check() {
  local name=$1 start=$SECONDS
  shift
  if "$@" >"$WORK/out" 2>&1; then
    say "ok   $name ($((SECONDS - start))s)"
  else
    say "FAIL $name ($((SECONDS - start))s)"
    tail -n 25 "$WORK/out" | awk '{ print "    " $0 }'
    failed=1
  fi
}

docker info >/dev/null 2>&1 || die "no Docker engine answers (\`docker info\` fails)"

# The base image: the official one, or a stand-in made from Debian's packages.
standin_base() {
  [ "$(id -u)" = 0 ] || die "$BASE cannot be pulled, and building a stand-in needs root"
  if ! command -v debootstrap >/dev/null; then
    apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      die "$BASE cannot be pulled, and debootstrap cannot be installed"
  fi
  say "building a stand-in $BASE from Debian bookworm (debootstrap; once)"
  local root=$WORK/rootfs
  # shellcheck disable=SC2086 # DEBIAN_MIRROR is one optional word
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" ${DEBIAN_MIRROR:-} >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  # This machine's extra certificate authorities (e.g. a proxy's), so set-up reaches PyPI.
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$root" update-ca-certificates >/dev/null 2>&1
  ln -sf python3 "$root/usr/bin/python"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'LABEL org.labbot.stand-in=debootstrap' \
    --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$root"
}
if docker image inspect "$BASE" >/dev/null 2>&1; then
  [ -n "$(docker image inspect -f '{{index .Config.Labels "org.labbot.stand-in"}}' "$BASE")" ] &&
    say "using the stand-in $BASE built earlier"
elif ! timeout 120 docker pull -q "$BASE" >/dev/null 2>&1; then
  standin_base
fi

build() {
  docker build -t "$IMAGE" . >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log"; return 1; }
  # The probes need the test dependencies: a layer on top of the image, not in it.
  printf 'FROM %s\nRUN UV_NO_CACHE=1 scripts/setup.sh\n' "$IMAGE" |
    docker build -t "$IMAGE-probes" - >"$WORK/build-probes.log" 2>&1 ||
    { tail -n 30 "$WORK/build-probes.log"; return 1; }
}
check "the image builds ($IMAGE)" build
[ $failed = 0 ] || die "the image does not build; nothing else can be checked"

in_image() { docker run --rm "${SANDBOX_OPTS[@]}" "$@"; }

doctor() {
  in_image "$IMAGE" labbot doctor >"$WORK/doctor" 2>&1 || { cat "$WORK/doctor"; return 1; }
  grep '^ok   sandbox' "$WORK/doctor"
}
check "labbot doctor passes with the documented options" doctor

run_without_token() {
  local rc=0
  timeout 120 docker run --rm --name "$VOLUME-run" "${SANDBOX_OPTS[@]}" "$IMAGE" labbot run \
    </dev/null >"$WORK/run" 2>&1 || rc=$?
  docker rm -f "$VOLUME-run" >/dev/null 2>&1 || true # still running when it timed out
  echo "exit status $rc:" && cat "$WORK/run"
  [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$(grep -c . "$WORK/run")" = 1 ]
}
check "labbot run without a token or a terminal fails with one line" run_without_token

exec_plot() {
  docker volume create "$VOLUME" >/dev/null
  local code
  code=$'import pandas as pd, matplotlib.pyplot as plt\n'
  code+=$'df = pd.DataFrame({"x": range(10), "y": [i * i for i in range(10)]})\n'
  code+=$'df.plot(x="x", y="y"); plt.savefig("squares.png"); print("sum", df.y.sum())'
  in_image -v "$VOLUME:/data" "$IMAGE" labbot exec -u container-test "$code" | tee "$WORK/exec"
  [ "${PIPESTATUS[0]}" = 0 ] && grep -q 'sum 285' "$WORK/exec" || return 1
  # The PNG came back: the store holds a file that starts with PNG's signature.
  docker run --rm -v "$VOLUME:/data" "$IMAGE" python3 -c '
import pathlib, sys
files = [p for p in pathlib.Path("/data/files").rglob("*") if p.is_file()]
png = [p for p in files if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]
print(f"{len(png)} PNG of {len(files)} stored files")
sys.exit(0 if png else 1)'
}
check "a sandboxed exec with pandas and a plot stores the PNG" exec_plot

# Per-session cgroups: on a cgroup v1 host, folders of the host's hierarchies given to the
# image's user and mounted where the bot, in a private cgroup namespace, looks for its own.
CGROUP_OPTS=()
if [ "$(id -u)" = 0 ] && [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ] &&
  [ -f /sys/fs/cgroup/pids/cgroup.procs ]; then
  for controller in memory pids cpu; do
    dir=/sys/fs/cgroup/$controller/labbot-container-test-$$
    [ -d "/sys/fs/cgroup/$controller" ] || continue
    mkdir "$dir" && chown -R "$BOT_UID:$BOT_UID" "$dir"
    CGROUPS+=("$dir")
    CGROUP_OPTS+=(-v "$dir:/sys/fs/cgroup/$controller")
  done
  CGROUP_OPTS+=(--cgroupns=private)
  cgroup_doctor() {
    in_image "${CGROUP_OPTS[@]}" "$IMAGE" labbot doctor >"$WORK/doctor" 2>&1 ||
      { cat "$WORK/doctor"; return 1; }
    grep '^ok   sandbox: .*cgroups v1' "$WORK/doctor"
  }
  check "labbot doctor uses the delegated cgroups (v1)" cgroup_doctor
  mode="with per-session cgroups"
else
  say "note: no cgroup v1 hierarchy to delegate here (or not root): the probes run without"
  say "      per-session cgroups (address-space and process-count limits instead)"
  mode="without cgroups"
fi

probes() {
  in_image "${CGROUP_OPTS[@]}" "$IMAGE-probes" \
    pytest -q -p no:cacheprovider "${PROBES[@]}" 2>&1 | tail -n 40
  return "${PIPESTATUS[0]}"
}
check "the sandbox-escape probes pass inside the container ($mode)" probes

elapsed=$((SECONDS - started))
if [ $failed != 0 ]; then
  die "some container checks failed (${elapsed}s)"
fi
say "all container checks passed (${elapsed}s)"
