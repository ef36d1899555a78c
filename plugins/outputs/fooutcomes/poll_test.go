package fooutcomes_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

const pollConfig = `gateway:
  id: poll
  data_dir: %[1]s
  drain_timeout: 1s
http:
  listen: %[2]s
  admin_token: ${env:PG_ADMIN_TOKEN}
fo:
  emu:
    url: %[3]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_FO_SECRET}
    authority_url: %[3]s
    ca_file: %[4]s
    company: USMF
sources:
  orders:
    type: fo.events
    odata_poll: {env: emu, statuses: [Released], interval: 1s}
flows:
  released:
    from: orders
    key: payload.ProductionOrderNumber
    id: payload.EventId
    to: mes-orders
    map:
      ProductionOrderNumber: payload.ProductionOrderNumber
      Company: payload.LegalEntity
      Status: payload.ProductionOrderStatus
sinks:
  mes-orders:
    type: mqtt
    broker: %[5]s
    client_id: plantgate-poll-test
    topic: mes/orders/{Company}/{ProductionOrderNumber}
    retry: {initial: 20ms, max: 200ms}
`

// TestReleasedOrdersByODataPoll: without business events, the released
// production orders of every company are read from ProductionOrderHeaders
// and published retained, one topic per order; an order released later
// appears too, through SIGKILLs of the gateway.
func TestReleasedOrdersByODataPoll(t *testing.T) {
	bin := plantgate(t)
	em := foemutest.Start(t)
	broker := startMosquitto(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(pollConfig, dir, addr, em.BaseURL(), em.CAFile(), broker)), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, bin: bin, cfg: cfgPath, addr: addr, adminTk: "admin-token", env: []string{
		"PG_ADMIN_TOKEN=admin-token", "PG_FO_SECRET=" + foemu.DefaultClientSecret,
	}}
	g.start()
	sub := subscribe(t, broker, "mes/orders/#")
	foemutest.WaitFor(t, 30*time.Second, "the seed's released orders", func() bool {
		for _, o := range []string{"USMF/P000101", "USMF/P000102", "DEMF/P000201"} {
			if v := sub.get("mes/orders/" + o); v == nil || v["Status"] != "Released" {
				return false
			}
		}
		return true
	})
	if v := sub.get("mes/orders/USMF/P000104"); v != nil {
		t.Fatalf("a created order was published: %v", v)
	}
	g.kill()
	tok := foemutest.Token(t, em)
	req, _ := http.NewRequest(http.MethodPatch, em.BaseURL()+"/data/ProductionOrderHeaders(dataAreaId='USMF',ProductionOrderNumber='P000104')",
		strings.NewReader(`{"ProductionOrderStatus":"Released"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := em.HTTPClient().Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("release P000104: %v %v", err, resp)
	}
	_ = resp.Body.Close()
	g.start()
	time.Sleep(300 * time.Millisecond)
	g.kill()
	g.start()
	foemutest.WaitFor(t, 30*time.Second, "P000104 once released", func() bool {
		v := sub.get("mes/orders/USMF/P000104")
		return v != nil && v["Status"] == "Released"
	})
	// A fresh subscriber gets each order's retained state.
	late := subscribe(t, broker, "mes/orders/#")
	foemutest.WaitFor(t, 5*time.Second, "retained messages", func() bool {
		v := late.get("mes/orders/USMF/P000104")
		return v != nil && v["_retained"] == true
	})
	g.stop()
}
