package fomes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/queue"
	_ "github.com/plantgate/plantgate/plugins/all"
)

const crashConfig = `gateway:
  id: crash
  data_dir: %[1]s
  drain_timeout: 1s
http:
  listen: %[4]s
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_CRASH_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
    timeout: 2s
    max_requests_per_second: 400
    max_concurrent: 8
sources:
  in:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
flows:
  lines:
    from: in
    when: payload.kind == "e"
    key: payload.journal
    id: payload.id
    to: lines
    map:
      JournalNumber: payload.journal
      LineNumber: payload.line
      ItemNumber: '"RM-2000"'
      CountedQuantity: payload.line
  starts:
    from: in
    when: payload.kind == "m"
    key: payload.order
    id: payload.id
    to: starts
    map:
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.n
sinks:
  lines:
    type: fo.odata
    env: emu
    entity: InventoryCountingJournalLines
    mode: create
    key: [dataAreaId, JournalNumber, LineNumber]
    max_batch: 10
    parallelism: 4
    retry: {initial: 20ms, max: 200ms}
  starts:
    type: fo.mes
    env: emu
    message_type: ProdProductionOrderStart
    in_doubt: hold
    max_batch: 10
    parallelism: 4
    retry: {initial: 20ms, max: 200ms}
`

// TestCrashGateway is not a test: TestIntegrationSIGKILL runs the test
// binary again with PLANTGATE_FO_CRASH_CONFIG set, and this function then
// runs a gateway on that config until it is killed (or SIGTERM stops it).
func TestCrashGateway(t *testing.T) {
	path := os.Getenv("PLANTGATE_FO_CRASH_CONFIG")
	if path == "" {
		t.Skip("helper process for TestIntegrationSIGKILL")
	}
	cfg, flows, err := app.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := app.New(cfg, flows, zerolog.Nop()).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// TestIntegrationSIGKILL kills a gateway (a child process) with SIGKILL
// again and again while it delivers journal lines through fo.odata and
// MES messages through fo.mes to an emulator that runs in this process,
// then lets it finish. F&O's own records must show every journal line
// exactly once, and every MES message at most once (in_doubt: hold) with
// the ones not delivered held or parked as dead letters, never lost, and
// each production order's messages in order.
func TestIntegrationSIGKILL(t *testing.T) { testSIGKILL(t, 6, 160, 120) }

// TestIntegrationOneSIGKILL kills the gateway once during delivery: it
// reports how many MES messages that one kill sets aside (held: sent with
// no known outcome; parked: later messages of the same orders).
func TestIntegrationOneSIGKILL(t *testing.T) { testSIGKILL(t, 1, 160, 120) }

// TestLongSIGKILL is the soak variant: 60 kills over 4000 records.
func TestLongSIGKILL(t *testing.T) {
	if os.Getenv("PLANTGATE_LONG") == "" {
		t.Skip("set PLANTGATE_LONG=1 (make e2e-long)")
	}
	testSIGKILL(t, 60, 2400, 1600)
}

func testSIGKILL(t *testing.T, kills, nLines, nMsgs int) {
	if os.Getenv("PLANTGATE_FO_CRASH_CONFIG") != "" {
		t.Skip("inside the helper")
	}
	em := foemutest.Start(t)
	// Requests take a few milliseconds, so kills often land while some are in flight.
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{
		{Route: foemu.RouteOData, Latency: foemu.Duration(2 * time.Millisecond), Jitter: foemu.Duration(8 * time.Millisecond)},
		{Route: foemu.RouteMES, Latency: foemu.Duration(2 * time.Millisecond), Jitter: foemu.Duration(8 * time.Millisecond)},
	}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	_ = ln.Close()
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(crashConfig, dir, em.BaseURL(), em.CAFile(), httpAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Many production orders, so a held message blocks only a few of them.
	var orders []string
	for i := range 24 {
		orders = append(orders, fmt.Sprintf("PC%04d", i+1))
	}
	var in strings.Builder
	lineWant := map[string]bool{}
	perOrder := map[string]int{}
	msgWant := map[string]bool{}
	for i := range max(nLines, nMsgs) {
		if i < nLines {
			j := fmt.Sprintf("K%d", i%8)
			l := i/8 + 1
			lineWant[fmt.Sprintf("%s/%d", j, l)] = true
			fmt.Fprintf(&in, `{"kind":"e","id":"e%d","journal":%q,"line":%d}`+"\n", i, j, l)
		}
		if i < nMsgs {
			o := orders[i%len(orders)]
			perOrder[o]++
			msgWant[fmt.Sprintf("%s/%d", o, perOrder[o])] = true
			fmt.Fprintf(&in, `{"kind":"m","id":"m%d","order":%q,"n":%d}`+"\n", i, o, perOrder[o])
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(in.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	progress := func() int {
		recs, _ := em.Records("InventoryCountingJournalLines")
		return len(recs) + len(em.Messages())
	}
	startChild := func() (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashGateway$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PLANTGATE_FO_CRASH_CONFIG="+cfgPath, "PG_CRASH_FO_SECRET="+foemu.DefaultClientSecret)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &stderr
	}
	// drained asks the running gateway whether it read the whole input and
	// its queue is empty: every record delivered, or held or parked.
	drained := func() bool {
		resp, err := http.Get("http://" + httpAddr + "/api/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st app.Status
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		atEnd := len(st.Sources) == 1 && st.Sources[0].Details["at_end"] == true
		return atEnd && st.Queue.Records == 0 && st.Ready
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	total := nLines + nMsgs
	done := false
	for k := 0; k < kills && !done; k++ {
		before := progress()
		step := 1 + rng.IntN(max(1, (total-before)/(kills-k+1)))
		cmd, stderr := startChild()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(time.Millisecond)
		for n := 0; progress() < before+step; n++ {
			select {
			case err := <-exited:
				t.Fatalf("gateway %d exited early: %v\n%s", k, err, stderr.String())
			case <-tick.C:
			}
			if n%100 == 99 && drained() {
				done = true // nothing left to deliver: the rest is held
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d made no progress in 30 s\n%s", k, stderr.String())
			}
		}
		tick.Stop()
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		t.Logf("kill %d after %d records reached F&O", k+1, progress())
	}
	// The last run finishes the work and stops cleanly.
	cmd, stderr := startChild()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	foemutest.WaitFor(t, 5*time.Minute, "the queue drained", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("gateway exited early: %v\n%s", err, stderr.String())
		default:
		}
		return drained()
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Fatalf("gateway stop: %v\n%s", err, stderr.String())
	}

	s, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("queue check: %v", err)
	}
	// Journal lines: each exactly once, none dead-lettered.
	lines, _ := em.Records("InventoryCountingJournalLines")
	got := map[string]bool{}
	for _, r := range lines {
		got[fmt.Sprintf("%v/%v", r["JournalNumber"], r["LineNumber"])] = true
	}
	if len(lines) != nLines || len(got) != nLines {
		t.Errorf("%d journal lines in F&O (%d distinct), want %d", len(lines), len(got), nLines)
	}
	for k := range lineWant {
		if !got[k] {
			t.Errorf("journal line %s lost", k)
		}
	}
	if dead, _ := s.ListDead("lines.lines", 0, 0); len(dead) != 0 {
		t.Errorf("%d journal lines dead-lettered, first: %s", len(dead), dead[0].Reason)
	}
	// MES messages: at most once; the rest held or parked; in order per order.
	seen := map[string]int{}
	lastOf := map[string]int{}
	for _, m := range em.Messages() {
		var c struct{ StartedQuantity int }
		_ = json.Unmarshal([]byte(m.Content), &c)
		k := fmt.Sprintf("%s/%d", m.ProductionOrder, c.StartedQuantity)
		seen[k]++
		if seen[k] > 1 {
			t.Errorf("MES message %s sent %d times", k, seen[k])
		}
		if c.StartedQuantity <= lastOf[m.ProductionOrder] {
			t.Errorf("order %s: message %d after %d", m.ProductionOrder, c.StartedQuantity, lastOf[m.ProductionOrder])
		}
		lastOf[m.ProductionOrder] = c.StartedQuantity
	}
	dead, _ := s.ListDead("starts", 0, 0) // fo.mes: one stream per sink
	set := map[string]bool{}
	held, parked := 0, 0
	for _, d := range dead {
		if strings.HasPrefix(d.Reason, d365.ReasonHeldPrefix) {
			held++
		} else if strings.HasPrefix(d.Reason, d365.ReasonParkedPrefix) {
			parked++
		}
		if !strings.HasPrefix(d.Reason, d365.ReasonHeldPrefix) && !strings.HasPrefix(d.Reason, d365.ReasonParkedPrefix) {
			t.Errorf("MES dead letter for another reason: %s", d.Reason)
		}
		set[fmt.Sprintf("%v/%v", d.Record.Fields["ProductionOrderNumber"], d.Record.Fields["StartedQuantity"])] = true
	}
	for k := range msgWant {
		if seen[k] == 0 && !set[k] {
			t.Errorf("MES message %s lost: neither in F&O nor held", k)
		}
	}
	st := em.Stats()
	t.Logf("%d kills: %d journal lines exactly once (%d in doubt read back: %d found, %d absent); %d of %d MES messages delivered once, %d held (sent, outcome unknown) and %d parked behind them for an operator",
		kills, len(lines), st.Count(foemu.RouteOData, 200)+st.Count(foemu.RouteOData, 404), st.Count(foemu.RouteOData, 200), st.Count(foemu.RouteOData, 404),
		len(seen), nMsgs, held, parked)
}
