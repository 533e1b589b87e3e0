# Dependency installer shared by scripts/up, scripts/test and scripts/bench.
# Each ensure_* installs only what is missing and is quiet when nothing is.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
SECANTUSD="$VENV/bin/secantusd-py"
# Pinned so a fresh machine runs what CI ran.
SECANTUSDB_VERSION="${SECANTUSDB_VERSION:-0.7.0b3}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

_apt_updated=0
# ensure_apt CMD PACKAGE: installs PACKAGE with apt-get when CMD is not on PATH.
ensure_apt() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and apt-get is not available: install $pkg by hand"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ $_apt_updated -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
    _apt_updated=1
  fi
  log "installing $pkg"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
    || die "apt-get install $pkg failed"
}

# ensure_python: a python3 with the venv module.
ensure_python() {
  ensure_apt python3 python3
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || ensure_apt_pkg python3-venv
}

ensure_apt_pkg() {
  local pkg=$1
  dpkg -s "$pkg" >/dev/null 2>&1 && return 0
  ensure_apt "__never_a_command__$pkg" "$pkg"
}

# ensure_secantusdb: SecantusDB (a MongoDB-wire-compatible server) in ./.venv.
ensure_secantusdb() {
  if [ -x "$SECANTUSD" ]; then return 0; fi
  ensure_python
  log "creating $VENV with SecantusDB $SECANTUSDB_VERSION"
  python3 -m venv "$VENV" || die "cannot create $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "SecantusDB==$SECANTUSDB_VERSION" \
    || die "pip install SecantusDB failed"
  [ -x "$SECANTUSD" ] || die "SecantusDB installed but $SECANTUSD is missing"
}

# ensure_rust: cargo with rustfmt and clippy.
ensure_rust() {
  command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs) first"
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "rustfmt/clippy missing and rustup unavailable"
    log "adding rustfmt and clippy"
    rustup component add rustfmt clippy >/dev/null 2>&1 || die "rustup component add failed"
  fi
}

# ensure_redis: redis-server (the tests start their own on free ports).
ensure_redis() {
  ensure_apt redis-server redis-server
}

# ensure_chromium: headless Chromium for the web page's browser test, with a font to lay
# text out in (the tests find it on PATH, or CHROMIUM names it).
ensure_chromium() {
  [ -n "${CHROMIUM:-}" ] && return 0
  ensure_apt chromium chromium
  ensure_apt_pkg fonts-liberation
}

# ensure_bench_peers: HAProxy, nginx and wrk for scripts/bench, installed with apt-get when
# missing (as root, or with sudo). They are optional: a peer that cannot be installed is
# reported by the harness as skipped. MC_BENCH_NO_INSTALL=1 installs nothing.
ensure_bench_peers() {
  [ "${MC_BENCH_NO_INSTALL:-0}" = 1 ] && return 0
  local cmd pkg
  for pair in haproxy:haproxy nginx:nginx-light wrk:wrk; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 && continue
    if ! (ensure_apt "$cmd" "$pkg") 2>/dev/null; then
      log "warning: could not install $pkg; the benchmarks will skip it"
      continue
    fi
    # Debian starts a system nginx on port 80; the harness runs its own.
    [ "$cmd" = nginx ] && { invoke-rc.d nginx stop >/dev/null 2>&1 || true; }
  done
  return 0
}

# ensure_origins: gunicorn and waitress in ./.venv, the independent origin parsers the
# differential smuggling suite (conformance/smuggling) puts behind the proxy, and the `h2`
# package its HTTP/2 cases are sent with. Pinned, so a fresh machine parses what CI parsed.
GUNICORN_VERSION="${GUNICORN_VERSION:-23.0.0}"
WAITRESS_VERSION="${WAITRESS_VERSION:-3.0.2}"
H2_VERSION="${H2_VERSION:-4.2.0}"
ensure_origins() {
  ensure_secantusdb
  if [ -x "$VENV/bin/gunicorn" ] && [ -x "$VENV/bin/waitress-serve" ] &&
    "$VENV/bin/python" -c "import h2" 2>/dev/null; then return 0; fi
  log "installing gunicorn $GUNICORN_VERSION, waitress $WAITRESS_VERSION and h2 $H2_VERSION into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "gunicorn==$GUNICORN_VERSION" "waitress==$WAITRESS_VERSION" "h2==$H2_VERSION" \
    || die "pip install gunicorn waitress h2 failed"
}

# ensure_pyflakes: the checker scripts/test runs over the Python runners (conformance/),
# which, unlike the Rust, have no compiler to catch a name used and never defined.
PYFLAKES_VERSION="${PYFLAKES_VERSION:-3.2.0}"
ensure_pyflakes() {
  ensure_secantusdb
  "$VENV/bin/python" -c "import pyflakes" 2>/dev/null && return 0
  log "installing pyflakes $PYFLAKES_VERSION into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "pyflakes==$PYFLAKES_VERSION" \
    || die "pip install pyflakes failed"
}

# ensure_attack_tools: slowhttptest, h2load (nghttp2-client) and testssl.sh, which
# scripts/conformance runs against the proxy. Required there: one that cannot be installed
# fails the run.
ensure_attack_tools() {
  ensure_apt slowhttptest slowhttptest
  ensure_apt h2load nghttp2-client
  ensure_apt testssl testssl.sh
}


# ensure_promtool: Prometheus's promtool, which checks and unit-tests the alerting rules in
# configs/prometheus (Debian ships it in the prometheus package; its server is not started).
ensure_promtool() {
  ensure_apt promtool prometheus
  # Debian's package starts a system Prometheus on :9090, the proxy's admin port.
  invoke-rc.d prometheus stop >/dev/null 2>&1 || true
}

# ensure_nftables: nft, with which the partition tests drop every packet to and from a
# loopback port (a table of their own, deleted when each test ends; needs root).
ensure_nftables() {
  ensure_apt nft nftables
}

# ensure_schemathesis: schemathesis in ./.venv, the API fuzzer conformance/api runs against
# the OpenAPI document. Pinned, so a fresh machine generates what CI generated.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ensure_schemathesis() {
  ensure_secantusdb
  if "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return 0
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "pip install schemathesis failed"
}
