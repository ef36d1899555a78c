#!/usr/bin/env bash
# make demo: fo-emulator + plantgate (embedded MQTT broker, MES, OData and
# DMF sinks) + the MES simulator, on this machine, with nothing but Go.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${PLANTGATE_DEMO_DIR:-$PWD/.demo}
export PLANTGATE_DEMO_DIR=$DEMO
export PLANTGATE_DEMO_FO_SECRET=demo-secret
export PLANTGATE_DEMO_MQTT_PASSWORD=${PLANTGATE_DEMO_MQTT_PASSWORD:-demo-mes}
export PLANTGATE_DEMO_ADMIN_TOKEN=${PLANTGATE_DEMO_ADMIN_TOKEN:-demo-admin}
EMU=https://127.0.0.1:18443
mkdir -p "$DEMO/emulator" "$DEMO/data" "$DEMO/logs"

echo "demo: building"
CGO_ENABLED=0 go build -o "$DEMO/bin/plantgate" ./cmd/plantgate
CGO_ENABLED=0 go build -o "$DEMO/bin/fo-emulator" ./cmd/fo-emulator
CGO_ENABLED=0 go build -o "$DEMO/bin/mes-simulator" ./cmd/mes-simulator

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped; state is in $DEMO (rm -rf it to start afresh)"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

"$DEMO/bin/fo-emulator" --listen 127.0.0.1:18443 --data-dir "$DEMO/emulator" --log-format json >"$DEMO/logs/fo-emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$DEMO/emulator/ca.pem" ] && curl -sf --cacert "$DEMO/emulator/ca.pem" "$EMU/_emulator/" >/dev/null 2>&1 && break; sleep 0.1; done

"$DEMO/bin/plantgate" check-config -c configs/demo.yaml
"$DEMO/bin/plantgate" run -c configs/demo.yaml --log-format json >"$DEMO/logs/plantgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9464/readyz >/dev/null 2>&1 && break; sleep 0.1; done

"$DEMO/bin/mes-simulator" --broker tcp://127.0.0.1:1883 --username mes --password "$PLANTGATE_DEMO_MQTT_PASSWORD" \
  --emulator "$EMU" --ca "$DEMO/emulator/ca.pem" --every 2s >"$DEMO/logs/mes-simulator.log" 2>&1 &
pids+=($!)

cat <<INFO

plantgate demo is running.
  status page            http://127.0.0.1:9464/
  gateway status (JSON)  curl -s http://127.0.0.1:9464/api/v1/status
  MES messages in F&O    curl -s --cacert $DEMO/emulator/ca.pem $EMU/_emulator/messages
  production orders      curl -s --cacert $DEMO/emulator/ca.pem $EMU/_emulator/production-orders
  order headers (OData)  curl -s --cacert $DEMO/emulator/ca.pem $EMU/_emulator/records/ProductionOrderHeaders
  DMF imports            curl -s --cacert $DEMO/emulator/ca.pem $EMU/_emulator/executions
  consumption (DMF)      curl -s --cacert $DEMO/emulator/ca.pem $EMU/_emulator/records/ProductionPickingListJournalEntries
                         (a batch is imported when its oldest line is 20 s old; the batch in
                         flight is under "batches" in the gateway status)
  logs                   $DEMO/logs/

Publish one confirmation by hand (mosquitto-clients):
  mosquitto_pub -h 127.0.0.1 -p 1883 -u mes -P $PLANTGATE_DEMO_MQTT_PASSWORD -q 1 -t mes/line3/finished \\
    -m '{"msg_id":"hand-1","order":"P000102","item":"FG-1000","good":5,"scrap":0,"company":"USMF"}'
then find it:
  curl -s --cacert $DEMO/emulator/ca.pem $EMU/_emulator/messages | grep -o '"content":"[^}]*P000102[^}]*}'

Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
echo "demo: a process exited; see $DEMO/logs/"
