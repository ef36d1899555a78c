#!/usr/bin/env bash
# Writes queue.db and in.jsonl of this directory with plantgate 988854f (the
# release before schema version 2) against the fo-emulator of the same
# commit. Run from the repository root:
#   cmd/plantgate/testdata/upgrade-v1/produce.sh
# It needs git, go, curl and jq, and the ports 28443 and 29464 free.
set -euo pipefail
OLD=988854f
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel)
WORK=$(mktemp -d)
TREE=$WORK/tree
DATA=$WORK/data
mkdir -p "$DATA" "$WORK/emu"
emu_pid='' pg_pid=''
finish() {
  if [ -n "$pg_pid" ]; then kill "$pg_pid" 2>/dev/null || true; fi
  if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  git -C "$REPO" worktree remove --force "$TREE" 2>/dev/null || true
  rm -rf "$WORK"
}
trap finish EXIT

git -C "$REPO" worktree add --detach "$TREE" "$OLD" >/dev/null
(cd "$TREE" && CGO_ENABLED=0 go build -o "$WORK/plantgate" ./cmd/plantgate && CGO_ENABLED=0 go build -o "$WORK/fo-emulator" ./cmd/fo-emulator)

EMU=https://127.0.0.1:28443
export PG_UPGRADE_DIR=$DATA PG_UPGRADE_FO_URL=$EMU PG_UPGRADE_FO_CA=$WORK/emu/ca.pem \
  PG_UPGRADE_FO_SECRET=demo-secret PG_UPGRADE_HTTP=127.0.0.1:29464
STATUS=http://$PG_UPGRADE_HTTP/api/v1/status

start_emulator() {
  "$WORK/fo-emulator" --listen 127.0.0.1:28443 --data-dir "$WORK/emu" --log-format json >>"$WORK/emu.log" 2>&1 &
  emu_pid=$!
  for _ in $(seq 100); do curl -sf --cacert "$WORK/emu/ca.pem" "$EMU/_emulator/" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "emulator did not start" >&2; exit 1
}
faults() { curl -sf --cacert "$WORK/emu/ca.pem" -X POST -H 'Content-Type: application/json' -d "$1" "$EMU/_emulator/faults" >/dev/null; }
line() { printf '%s\n' "$1" >>"$DATA/in.jsonl"; }
# wait_for DESCRIPTION JQ-EXPRESSION: polls the gateway's status until the
# expression is true.
wait_for() {
  for _ in $(seq 300); do
    if curl -sf "$STATUS" 2>/dev/null | jq -e "$2" >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "timed out waiting for: $1" >&2; curl -s "$STATUS" | jq . >&2; exit 1
}
stream() { echo "(.streams[] | select(.stream == \"start.mes\"))"; }
qstream() { echo "(.queue.streams[] | select(.stream == \"$1\"))"; }

start_emulator
: >"$DATA/in.jsonl"
"$WORK/plantgate" run -c "$HERE/plantgate.yaml" --log-format json >"$WORK/plantgate.log" 2>&1 &
pg_pid=$!
wait_for "gateway up" '.ready'

# 1. Delivered before the upgrade: its id stays in the dedup window.
line '{"id":"s-1","order":"P000101","n":1}'
wait_for "s-1 delivered" "$(stream).delivered == 1"

# 2. In doubt: F&O answers after 1 s, the sink gives up after 300 ms.
faults '{"rules":[{"route":"mes","latency":"1s"}]}'
line '{"id":"s-2","order":"P000102","n":1}'
wait_for "s-2 held" '(.in_doubt // []) | length == 1'
faults '{"rules":[]}'
# ... and the next message of the same order parked behind it.
line '{"id":"s-3","order":"P000102","n":2}'
wait_for "s-3 parked" '(.in_doubt // []) | length == 2'

# 3. Dead letters: F&O rejects a message (400), a line that is not JSON,
# a message without an order (no key).
faults '{"rules":[{"route":"mes","error_rate":1,"error_status":400}]}'
line '{"id":"s-4","order":"P000103","n":1}'
wait_for "s-4 rejected" '.sinks[] | select(.name == "mes") | .details.rejected == 1'
faults '{"rules":[]}'
line 'this is not JSON'
line '{"id":"s-5","n":7}'
wait_for "two source dead letters" "$(qstream _source.mes).dead == 2"

# 4. Queued: F&O unreachable (the emulator stopped), messages of four
# orders, P000101 and P000103 already known to F&O, wait in the queue.
kill "$emu_pid"; wait "$emu_pid" 2>/dev/null || true; emu_pid=
line '{"id":"s-6","order":"P000101","n":2}'
line '{"id":"s-7","order":"P000103","n":2}'
line '{"id":"s-8","order":"P000104","n":1}'
line '{"id":"s-9","order":"P000101","n":3}'
line '{"id":"s-10","order":"P000104","n":2}'
line '{"id":"s-11","order":"P000105","n":1}'
line '{"id":"s-12","order":"P000104","n":3}'
line '{"id":"s-13","order":"P000101","n":4}'
wait_for "eight records queued" "$(qstream start.mes).records == 8"

# 5. Stop the gateway (SIGTERM drains: nothing can be delivered), compact
# the file with the old CLI, check it, and keep it.
kill -TERM "$pg_pid"; wait "$pg_pid" || true; pg_pid=
"$WORK/plantgate" queue compact -c "$HERE/plantgate.yaml"
"$WORK/plantgate" queue check -c "$HERE/plantgate.yaml"
"$WORK/plantgate" queue stats -c "$HERE/plantgate.yaml"
"$WORK/plantgate" queue in-doubt -c "$HERE/plantgate.yaml"
"$WORK/plantgate" queue dead -c "$HERE/plantgate.yaml"
"$WORK/plantgate" version
cp "$DATA/queue.db" "$DATA/in.jsonl" "$HERE/"
chmod 0644 "$HERE/queue.db" "$HERE/in.jsonl"
echo "wrote $HERE/queue.db ($(stat -c %s "$HERE/queue.db") bytes) and $HERE/in.jsonl"
