package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// TestInDoubtReleaseWhileRunning settles records in doubt while the
// gateway runs: the CLI finds the running gateway and goes through its
// admin API, the stream's delivery pauses while the queue moves the
// records, and every message arrives once, in order per production order,
// counted on the emulator. Each action is in the audit log.
func TestInDoubtReleaseWhileRunning(t *testing.T) {
	em := foemutest.Start(t)
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	const token = "adm1n-t0ken-for-the-test"
	t.Setenv("PG_TEST_ADMIN", token)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	body := strings.Replace(fmt.Sprintf(inDoubtConfig, dir, em.BaseURL(), em.CAFile()), `http: {listen: "127.0.0.1:0"}`,
		`http: {listen: "127.0.0.1:0", admin_token: "${env:PG_TEST_ADMIN}"}`, 1)
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
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
	cfg, flows, err := app.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a := app.New(cfg, flows, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		foemutest.WaitFor(t, 15*time.Second, what, cond)
	}
	waitFor("gateway started", func() bool { return a.HTTPAddr() != nil })
	messages := func() map[string][]string {
		out := map[string][]string{}
		for _, m := range em.Messages() {
			var c struct{ StartedQuantity json.Number }
			_ = json.Unmarshal([]byte(m.Content), &c)
			out[m.ProductionOrder] = append(out[m.ProductionOrder], c.StartedQuantity.String())
		}
		return out
	}
	// P000202's first message is lost with its connection: F&O never
	// had it. P000201's arrives after the gateway gave up: F&O has it.
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Outage: &foemu.Outage{Mode: foemu.OutageReset}}}}); err != nil {
		t.Fatal(err)
	}
	add("P000202", 1)
	waitFor("P000202 held", func() bool { return len(a.Status().InDoubt) == 1 })
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Latency: foemu.Duration(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	add("P000201", 1)
	waitFor("P000201 held", func() bool { return len(a.Status().InDoubt) == 2 })
	if err := em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	add("P000201", 2)
	add("P000202", 2)
	add("P000203", 1)
	waitFor("P000203 delivered, two parked, P000201's first message late in F&O", func() bool {
		m := messages()
		return len(m["P000203"]) == 1 && len(a.Status().InDoubt) == 4 && len(m["P000201"]) == 1
	})
	if m := messages(); len(m["P000202"]) != 0 {
		t.Fatalf("P000202 reached F&O: %v", m)
	}

	// The CLI uses the API: the queue file stays locked by the gateway.
	t.Setenv("PLANTGATE_ADMIN_TOKEN", "")
	code, out, errOut := runCLI("queue", "in-doubt", "-c", cfgPath, "--json")
	var list []app.InDoubtEntry
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || len(list) != 4 || !strings.Contains(errOut, "admin API") {
		t.Fatalf("in-doubt while running: %d\n%s\n%s", code, out, errOut)
	}
	seqOf := map[string]uint64{}
	for _, e := range list {
		if e.State == d365.HeldInDoubt {
			seqOf[e.Key] = e.Seq
		}
	}
	base := "http://" + a.HTTPAddr().String()
	// Replaying a held record is refused with a pointer to release: dead
	// letter 1 of the stream is P000202's first message, held first.
	if c, b := apiPost(t, base+"/api/v1/admin/dead/replay", token, `{"stream":"mes","seqs":[1]}`); c != 409 || !strings.Contains(b, "in doubt") || !strings.Contains(b, "release") {
		t.Errorf("replay of a held record = %d %s, want 409 pointing to release", c, b)
	}
	// Dropping needs confirmation.
	if c, b := apiPost(t, base+"/api/v1/admin/in-doubt/drop", token, fmt.Sprintf(`{"stream":"mes","seqs":[%d]}`, seqOf["P000202"])); c != 400 || !strings.Contains(b, "confirm") {
		t.Errorf("drop without confirm = %d %s, want 400", c, b)
	}
	if code, out, errOut := runCLI("queue", "release", "-c", cfgPath, "--stream", "mes", "--seq", fmt.Sprint(seqOf["P000202"])); code != exitOK || !strings.Contains(out, "2 records requeued") {
		t.Fatalf("release while running: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runCLI("queue", "drop", "-c", cfgPath, "--stream", "mes", "--seq", fmt.Sprint(seqOf["P000201"]), "--yes"); code != exitOK || !strings.Contains(out, "dropped") {
		t.Fatalf("drop while running: %d %s %s", code, out, errOut)
	}
	waitFor("released and parked messages delivered while running", func() bool {
		m := messages()
		ok := len(m["P000201"]) == 2 && len(m["P000202"]) == 2
		if !ok && os.Getenv("PG_DEBUG") != "" {
			b, _ := json.Marshal(a.Status())
			t.Logf("%v\n%s", m, b)
		}
		return ok
	})
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive now
	got := messages()
	for order, want := range map[string]string{"P000201": "1,2", "P000202": "1,2", "P000203": "1"} {
		if s := strings.Join(got[order], ","); s != want {
			t.Errorf("messages of %s: %s, want %s (once each, in order)", order, s, want)
		}
	}
	if len(a.Status().InDoubt) != 0 {
		t.Errorf("still in doubt: %+v", a.Status().InDoubt)
	}
	audit, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"action":"release"`, `"action":"drop held"`, `"result":"refused"`, "(cli)"} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}
	if strings.Contains(string(audit), token) {
		t.Error("the audit log holds the admin token")
	}
}

func apiPost(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
