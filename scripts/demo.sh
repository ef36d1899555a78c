#!/usr/bin/env bash
# make demo: fo-emulator + plantgate (embedded MQTT broker, MES, OData and
# DMF sinks) + the MES simulator, on this machine, with nothing but Go.
#
# Every run starts afresh: the emulator starts from its seed data, so the
# gateway gets a new data dir too (the last run's is kept in
# $DEMO/previous-run/ until the next start); a queue that remembered the
# last run's message ids would drop the simulator's messages as copies.
# Secrets are made for each run and reach the processes through their
# environment or 0600 files, never their command lines.
#
# Ctrl-C (or SIGTERM) stops the processes in the reverse order of their
# start and exits 0. PLANTGATE_DEMO_DURATION (e.g. 30s) stops the demo by
# itself after that long. PLANTGATE_DEMO_CONFIG runs another gateway
# config; with PLANTGATE_DEMO_HTTP, PLANTGATE_DEMO_MQTT and PLANTGATE_DEMO_FO
# (host:port each, the addresses in that config) the demo runs beside
# another one.
#
# Adding a process: start it with `start NAME COMMAND...` (log in
# $DEMO/logs/NAME.log) before the processes that use it, wait for it
# with `wait_until`, and describe it in the banner.
set -euo pipefail
cd "$(dirname "$0")/.."

# Under a terminal, run the demo as a foreground job of its own, so Ctrl-C
# reaches the demo and its processes, which stop in order, and not make,
# which would report the demo as interrupted.
if [ -z "${PLANTGATE_DEMO_JOB:-}" ] && [ -t 0 ]; then
  set -m
  status=0
  PLANTGATE_DEMO_JOB=1 "$0" "$@" || status=$?
  exit "$status"
fi

DEMO=${PLANTGATE_DEMO_DIR:-$PWD/.demo}
export PLANTGATE_DEMO_DIR=$DEMO
export PLANTGATE_DEMO_HTTP=${PLANTGATE_DEMO_HTTP:-127.0.0.1:9464}
export PLANTGATE_DEMO_MQTT=${PLANTGATE_DEMO_MQTT:-127.0.0.1:1883}
export PLANTGATE_DEMO_FO=${PLANTGATE_DEMO_FO:-127.0.0.1:18443}
export PLANTGATE_DEMO_OPCUA=${PLANTGATE_DEMO_OPCUA:-127.0.0.1:4840}
EMU=https://$PLANTGATE_DEMO_FO
GW=http://$PLANTGATE_DEMO_HTTP
CA=$DEMO/emulator/ca.pem
CONFIG=${PLANTGATE_DEMO_CONFIG:-configs/demo.yaml}

say() { printf 'demo: %s\n' "$*"; }

# ---- processes ----

names=() pids=()
stopping=
# start NAME COMMAND...: runs COMMAND in the background, its output in
# $DEMO/logs/NAME.log.
start() {
  local name=$1
  shift
  # A session of its own: Ctrl-C in the terminal reaches this script only,
  # which stops the processes one after the other.
  setsid "$@" >"$DEMO/logs/$name.log" 2>&1 </dev/null &
  names+=("$name")
  pids+=($!)
}
# stop_all stops the processes in the reverse order of their start, each
# with SIGTERM, waiting for it to end (plantgate drains within its
# drain_timeout).
stop_all() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  pids=() names=()
}
# wait_until WHAT SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_until() {
  local what=$1 n=$(($2 * 10))
  shift 2
  for ((; n > 0; n--)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  say "$what did not come up; see $DEMO/logs/"
  return 1
}
# summary prints what this run delivered: the gateway's count per stream
# and what F&O (the emulator) holds.
summary() {
  local st n
  st=$(curl -sf "$GW/api/v1/status" 2>/dev/null) || return 0
  say "this run, as the gateway counts it:"
  printf '%s\n' "$st" | awk -F'"' '/"stream":/ {s = $4} /"delivered":/ {gsub(/[^0-9]/, "", $3); print "  " s ": " $3 " delivered"}'
  say "and as F&O (fo-emulator) has it:"
  for what in messages:"MES messages" records/ProductionPickingListJournalEntries:"picking list lines (DMF)"; do
    n=$(curl -sf --cacert "$CA" "$EMU/_emulator/${what%%:*}" 2>/dev/null | grep -o '"count": *[0-9]*' | head -1 | grep -o '[0-9]*$') || n='?'
    printf '  %s: %s\n' "${what#*:}" "${n:-?}"
  done
}
finish() {
  local status=$1
  trap - INT TERM EXIT
  [ -n "$stopping" ] && return
  stopping=1
  summary
  stop_all
  if [ "$status" = 0 ]; then
    say "demo stopped (its state is in $DEMO; the next make demo starts afresh)"
  else
    say "the demo failed (exit $status); the logs are in $DEMO/logs/"
  fi
  exit "$status"
}
trap 'echo; finish 0' INT TERM HUP
trap 'finish $?' EXIT

# ---- a fresh run ----

mkdir -p "$DEMO/emulator" "$DEMO/bin"
rm -rf "$DEMO/previous-run"
if [ -d "$DEMO/data" ] || [ -d "$DEMO/logs" ]; then
  mkdir -p "$DEMO/previous-run"
  for d in data logs; do [ -d "$DEMO/$d" ] && mv "$DEMO/$d" "$DEMO/previous-run/"; done
fi
mkdir -p "$DEMO/data" "$DEMO/logs"

# Secrets of this run, in files only their owner reads.
umask 077
mkdir -p "$DEMO/secrets"
token() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
admin_token=$(token)
printf '%s' "$admin_token" >"$DEMO/secrets/admin-token"
printf 'Authorization: Bearer %s\n' "$admin_token" >"$DEMO/secrets/admin.header"
mqtt_password=$(token)
printf '%s' "$mqtt_password" >"$DEMO/secrets/mqtt-password"
umask 022
# The gateway reads its secrets from its environment (${env:...} in
# configs/demo.yaml); the MES simulator its password from
# MES_SIMULATOR_PASSWORD. fo-emulator without a config file accepts only
# its documented stand-in client (plantgate-demo / demo-secret).
export PLANTGATE_DEMO_ADMIN_TOKEN=$admin_token
export PLANTGATE_DEMO_MQTT_PASSWORD=$mqtt_password MES_SIMULATOR_PASSWORD=$mqtt_password
export PLANTGATE_DEMO_FO_SECRET=demo-secret

say "building"
CGO_ENABLED=0 go build -o "$DEMO/bin/plantgate" ./cmd/plantgate
CGO_ENABLED=0 go build -o "$DEMO/bin/fo-emulator" ./cmd/fo-emulator
CGO_ENABLED=0 go build -o "$DEMO/bin/mes-simulator" ./cmd/mes-simulator
CGO_ENABLED=0 go build -o "$DEMO/bin/opcua-simulator" ./cmd/opcua-simulator

start fo-emulator "$DEMO/bin/fo-emulator" --listen "$PLANTGATE_DEMO_FO" --data-dir "$DEMO/emulator" --log-format json
wait_until "fo-emulator" 20 curl -sf --cacert "$CA" "$EMU/_emulator/"

# The line's PLC, OPC UA with Basic256Sha256: it makes order P000103 (the
# MES simulator skips it); the gateway trusts its certificate (source
# line3's pki/trusted).
start opcua-simulator "$DEMO/bin/opcua-simulator" --listen "$PLANTGATE_DEMO_OPCUA" --secure \
  --pki "$DEMO/opcua-simulator" --emulator "$EMU" --ca "$CA" --orders P000103:FG-1000 --every 3s
wait_until "opcua-simulator" 20 test -s "$DEMO/opcua-simulator/cert.der"
mkdir -p "$DEMO/data/sources/line3/pki/trusted"
cp "$DEMO/opcua-simulator/cert.der" "$DEMO/data/sources/line3/pki/trusted/line-simulator.der"

"$DEMO/bin/plantgate" check-config -c "$CONFIG"
start plantgate "$DEMO/bin/plantgate" run -c "$CONFIG" --log-format json
wait_until "plantgate" 20 curl -sf "$GW/readyz"

start mes-simulator "$DEMO/bin/mes-simulator" \
  --broker "tcp://$PLANTGATE_DEMO_MQTT" --username mes --emulator "$EMU" --ca "$CA" --every 2s --skip P000103

# The admin call the banner shows, made once: the header file keeps the
# token off curl's command line.
if body=$(curl -sf -H "@$DEMO/secrets/admin.header" "$GW/api/v1/admin/dead"); then
  answer="answered just now: $(printf '%s' "$body" | { grep -o '"seq"' || true; } | wc -l | tr -d ' ') dead letters"
else
  answer="did not answer just now; see $DEMO/logs/plantgate.log"
fi

cat <<INFO

plantgate demo is running (a fresh gateway data dir and F&O from its seed data; the last run's
state is in $DEMO/previous-run/).
  status page            $GW/
  gateway status (JSON)  curl -s $GW/api/v1/status
  MES messages in F&O    curl -s --cacert $CA $EMU/_emulator/messages
  production orders      curl -s --cacert $CA $EMU/_emulator/production-orders
  order headers (OData)  curl -s --cacert $CA $EMU/_emulator/records/ProductionOrderHeaders
  DMF imports            curl -s --cacert $CA $EMU/_emulator/executions
  consumption (DMF)      curl -s --cacert $CA $EMU/_emulator/records/ProductionPickingListJournalEntries
                         (a batch is imported when its oldest line is 20 s old; the batch in
                         flight is under "batches" in the gateway status)
  OPC UA line (PLC)      opc.tcp://$PLANTGATE_DEMO_OPCUA (opcua-simulator): its good and scrap
                         counts become reports as finished (flows machine-good, machine-scrap;
                         source line3 in the gateway status)
  logs                   $DEMO/logs/

The admin API (made for this run; also in $DEMO/secrets/, readable by you only):
  admin token            $admin_token
  dead letters           curl -s -H @$DEMO/secrets/admin.header $GW/api/v1/admin/dead
                         ($answer)

Publish one confirmation by hand (mosquitto-clients; the MQTT password of this run is in
$DEMO/secrets/mqtt-password):
  mosquitto_pub -h ${PLANTGATE_DEMO_MQTT%:*} -p ${PLANTGATE_DEMO_MQTT##*:} -u mes -P "\$(cat $DEMO/secrets/mqtt-password)" -q 1 -t mes/line3/finished \\
    -m '{"msg_id":"hand-1","order":"P000102","item":"FG-1000","good":5,"scrap":0,"company":"USMF"}'
then find it:
  curl -s --cacert $CA $EMU/_emulator/messages | grep -o '"content":"[^}]*P000102[^}]*}'

Ctrl-C stops everything.
INFO

if [ -n "${PLANTGATE_DEMO_DURATION:-}" ]; then
  sleep "$PLANTGATE_DEMO_DURATION" &
  names+=(timer)
  pids+=($!)
fi
# Until Ctrl-C, the timer, or a process ending by itself.
set +e
wait -n "${pids[@]}"
set -e
if [ -n "${PLANTGATE_DEMO_DURATION:-}" ] && ! kill -0 "${pids[-1]}" 2>/dev/null; then
  say "$PLANTGATE_DEMO_DURATION passed"
  finish 0
fi
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[i]}" 2>/dev/null; then say "${names[i]} exited; see $DEMO/logs/${names[i]}.log"; fi
done
finish 1
