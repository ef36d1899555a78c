package app

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

const mesOrderConfig = `gateway:
  id: t
  data_dir: %[1]s
  drain_timeout: 1s
http: {listen: "127.0.0.1:0"}
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_TEST_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
    timeout: 300ms
    max_requests_per_second: 500
sources:
  mes:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
flows:
  start:
    from: mes
    when: payload.type == "start"
    key: payload.order
    to: mes
    map:
      _messageType: '"ProdProductionOrderStart"'
      ProductionOrderNumber: payload.order
  finished:
    from: mes
    when: payload.type == "finished"
    key: payload.order
    to: mes
    map:
      _messageType: '"ProdProductionOrderReportFinished"'
      ProductionOrderNumber: payload.order
      ReportFinishedLines: '[{"ItemNumber": "FG-1000", "ReportedGoodQuantity": payload.good}]'
sinks:
  mes:
    type: fo.mes
    env: emu
    max_batch: 5
    retry: {initial: 20ms, max: 200ms}
`

// TestOrderPerProductionOrderAcrossMessageTypes: a production order's
// start and its report as finished come from two flows, but go through the
// one fo.mes sink's stream, so a start held in doubt holds back the same
// order's report (F&O processes an order's messages in the order it
// receives them), while other orders go on in order.
func TestOrderPerProductionOrderAcrossMessageTypes(t *testing.T) {
	em := foemutest.Start(t)
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	a, cancel, done := startAppWith(t, dir, fmt.Sprintf(mesOrderConfig, dir, em.BaseURL(), em.CAFile()))
	defer func() {
		cancel()
		<-done
	}()
	messages := func() []string {
		var out []string
		for _, m := range em.Messages() {
			out = append(out, m.ProductionOrder+":"+strings.TrimPrefix(m.Type, "ProdProductionOrder"))
		}
		return out
	}
	// F&O answers too late: P1's start is sent, its outcome unknown.
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Latency: foemu.Duration(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	appendLines(t, in, `{"type":"start","order":"P1"}`)
	eventually(t, "P1's start held", func() bool { return len(a.Status().InDoubt) == 1 })
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	before := len(em.Messages()) // the late start may have reached F&O
	appendLines(t, in, `{"type":"finished","order":"P1","good":3}`, `{"type":"start","order":"P2"}`, `{"type":"finished","order":"P2","good":4}`)
	eventually(t, "P2 delivered and P1's report parked", func() bool {
		m := messages()[before:]
		return len(m) == 2 && len(a.Status().InDoubt) == 2
	})
	if got := strings.Join(messages()[before:], ","); got != "P2:Start,P2:ReportFinished" {
		t.Errorf("messages after the hold: %s, want only P2's, in order", got)
	}
	for _, h := range a.Status().InDoubt {
		if h.Key != "P1" || h.Stream != "mes" {
			t.Errorf("in doubt %+v, want P1's records of stream mes", h)
		}
	}
}
