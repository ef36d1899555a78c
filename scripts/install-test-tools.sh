#!/usr/bin/env bash
# Installs the real peers plantgate's tests run against:
#   mosquitto (Debian package), Azurite and node-opcua (npm, into TOOLS/node_modules),
#   LazyFS (built from ../shared/tools/lazyfs into TOOLS/lazyfs);
# and the tools of the package test (packaging/): nfpm (go install into
#   TOOLS/bin, version NFPM_VERSION as the Makefile pins it), rpm, cpio and
#   file (Debian packages; dpkg-deb comes with dpkg); promtool for the alert
#   rules (from Debian's prometheus package, the binary only).
# Idempotent: anything already present is left alone.
set -euo pipefail
TOOLS=${1:-$(pwd)/.tools}
mkdir -p "$TOOLS"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v rpm >/dev/null 2>&1 || need_apt+=(rpm)
command -v cpio >/dev/null 2>&1 || need_apt+=(cpio)
command -v file >/dev/null 2>&1 || need_apt+=(file)
# Headless Chromium renders the status page in internal/app/page_test.go.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v systemd-nspawn >/dev/null 2>&1 || need_apt+=(systemd-container)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-tools: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# promtool (checks and unit-tests configs/prometheus/alerts.yaml): taken
# out of Debian's prometheus package into TOOLS/bin, without installing
# or starting a Prometheus server.
if [ ! -x "$TOOLS/bin/promtool" ]; then
  echo "install-test-tools: promtool from Debian's prometheus package into $TOOLS/bin"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  pdir=$(mktemp -d)
  if ! (cd "$pdir" && apt-get download prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    (cd "$pdir" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$pdir"/prometheus_*.deb "$pdir/x"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$pdir/x/usr/bin/promtool" "$TOOLS/bin/promtool"
  rm -rf "$pdir"
fi

NFPM_VERSION=${NFPM_VERSION:-v2.45.2}
nfpm_installed() { go version -m "$TOOLS/bin/nfpm" 2>/dev/null | awk '$1 == "mod" {print $3}'; }
if [ "$(nfpm_installed)" != "$NFPM_VERSION" ]; then
  echo "install-test-tools: go install nfpm $NFPM_VERSION into $TOOLS/bin"
  GOBIN="$TOOLS/bin" go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi

npm_pkgs=()
[ -x "$TOOLS/node_modules/.bin/azurite-blob" ] || npm_pkgs+=(azurite@3.37.0)
[ -d "$TOOLS/node_modules/node-opcua" ] || npm_pkgs+=(node-opcua@2.186.4)
if [ ${#npm_pkgs[@]} -gt 0 ]; then
  echo "install-test-tools: npm install ${npm_pkgs[*]} into $TOOLS"
  [ -f "$TOOLS/package.json" ] || echo '{"name":"plantgate-test-tools","private":true}' > "$TOOLS/package.json"
  (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error "${npm_pkgs[@]}")
fi
# LazyFS (a FUSE file system that drops unsynced writes on command: a
# simulated power cut) for the power-cut tests, built from the source kept
# in ../shared/tools/lazyfs beside the repository (build.sh is idempotent).
root=$(cd "$(dirname "$0")/.." && pwd)
lazyfs_src="$root/../shared/tools/lazyfs"
lazyfs_bin="not built"
if [ -f "$lazyfs_src/build.sh" ]; then
  if [ ! -x "$TOOLS/lazyfs/lazyfs/build/lazyfs" ]; then
    echo "install-test-tools: building LazyFS into $TOOLS/lazyfs"
  fi
  lazyfs_bin=$(bash "$lazyfs_src/build.sh" "$TOOLS/lazyfs" | tail -1)
else
  echo "install-test-tools: $lazyfs_src not found; LazyFS not built (the power-cut tests will skip, or fail under CI)"
fi

echo "install-test-tools: mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'), azurite $(cd "$TOOLS" && node -p 'require("azurite/package.json").version'), node-opcua $(cd "$TOOLS" && node -p 'require("node-opcua/package.json").version'), lazyfs $lazyfs_bin, nfpm $(nfpm_installed), $(rpm --version), $("$TOOLS/bin/promtool" --version 2>&1 | head -1)"
