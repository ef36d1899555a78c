package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/queue"
)

const inDoubtConfig = `gateway:
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
    key: payload.order
    to: mes
    map:
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.n
sinks:
  mes:
    type: fo.mes
    env: emu
    message_type: ProdProductionOrderStart
    max_batch: 5
    retry: {initial: 20ms, max: 200ms}
`

// TestInDoubtReleaseAndDrop holds two messages whose answers timed out,
// parks the later messages of their orders, then releases one and drops
// the other on the stopped gateway, and checks on the emulator that every
// message arrived once, in order per production order.
func TestInDoubtReleaseAndDrop(t *testing.T) {
	em := foemutest.Start(t)
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(inDoubtConfig, dir, em.BaseURL(), em.CAFile())), 0o600); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.jsonl")
	add := func(order string, n int) {
		f, err := os.OpenFile(in, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, `{"order":%q,"n":%d}`+"\n", order, n)
		_ = f.Close()
	}
	start := func() (*app.App, func()) {
		cfg, flows, err := app.LoadConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		a := app.New(cfg, flows, zerolog.Nop())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		foemutest.WaitFor(t, 10*time.Second, "gateway started", func() bool { return a.HTTPAddr() != nil })
		return a, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway: %v", err)
			}
		}
	}
	messages := func() map[string][]string {
		out := map[string][]string{}
		for _, m := range em.Messages() {
			var c struct{ StartedQuantity json.Number }
			_ = json.Unmarshal([]byte(m.Content), &c)
			out[m.ProductionOrder] = append(out[m.ProductionOrder], c.StartedQuantity.String())
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		foemutest.WaitFor(t, 15*time.Second, what, cond)
	}

	a, stop := start()
	// F&O answers too late: the first messages of P000101 and P000102 are in doubt.
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Latency: foemu.Duration(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	add("P000101", 1)
	add("P000102", 1)
	waitFor("two messages held", func() bool { return len(a.Status().InDoubt) == 2 })
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	add("P000101", 2)
	add("P000102", 2)
	add("P000103", 1)
	waitFor("P000103 delivered and two messages parked", func() bool {
		return len(messages()["P000103"]) == 1 && len(a.Status().InDoubt) == 4
	})
	st := a.Status()
	if !strings.Contains(strings.Join(st.Problems, "\n"), "sink mes holds 2 records in doubt and 2 parked") {
		t.Errorf("status problems %q", st.Problems)
	}
	stop()
	if got := messages(); len(got["P000101"])+len(got["P000102"]) != 0 {
		t.Fatalf("held or parked messages reached F&O: %v", got)
	}

	code, out, errOut := runCLI("queue", "in-doubt", "-c", cfgPath)
	if code != exitOK || strings.Count(out, "  held  ") != 2 || strings.Count(out, "parked (behind") != 2 || !strings.Contains(out, "dead letter") {
		t.Fatalf("in-doubt: %d\n%s%s", code, out, errOut)
	}
	var list []inDoubtEntry
	code, out, _ = runCLI("queue", "in-doubt", "-c", cfgPath, "--json")
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || len(list) != 4 {
		t.Fatalf("in-doubt --json: %d %s", code, out)
	}
	seqOf := map[string]uint64{}
	for _, e := range list {
		if e.State == d365.HeldInDoubt {
			seqOf[e.Key] = e.Seq
		}
	}
	if code, _, _ := runCLI("queue", "drop", "-c", cfgPath, "--stream", "mes", "--seq", fmt.Sprint(seqOf["P000102"])); code != exitUsage {
		t.Errorf("drop without --yes: exit %d, want 2", code)
	}
	if code, _, errOut := runCLI("queue", "release", "-c", cfgPath, "--stream", "mes", "--seq", "999"); code != exitFailure || !strings.Contains(errOut, "no record with seq 999") {
		t.Errorf("release of an unknown seq: %d %s", code, errOut)
	}
	if code, out, errOut := runCLI("queue", "release", "-c", cfgPath, "--stream", "mes", "--seq", fmt.Sprint(seqOf["P000101"])); code != exitOK || !strings.Contains(out, "2 records requeued") {
		t.Fatalf("release: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runCLI("queue", "drop", "-c", cfgPath, "--stream", "mes", "--seq", fmt.Sprint(seqOf["P000102"]), "--yes"); code != exitOK || !strings.Contains(out, "dropped") {
		t.Fatalf("drop: %d %s %s", code, out, errOut)
	}
	if code, out, _ := runCLI("queue", "in-doubt", "-c", cfgPath); code != exitOK || !strings.Contains(out, "no records in doubt") {
		t.Fatalf("in-doubt after release and drop: %s", out)
	}

	_, stop = start()
	waitFor("released and parked messages delivered", func() bool {
		m := messages()
		return len(m["P000101"]) == 2 && len(m["P000102"]) == 1
	})
	stop()
	got := messages()
	for order, want := range map[string]string{"P000101": "1,2", "P000102": "2", "P000103": "1"} {
		if s := strings.Join(got[order], ","); s != want {
			t.Errorf("messages of %s: %s, want %s", order, s, want)
		}
	}
	s, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dead, _ := s.ListDead("mes", 0, 0)
	if len(dead) != 1 || dead[0].Reason != d365.ReasonDropped || dead[0].Record.Key != "P000102" {
		t.Errorf("dead letters %+v, want only the dropped message", dead)
	}
	if recs, _ := s.List("mes", 0, 0); len(recs) != 0 {
		t.Errorf("%d records still queued", len(recs))
	}
}
