package foemu_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

func TestControlEndpoints(t *testing.T) {
	a := newAPI(t)
	a.send("USMF", "ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P000102"})
	waitMessages(t, a.em, 1)
	a.do(http.MethodGet, "/data/ReleasedProductsV2", "")
	ctl := &api{t: t, em: a.em, hc: a.hc} // no token: /_emulator needs none by default
	tests := []struct {
		path, want string
	}{
		{"/_emulator/", `"GET /_emulator/records/{EntitySet}"`},
		{"/_emulator/records", `"ProductionOrderHeaders":5`},
		{"/_emulator/records/ProductionOrderHeaders", `"count":5`},
		{"/_emulator/messages", `"state":"Processed"`},
		{"/_emulator/messages?state=failed", `"count":0`},
		{"/_emulator/executions", `"count":0`},
		{"/_emulator/production-orders", `"status":"StartedUp"`},
		{"/_emulator/stats", `"odata":{"200":1}`},
		{"/_emulator/faults", `"rules":null`},
		{"/_emulator/config", `"page_size":10000`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := ctl.do(http.MethodGet, tt.path, "")
			if r.status != 200 || !strings.Contains(string(r.body), tt.want) {
				t.Errorf("status %d, body %s; want it to contain %s", r.status, r.body, tt.want)
			}
		})
	}
	if r := ctl.do(http.MethodGet, "/_emulator/config", ""); strings.Contains(string(r.body), "demo-secret") {
		t.Error("/_emulator/config shows a client secret")
	}
	if r := ctl.do(http.MethodGet, "/_emulator/records/productionorderheaders", ""); r.status != 404 {
		t.Errorf("unknown set: %d", r.status)
	}
	r := ctl.do(http.MethodPost, "/_emulator/faults", `{"rules":[{"route":"odata","error_rate":1,"error_status":503}]}`)
	if r.status != 200 {
		t.Fatalf("POST faults: %d %s", r.status, r.body)
	}
	if r := a.do(http.MethodGet, "/data/ReleasedProductsV2", ""); r.status != 503 {
		t.Errorf("after POST faults: %d", r.status)
	}
	if r := ctl.do(http.MethodPost, "/_emulator/faults", `{"rules":[{"route":"ftp"}]}`); r.status != 400 {
		t.Errorf("invalid faults: %d %s", r.status, r.body)
	}
	if r := ctl.do(http.MethodPost, "/_emulator/faults", `{"rulez":[]}`); r.status != 400 {
		t.Errorf("unknown fault field: %d %s", r.status, r.body)
	}
	if r := ctl.do(http.MethodPost, "/_emulator/reset", ""); r.status != 200 {
		t.Fatalf("reset: %d %s", r.status, r.body)
	}
	if r := a.do(http.MethodGet, "/data/ReleasedProductsV2", ""); r.status != 200 {
		t.Errorf("faults after reset: %d", r.status)
	}
	if n := len(a.em.Messages()); n != 0 {
		t.Errorf("messages after reset = %d", n)
	}
	if st := a.em.Stats(); st.Total(foemu.RouteOData) != 1 {
		t.Errorf("stats after reset = %+v", st.Routes)
	}
	for _, po := range a.em.ProductionOrders() {
		if po.Number == "P000102" && po.Status != "Released" {
			t.Errorf("P000102 after reset = %s", po.Status)
		}
	}
}

func TestControlToken(t *testing.T) {
	em := foemutest.Start(t, func(c *foemu.Config) { c.Control.Token = "letmein" })
	ctl := &api{t: t, em: em, hc: em.HTTPClient()}
	if r := ctl.do(http.MethodGet, "/_emulator/stats", ""); r.status != 401 {
		t.Errorf("without token: %d", r.status)
	}
	ctl.token = "letmein"
	if r := ctl.do(http.MethodGet, "/_emulator/stats", ""); r.status != 200 {
		t.Errorf("with token: %d", r.status)
	}
}

func TestIndexAndUnknownRoutes(t *testing.T) {
	a := newAPI(t)
	if r := a.do(http.MethodGet, "/", ""); r.status != 200 || !strings.Contains(string(r.body), `"environment_url":"`+a.em.BaseURL()+`"`) {
		t.Errorf("index: %d %s", r.status, r.body)
	}
	if r := a.do(http.MethodGet, "/nothing/here/at/all", ""); r.status != 404 {
		t.Errorf("unknown path: %d", r.status)
	}
	if r := a.do(http.MethodPost, "/api/services/SysMessageServices/SysMessageService/Other", "{}"); r.status != 404 {
		t.Errorf("unknown service operation: %d", r.status)
	}
	if r := a.do(http.MethodPost, "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.ExportToPackage", "{}"); r.status != 404 {
		t.Errorf("unimplemented action: %d", r.status)
	}
}

// TestRestartKeepsCAAndState restarts an emulator on the same data
// directory: the CA stays, and with snapshot on the records stay too.
func TestRestartKeepsCAAndState(t *testing.T) {
	dir := t.TempDir()
	start := func() *foemu.Emulator {
		cfg := foemu.DefaultConfig()
		foemutest.Fast(&cfg)
		cfg.DataDir = dir
		cfg.Snapshot = true
		em, err := foemu.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := em.Start(ln); err != nil {
			t.Fatal(err)
		}
		return em
	}
	em := start()
	a := &api{t: t, em: em, token: foemutest.Token(t, em), hc: em.HTTPClient()}
	if r := a.do(http.MethodPost, "/data/ReleasedProductsV2", `{"ItemNumber":"SNAP-1"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	a.send("USMF", "ProdProductionOrderStart", map[string]any{"ProductionOrderNumber": "P000101"})
	waitMessages(t, em, 1)
	ca1, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := em.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	em2 := start()
	t.Cleanup(func() { _ = em2.Close() })
	ca2, _ := os.ReadFile(em2.CAFile())
	if string(ca1) != string(ca2) {
		t.Error("the CA changed across a restart")
	}
	recs, _ := em2.Records("ReleasedProductsV2")
	found := false
	for _, r := range recs {
		found = found || r["ItemNumber"] == "SNAP-1"
	}
	if !found {
		t.Error("record created before the restart is gone")
	}
	if msgs := em2.Messages(); len(msgs) != 1 || msgs[0].State != foemu.MessageProcessed {
		t.Errorf("messages after restart = %+v", msgs)
	}
	if po := order(t, em2, "P000101"); po.Status != "StartedUp" || po.StartedAt == nil {
		t.Errorf("P000101 after restart = %+v", po)
	}
	// A token from the first process is not valid in the second (a new
	// signing key, and here a new port): clients get a new token after a 401.
	b := &api{t: t, em: em2, token: a.token, hc: em2.HTTPClient()}
	if r := b.do(http.MethodGet, "/data/ReleasedProductsV2?$top=1", ""); r.status != 401 {
		t.Errorf("old token after restart: %d, want 401", r.status)
	}
}
