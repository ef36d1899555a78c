#!/usr/bin/env bash
# Installs the real peers plantgate's tests run against:
#   mosquitto (Debian package), Azurite and node-opcua (npm, into TOOLS/node_modules).
# Idempotent: anything already present is left alone.
set -euo pipefail
TOOLS=${1:-$(pwd)/.tools}
mkdir -p "$TOOLS"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-tools: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

npm_pkgs=()
[ -x "$TOOLS/node_modules/.bin/azurite-blob" ] || npm_pkgs+=(azurite@3.37.0)
[ -d "$TOOLS/node_modules/node-opcua" ] || npm_pkgs+=(node-opcua@2.186.4)
if [ ${#npm_pkgs[@]} -gt 0 ]; then
  echo "install-test-tools: npm install ${npm_pkgs[*]} into $TOOLS"
  [ -f "$TOOLS/package.json" ] || echo '{"name":"plantgate-test-tools","private":true}' > "$TOOLS/package.json"
  (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error "${npm_pkgs[@]}")
fi
echo "install-test-tools: mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'), azurite $(cd "$TOOLS" && node -p 'require("azurite/package.json").version'), node-opcua $(cd "$TOOLS" && node -p 'require("node-opcua/package.json").version')"
