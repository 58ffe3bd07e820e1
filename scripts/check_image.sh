#!/usr/bin/env bash
# Build the container image and run it, without a Docker engine (.ci/run calls this
# on every run; docs/operations.md, "Build and smoke-test the image without an engine").
#
#   bash scripts/check_image.sh          # as root, from a checkout with the project venv
#
# 1. Installs buildah, podman, runc and debootstrap (Debian packages) if missing.
# 2. Makes a STAND-IN for the Dockerfile's base image python:3.11.11-slim-bookworm,
#    which cannot be pulled here (no container registry): a minimal Debian bookworm
#    made by debootstrap from the machine's Debian mirror, with Debian's own
#    python3 (3.11.2) and python3-venv, linked into /usr/local/bin, imported under
#    exactly the base's name. It is cached (a tarball keyed by a hash of the recipe,
#    checksummed, rebuilt after 30 days) under $AUTH_IMAGE_CACHE, default
#    /var/cache/auth-service-image-check. Only the base is cached: the image itself
#    is built from scratch each run, in a fresh container storage under /tmp
#    (overlay where the kernel mounts it, else vfs), deleted on exit.
# 3. Builds the Dockerfile with buildah (`--format docker`, so HEALTHCHECK is kept):
#    the default target (auth-service:local) and `examples`. The build's pip
#    reaches the package index through the machine's CA bundle, mounted over the
#    base's for the build only, and its index (PIP_INDEX_URL or pip's config) as a
#    builder-stage build argument; neither ends up in the image (checked).
# 4. Checks the image: .dockerignore keeps tests, bench, venvs and .git out of the
#    build context; runs as uid 10001; no pip, setuptools, wheel or compilers.
# 5. Runs it with podman (host network, free ports only): `--help`; `serve` refusing plaintext on 0.0.0.0;
#    `migrate`, and `serve` (the default CMD) against an embedded PostgreSQL outside
#    the container; a real gRPC round trip through it; `auth-service health` inside
#    it and the image's HEALTHCHECK (`podman healthcheck run`); `relay` against the
#    embedded broker, publishing the deleted user's event (read back from the
#    topic); `podman stop` drains both and they exit 0; the examples image's consumer.
# 6. Reports the image size and the time taken.
#
# What this proves: the Dockerfile builds from a clean context, the runtime image
# holds a working venv (console script, migrations, dbmate, the cp311 manylinux
# wheels), and its entrypoint, default command, ports, user, HEALTHCHECK and stop
# signal behave as docs/operations.md says, against real PostgreSQL and a
# Kafka-protocol broker.
# What it does NOT prove: that the official python:3.11.11-slim-bookworm behaves the
# same. The stand-in has Debian's Python 3.11.2 in /usr/bin (the official image has
# CPython 3.11.11 built in /usr/local, with a pip of its own), so the base's share
# of the image size differs too. Not Docker either: buildah and
# podman, not BuildKit and dockerd. The compose stack is not started (its postgres
# and kafka images cannot be pulled); scripts/check_compose.py validates it with
# Compose itself.
#
# Exits non-zero, with the failing step's output, when any step fails; removes its
# containers, storage, background processes and temporary files on every exit.
#
# Settings (environment): PYTHON (default .venv/bin/python), AUTH_IMAGE_CACHE,
# DEBIAN_MIRROR (default: the one apt uses), AUTH_IMAGE_STORAGE_DRIVER (overlay or
# vfs; default: overlay if it mounts), AUTH_IMAGE_KEEP=1 (keep the built images and
# print the podman flags to use them).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
IMAGE=auth-service:local
EXAMPLES_IMAGE=auth-service-examples:local
CACHE=${AUTH_IMAGE_CACHE:-/var/cache/auth-service-image-check}
START=$SECONDS

say() { printf 'check_image: %s\n' "$*"; }
fail() {
  printf 'check_image: FAILED: %s\n' "$*" >&2
  exit 1
}
took() { printf '%ss' $((SECONDS - ${1:-$START})); }

[ "$(id -u)" = 0 ] || fail "run as root: it installs packages, and debootstrap and podman run as root here"
[ -x "$PY" ] || fail "no $PY: create the project venv first (README, 'Development')"

# --- 1. tools --------------------------------------------------------------------
TOOLS=(buildah podman runc debootstrap)
missing=()
for pkg in "${TOOLS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  step=$SECONDS
  say "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=120 "${TOOLS[@]}" >/dev/null
  say "installed in $(took "$step")"
fi

# --- a private work area, removed on every exit -------------------------------------
# Its own container storage, so nothing from an earlier run or another user of
# podman on this machine can take part in this one.
WORK=$(mktemp -d /tmp/auth-image-check.XXXXXX)
mkdir -p "$WORK/tmp"
export TMPDIR=$WORK/tmp # buildah and podman stage layers here
# overlay when the kernel mounts it here; vfs (a full copy of every layer and
# container: about twice as slow, measured) otherwise. buildah and podman share it.
DRIVER=${AUTH_IMAGE_STORAGE_DRIVER:-}
if [ -z "$DRIVER" ]; then
  mkdir -p "$WORK"/ovl/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$WORK/ovl/lower,upperdir=$WORK/ovl/upper,workdir=$WORK/ovl/work" \
    "$WORK/ovl/merged" 2>/dev/null; then
    umount "$WORK/ovl/merged"
    DRIVER=overlay
  else
    DRIVER=vfs
  fi
  rm -rf "$WORK/ovl"
fi
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver "$DRIVER")
BUILDAH=(buildah "${STORE[@]}")
PODMAN=(podman "${STORE[@]}" --tmpdir "$WORK/libpod" --events-backend file
  --runtime runc --cgroup-manager cgroupfs)
# runc named explicitly: podman would take crun if installed. The ulimits: podman's
# defaults (e.g. nofile 1048576) are above this machine's hard limits, and the
# runtime then fails with "error setting rlimit type 7: operation not permitted".
RUN=("${PODMAN[@]}" run --network host --pull=never
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
SERVICES_PID=
CHILD=

# Long steps (debootstrap, builds) run in the background and are waited for: bash
# runs a trap only when the foreground command has ended, so a SIGTERM would
# otherwise wait for a whole build. The trap's cleanup stops the step. (The log is
# an argument: a redirection of the function call would also catch the trap's own
# messages.)
interruptible() { # LOG COMMAND...
  local log=$1 rc=0
  shift
  "$@" >"$log" 2>&1 &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=
  return "$rc"
}

descendants() { # PID: its children, their children, ...
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then # an interrupted step, and what it started (buildah's
    local tree # build steps outlive a stopped buildah)
    mapfile -t tree < <(descendants "$CHILD")
    kill -TERM "$CHILD" "${tree[@]}" 2>/dev/null
    wait "$CHILD" 2>/dev/null
    sleep 1
    kill -KILL "${tree[@]}" 2>/dev/null
  fi
  "${PODMAN[@]}" rm --all --force --time 5 >/dev/null 2>&1
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1
  if [ -n "$SERVICES_PID" ] && kill -0 "$SERVICES_PID" 2>/dev/null; then
    kill -TERM "$SERVICES_PID" # the helper stops PostgreSQL and the broker
    wait "$SERVICES_PID" 2>/dev/null
  fi
  rm -f "$CACHE"/base-*".$$" # a stand-in tarball this run did not finish
  if [ "${AUTH_IMAGE_KEEP:-}" = 1 ]; then
    say "kept the images: podman ${STORE[*]} images"
  else
    # Unmount whatever is left under $WORK (layers, a container's /dev/shm,
    # debootstrap's /proc after a failure), then delete it without crossing mounts.
    findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l
    rm -rf --one-file-system "$WORK"
  fi
  if [ "$rc" -ne 0 ]; then
    printf 'check_image: FAILED after %s (exit %s)\n' "$(took)" "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() { # FILE [LINES]: the end of a log, indented, on stderr
  tail -n "${2:-40}" "$1" | sed 's/^/    /' >&2
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- embedded PostgreSQL and broker, outside any container (started early: they come
# up while the image builds) ----------------------------------------------------------
STATE=$WORK/services.json
"$PY" scripts/image_smoke.py services "$STATE" >"$WORK/services.log" 2>&1 &
SERVICES_PID=$!

# --- 2. the stand-in base ------------------------------------------------------------
# The one external base of the Dockerfile (stage names excluded).
mapfile -t bases < <(awk 'toupper($1) == "FROM" {
    if (!($2 in stage)) print $2
    if (toupper($3) == "AS") stage[$4] = 1
  }' Dockerfile | sort -u)
[ "${#bases[@]}" -eq 1 ] || fail "expected one base image in the Dockerfile, found: ${bases[*]}"
BASE=${bases[0]}
case "$BASE" in
  python:3.11.*-slim-bookworm) SUITE=bookworm ;;
  *) fail "the stand-in recipe makes Debian bookworm with Python 3.11; the Dockerfile now uses $BASE: update this script" ;;
esac

# The Debian mirror apt uses (deb822 .sources first, then one-line .list entries);
# DEBIAN_MIRROR overrides it. Prefer an entry for $SUITE, else any main-archive one.
debian_mirror() {
  local files=(/etc/apt/sources.list.d/*.sources) lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
    {
      uri = ""; deb = 0; exact = 0; plain = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
        if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); uri = u[2] }
        if ($i ~ /^Suites:/) {
          n = split($i, s, /[ \t]+/)
          for (j = 2; j <= n; j++) { if (s[j] == suite) exact = 1; if (s[j] !~ /-/) plain = 1 }
        }
        if ($i ~ /^Enabled:[ \t]*no/) deb = 0
      }
      if (deb && uri && exact && !best) best = uri
      if (deb && uri && plain && !any) any = uri
    }
    END { print (best ? best : any) }' "${files[@]}" 2>/dev/null | grep . && return
  awk -v suite="$SUITE" '$1 == "deb" {
      sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, "")
      split($0, f, /[ \t]+/)
      if (f[2] == suite && !best) best = f[1]
      if (f[2] !~ /-/ && !any) any = f[1]
    }
    END { print (best ? best : any) }' "${lists[@]}" 2>/dev/null | grep .
}
MIRROR=${DEBIAN_MIRROR:-$(debian_mirror || true)}
[ -n "$MIRROR" ] || fail "no Debian mirror found in /etc/apt/sources.list*: set DEBIAN_MIRROR"

INCLUDE=python3,python3-venv,ca-certificates
base_cached() { # a complete tarball (its checksum matches) younger than 30 days
  [ -f "$BASE_TAR" ] && [ -f "$BASE_TAR.sha256" ] &&
    [ -n "$(find "$BASE_TAR" -mtime -30)" ] &&
    [ "$(sha256sum <"$BASE_TAR" | cut -d' ' -f1)" = "$(cat "$BASE_TAR.sha256")" ]
}

make_base() {
  local rootfs=$WORK/rootfs step=$SECONDS
  say "making the stand-in base: debootstrap $SUITE from $MIRROR (about a minute)"
  if ! interruptible "$WORK/debootstrap.log" \
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR"; then
    show_log "$WORK/debootstrap.log" 20
    fail "debootstrap failed (log above)"
  fi
  # Slim like the official image: no package caches, docs, man pages or locales.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  # The official image's interpreter is /usr/local/bin/python*: the venv built on it
  # records that path, so the stand-in answers there too.
  for name in python python3 python3.11; do
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/$name"
  done
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
  : >"$rootfs/etc/resolv.conf" # not this machine's DNS: the runtime provides its own
  echo localhost >"$rootfs/etc/hostname"
  mkdir -p "$CACHE"
  # Other recipes' bases go; this one is written under temporary names and renamed,
  # so a reader sees a complete tarball or none (two runs may write it at once).
  find "$CACHE" -maxdepth 1 -name 'base-*' ! -name "base-$KEY.*" -delete
  tar -C "$rootfs" --numeric-owner -cf "$BASE_TAR.$$" .
  sha256sum <"$BASE_TAR.$$" | cut -d' ' -f1 >"$BASE_TAR.sha256.$$"
  mv "$BASE_TAR.$$" "$BASE_TAR"
  mv "$BASE_TAR.sha256.$$" "$BASE_TAR.sha256"
  rm -rf --one-file-system "$rootfs"
  say "stand-in base made in $(took "$step"), cached as $BASE_TAR"
}

# The cache key: the recipe's inputs and the text of make_base itself, so that any
# change to how the stand-in is made makes a new one.
RECIPE="$SUITE $INCLUDE $MIRROR $(dpkg --print-architecture) $(declare -f make_base)"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
BASE_TAR=$CACHE/base-$KEY.tar
if base_cached; then
  say "stand-in base: cached $BASE_TAR"
else
  make_base
fi
"${PODMAN[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change 'LABEL org.auth-service.base-stand-in="Debian bookworm + Debian python3 3.11.2 (debootstrap); not the official python image"' \
  "$BASE_TAR" "docker.io/library/$BASE" >/dev/null
say "stand-in imported as docker.io/library/$BASE (Debian's Python 3.11.2, NOT the official image; $DRIVER storage)"

# --- 3. build ------------------------------------------------------------------------
# The CA bundle pip should trust (this machine's, e.g. with a TLS-intercepting
# proxy's CA) is mounted over the base's own bundle, a file the base already has,
# so the mount leaves nothing behind in a layer. pip is pointed at it by PIP_CERT.
CA_SRC=${PIP_CERT:-$("$PY" -m pip config get global.cert 2>/dev/null || true)}
CA_SRC=${CA_SRC:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$CA_SRC" ] || fail "CA bundle $CA_SRC not found (set PIP_CERT)"
CA_DEST=/etc/ssl/certs/ca-certificates.crt
BUILD_ARGS=(--build-arg "PIP_CERT=$CA_DEST")
INDEX=${PIP_INDEX_URL:-$("$PY" -m pip config get global.index-url 2>/dev/null || true)}
case "$INDEX" in
  "") ;; # pip's default, PyPI
  file:*) say "pip's index $INDEX is a local directory, not visible in the build: using PyPI" ;;
  *) BUILD_ARGS+=(--build-arg "PIP_INDEX_URL=$INDEX") ;;
esac
# (HTTP_PROXY/HTTPS_PROXY/NO_PROXY, when set, reach the build as buildah passes them on.)

# --layers: the examples target reuses the service build's layers. They live in this
# run's new storage only, so no layer from an earlier run is ever reused.
build() { # TAG [TARGET]: the build log is shown when it fails
  local tag=$1 target=() step=$SECONDS log=$WORK/build-${1//[^a-z]/-}.log
  [ -n "${2:-}" ] && target=(--target "$2")
  if ! interruptible "$log" "${BUILDAH[@]}" bud --isolation chroot --pull=never --format docker \
    --layers --volume "$CA_SRC:$CA_DEST:ro" "${BUILD_ARGS[@]}" "${target[@]}" -t "$tag" .; then
    show_log "$log"
    fail "buildah bud${2:+ --target $2} failed: the Dockerfile does not build (log above)"
  fi
  say "built $tag${2:+ (target $2)} in $(took "$step")"
}
build "$IMAGE"
build "$EXAMPLES_IMAGE" examples

# --- 4. what is in the image -----------------------------------------------------------
# The build context: exactly what .dockerignore lets in, as buildah reads it.
printf 'FROM scratch\nCOPY . /context\n' >"$WORK/Context.Dockerfile"
"${BUILDAH[@]}" bud --isolation chroot --pull=never --layers=false -f "$WORK/Context.Dockerfile" \
  -t auth-image-check-context . >"$WORK/build-context.log" 2>&1 ||
  { show_log "$WORK/build-context.log"; fail "could not build the context probe"; }
mnt=$("${PODMAN[@]}" image mount auth-image-check-context)
leaked=$(find "$mnt/context" -mindepth 1 -printf '%P\n' | grep -E \
  '(^|/)(tests|client_tests|bench|\.venv|venv|\.git|__pycache__|\.pytest_cache|\.mypy_cache|\.ruff_cache|\.hypothesis|\.env)(/|$)|\.py[cod]$' || true)
context_files=$(find "$mnt/context" -type f | wc -l)
"${PODMAN[@]}" image unmount auth-image-check-context >/dev/null
[ -z "$leaked" ] || fail ".dockerignore lets these into the build context: $(echo "$leaked" | head -n 10 | tr '\n' ' ')"
say "build context: $context_files files, no tests, bench, venvs, caches or .git"

config=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Config.User}} {{json .Config.Healthcheck}} {{json .Config.Env}}')
case "$config" in
  '10001:10001 {"Test":["CMD","auth-service","health","--timeout","3"],'*) ;;
  *) fail "image config: expected user 10001:10001 and the HEALTHCHECK probe, got: $config" ;;
esac
case "$config" in
  *PIP_*) fail "a pip build setting is baked into the image's environment: $config" ;;
esac
base_ca=$(tar -xOf "$BASE_TAR" ".$CA_DEST" | sha256sum | cut -d' ' -f1)
# One python in the image checks what it holds, as the image's user.
"${RUN[@]}" --rm --no-healthcheck --entrypoint python "$IMAGE" -I -c "
import hashlib, importlib.util, os, shutil, sys
problems = []
if os.getuid() != 10001:
    problems.append(f'runs as uid {os.getuid()}, not 10001')
left = [m for m in ('pip', 'setuptools', 'wheel', '_distutils_hack') if importlib.util.find_spec(m)]
if left:
    problems.append(f'installers in the venv: {left}')
tools = [t for t in ('gcc', 'cc', 'c++', 'make') if shutil.which(t)]
if tools:
    problems.append(f'build tools on PATH: {tools}')
with open('$CA_DEST', 'rb') as f:
    if hashlib.sha256(f.read()).hexdigest() != '$base_ca':
        problems.append('the CA bundle differs from the base: the build mount leaked into a layer')
print(f'image python: {sys.executable} {sys.version.split()[0]}; uid {os.getuid()}')
sys.exit('; '.join(problems) or None)
" >"$WORK/contents.log" 2>&1 || { show_log "$WORK/contents.log"; fail "image contents (above)"; }
say "$(cat "$WORK/contents.log"); no pip, setuptools, wheel or compilers; no build settings baked in"

# --- 5. run it ---------------------------------------------------------------------------
expect_in() { # FILE TEXT WHAT: fail, showing FILE, unless it contains TEXT
  grep -qF -- "$2" "$1" || { show_log "$1"; fail "$3: no '$2' in its output (above)"; }
}

# (Containers that keep a HEALTHCHECK make podman log errors about systemd timers:
# there is no systemd here. `podman healthcheck run` runs the check on demand.)
healthcheck() { # NAME WHAT: run the container's health check now; it must say healthy
  local status
  if ! "${PODMAN[@]}" healthcheck run "$1" >"$WORK/healthcheck.log" 2>&1; then
    show_log "$WORK/healthcheck.log"
    fail "$2 failed"
  fi
  status=$("${PODMAN[@]}" inspect "$1" --format '{{.State.Health.Status}}')
  [ "$status" = healthy ] || fail "$2: podman says $status"
  say "$2 (podman healthcheck run $1): $status"
}

"${RUN[@]}" --rm --no-healthcheck "$IMAGE" --help >"$WORK/help.log" 2>&1 ||
  { show_log "$WORK/help.log"; fail "auth-service --help exited non-zero"; }
for cmd in serve relay migrate health; do expect_in "$WORK/help.log" "$cmd" "--help"; done
say "--help lists serve, relay, migrate, health"

deadline=$((SECONDS + 90))
until [ -s "$STATE" ]; do
  if ! kill -0 "$SERVICES_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    show_log "$WORK/services.log"
    fail "embedded PostgreSQL and broker did not start (log above)"
  fi
  sleep 0.2
done
read -r DATABASE_URL KAFKA TOPIC < <("$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["database_url"], s["bootstrap_servers"], s["topic"])' "$STATE")
say "embedded PostgreSQL and broker (outside the container): $DATABASE_URL, $KAFKA"

# The image listens on 0.0.0.0 by default: plaintext there must be refused.
port=$(free_port)
if timeout 60 "${RUN[@]}" --rm --no-healthcheck -e DATABASE_URL="$DATABASE_URL" \
  -e GRPC_LISTEN="0.0.0.0:$port" -e RELAY_ENABLED=false "$IMAGE" serve >"$WORK/insecure.log" 2>&1; then
  show_log "$WORK/insecure.log"
  fail "serve started in plaintext on 0.0.0.0 without ALLOW_INSECURE"
fi
expect_in "$WORK/insecure.log" "refusing to listen on 0.0.0.0:$port without TLS" "serve on 0.0.0.0"
say "serve refuses plaintext on 0.0.0.0 without ALLOW_INSECURE or TLS"

"${RUN[@]}" --rm --no-healthcheck -e DATABASE_URL="$DATABASE_URL" "$IMAGE" migrate --wait 60 \
  >"$WORK/migrate.log" 2>&1 || { show_log "$WORK/migrate.log"; fail "migrate exited non-zero"; }
say "migrate: exit 0"

GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
TOKEN=image-check-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# No command: the image's default CMD, serve. Loopback ports: host network, and a
# user's `auth-service dev` may hold 50051 and 9090.
"${RUN[@]}" -d --name serve -e DATABASE_URL="$DATABASE_URL" -e ADMIN_TOKENS="$TOKEN" \
  -e GRPC_LISTEN="127.0.0.1:$GRPC_PORT" -e METRICS_LISTEN="127.0.0.1:$METRICS_PORT" \
  -e RELAY_ENABLED=false -e SHUTDOWN_GRACE_S=5 "$IMAGE" >/dev/null 2>"$WORK/serve-run.log" ||
  { show_log "$WORK/serve-run.log"; fail "podman run serve failed"; }

# `auth-service health` inside the container, until the server answers SERVING.
deadline=$((SECONDS + 60))
until "${PODMAN[@]}" exec serve auth-service health --timeout 2 >"$WORK/health.log" 2>&1; do
  if [ "$("${PODMAN[@]}" inspect serve --format '{{.State.Running}}')" != true ] || [ $SECONDS -ge $deadline ]; then
    "${PODMAN[@]}" logs serve >"$WORK/serve.log" 2>&1
    show_log "$WORK/serve.log"
    show_log "$WORK/health.log"
    fail "serve did not become SERVING (logs above)"
  fi
  sleep 0.5
done
say "auth-service health (inside the container): $(tr -s '\n' ' ' <"$WORK/health.log" | sed 's/ $//')"
healthcheck serve "the image's HEALTHCHECK"
uids=$("${PODMAN[@]}" exec serve python -I -c 'import os; print(os.stat("/proc/1").st_uid)')
[ "$uids" = 10001 ] || fail "serve runs as uid $uids, not 10001"
say "serve runs as uid 10001"

"$PY" scripts/image_smoke.py call "127.0.0.1:$GRPC_PORT" "$TOKEN" \
  "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/call.log" 2>&1 ||
  { show_log "$WORK/call.log"; "${PODMAN[@]}" logs serve 2>&1 | tail -n 20 >&2; fail "gRPC calls through the container failed"; }
USER_ID=$(tail -n 1 "$WORK/call.log")
say "$(head -n 1 "$WORK/call.log")"

# The relay: a metrics-only probe, as docker-compose.yml gives it.
RELAY_METRICS_PORT=$(free_port)
"${RUN[@]}" -d --name relay -e DATABASE_URL="$DATABASE_URL" -e KAFKA_BOOTSTRAP_SERVERS="$KAFKA" \
  -e KAFKA_TOPIC="$TOPIC" -e METRICS_LISTEN="127.0.0.1:$RELAY_METRICS_PORT" \
  --health-cmd "auth-service health --http http://127.0.0.1:$RELAY_METRICS_PORT/metrics" \
  "$IMAGE" relay >/dev/null 2>"$WORK/relay-run.log" ||
  { show_log "$WORK/relay-run.log"; fail "podman run relay failed"; }
"$PY" scripts/image_smoke.py consume "$KAFKA" "$TOPIC" "$USER_ID" --timeout 60 \
  >"$WORK/consume.log" 2>&1 ||
  { show_log "$WORK/consume.log"; "${PODMAN[@]}" logs relay 2>&1 | tail -n 20 >&2; fail "the relay did not publish the deletion"; }
"${PODMAN[@]}" logs relay >"$WORK/relay.log" 2>&1
expect_in "$WORK/relay.log" "outbox relay started" "relay"
say "relay published: $(tail -n 1 "$WORK/consume.log" | sed 's/^image_smoke: //')"
healthcheck relay "the relay's probe (health --http, as in docker-compose.yml)"

stop() { # NAME LOG-TEXT: SIGTERM, then the container must exit 0 having logged TEXT
  local name=$1 text=$2 step=$SECONDS code
  "${PODMAN[@]}" stop --time 30 "$name" >/dev/null 2>"$WORK/$name-stop.log" ||
    { show_log "$WORK/$name-stop.log"; fail "podman stop $name failed"; }
  code=$("${PODMAN[@]}" inspect "$name" --format '{{.State.ExitCode}}')
  "${PODMAN[@]}" logs "$name" >"$WORK/$name.log" 2>&1
  [ "$code" = 0 ] || { show_log "$WORK/$name.log"; fail "$name exited $code after podman stop"; }
  expect_in "$WORK/$name.log" "$text" "$name after podman stop"
  say "podman stop $name: exit 0 in $(took "$step") ('$text')"
}
stop relay "outbox relay stopped"
stop serve "auth-service stopped"
expect_in "$WORK/serve.log" "draining" "serve after podman stop"
head -n 1 "$WORK/serve.log" | "$PY" -c 'import json, sys; json.loads(sys.stdin.read())' ||
  { show_log "$WORK/serve.log" 5; fail "serve's log is not JSON lines (LOG_FORMAT=json)"; }

"${RUN[@]}" --rm --no-healthcheck --entrypoint python "$EXAMPLES_IMAGE" \
  /opt/auth-service-examples/cleanup_messaging.py --help >"$WORK/example.log" 2>&1 ||
  { show_log "$WORK/example.log"; fail "the examples image's consumer does not start"; }
say "examples image: cleanup_messaging.py --help runs"

# --- 6. report --------------------------------------------------------------------------
size() { "${PODMAN[@]}" image inspect "$1" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
say "image $IMAGE: $(size "$IMAGE") (of which the stand-in base: $(size "docker.io/library/$BASE"))"
say "ok in $(took): built and ran on a STAND-IN base (Debian's Python 3.11.2, not the" \
  "official $BASE image): proves the Dockerfile and the image's commands, not the official base"
