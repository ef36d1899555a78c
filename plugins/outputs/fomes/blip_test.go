package fomes

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// blipProxy is an HTTPS reverse proxy between the gateway and the
// emulator (as a corporate proxy or a load balancer would be), which a
// test can take off the network for a moment.
type blipProxy struct {
	t    testing.TB
	srv  *httptest.Server
	addr string
	ca   string // PEM file trusting the proxy and the emulator

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]bool
	inflight atomic.Int64
	requests atomic.Int64
}

func newBlipProxy(t testing.TB) *blipProxy {
	t.Helper()
	p := &blipProxy{t: t, conns: map[net.Conn]bool{}}
	p.srv = httptest.NewUnstartedServer(nil)
	p.addr = p.srv.Listener.Addr().String()
	p.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch s {
		case http.StateNew:
			p.conns[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(p.conns, c)
		}
	}
	return p
}

// start forwards to the emulator (whose CA the proxy trusts).
func (p *blipProxy) start(em *foemu.Emulator, target string) {
	u, _ := url.Parse("https://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: em.CAPool(), MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.inflight.Add(1)
		defer p.inflight.Add(-1)
		rp.ServeHTTP(w, r)
	})
	p.srv.StartTLS()
	p.ln = p.srv.Listener
	ca, err := os.ReadFile(em.CAFile())
	if err != nil {
		p.t.Fatal(err)
	}
	ca = append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})...)
	p.ca = filepath.Join(p.t.TempDir(), "ca.pem")
	if err := os.WriteFile(p.ca, ca, 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(p.srv.Close)
}

// refuse stops accepting connections (they are refused) and closes the
// idle kept-alive ones the way a server does; requests in flight finish.
func (p *blipProxy) refuse() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.srv.Config.SetKeepAlivesEnabled(false) // closes idle connections
}

// accept listens again on the same address.
func (p *blipProxy) accept() {
	p.srv.Config.SetKeepAlivesEnabled(true)
	var ln net.Listener
	var err error
	for range 200 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	tl := tls.NewListener(ln, p.srv.TLS)
	p.mu.Lock()
	p.ln = tl
	p.mu.Unlock()
	go func() { _ = p.srv.Config.Serve(tl) }()
}

// cut closes every client connection at once, in the middle of whatever
// it carries, and returns the number of requests that were in flight.
func (p *blipProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := int(p.inflight.Load())
	for c := range p.conns {
		_ = c.Close()
	}
	return n
}

// blipRun is one run of the fo.mes sink through a runner while the proxy
// blips.
type blipRun struct {
	delivered, held, parked, other int
	inFlightAtCut                  int
	inOrder                        bool
}

func runBlip(t *testing.T, n int, blip func(p *blipProxy) int) blipRun {
	p := newBlipProxy(t)
	cfg := foemu.DefaultConfig()
	foemutest.Fast(&cfg)
	cfg.PublicURL = "https://" + p.addr
	// Each message takes a few milliseconds in F&O, so that requests are
	// in flight when the network goes.
	cfg.Faults = foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Latency: foemu.Duration(10 * time.Millisecond)}}}
	em, target := startEmulator(t, cfg)
	p.start(em, target)
	fe := d365test.Env(t, em, d365test.FastBreaker, func(c *config.FOEnv, _ *d365.Options) { c.CAFile = p.ca })
	st := d365test.Store(t)
	s := newSink(t, mesConfig("ProdProductionOrderStart", InDoubtHold), fe, st)
	stream := "start.mes"
	d365test.Runner(t, st, stream, s, flow.RunnerConfig{MaxBatch: 10, Parallelism: 4})

	orders := []string{"P000101", "P000102", "P000103", "P000104"}
	want := map[string]int{}
	var res blipRun
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(400 * time.Millisecond)
		res.inFlightAtCut = blip(p)
	}()
	tick := time.NewTicker(8 * time.Millisecond)
	for i := range n {
		<-tick.C
		o := orders[i%len(orders)]
		want[o]++
		d365test.Append(t, st, stream, pipeline.Record{Key: o, Fields: map[string]any{"ProductionOrderNumber": o, "StartedQuantity": want[o]}})
	}
	tick.Stop()
	<-done
	d365test.Drained(t, st, stream, 60*time.Second)

	got, total := startedQuantities(t, em)
	res.delivered = total
	res.inOrder = true
	for o, k := range want {
		q := got[o]
		seen := map[int]bool{}
		last := 0
		for _, v := range q {
			if seen[v] || v < last || v > k {
				res.inOrder = false
				t.Errorf("order %s: messages %v, want each of 1..%d at most once, in order", o, q, k)
				break
			}
			seen[v], last = true, v
		}
	}
	for _, dl := range d365test.Dead(t, st, stream) {
		switch {
		case strings.Contains(dl.Reason, d365.ReasonHeldPrefix):
			res.held++
		case strings.Contains(dl.Reason, d365.ReasonParkedPrefix):
			res.parked++
		default:
			res.other++
			t.Errorf("dead letter that is not in doubt: %s", dl.Reason)
		}
	}
	t.Logf("proxy: %d requests", p.requests.Load())
	return res
}

// startEmulator starts an emulator on a port of its own and returns that
// address (its URL names the proxy).
func startEmulator(t *testing.T, cfg foemu.Config) (*foemu.Emulator, string) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	em, err := foemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := em.Start(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = em.Shutdown(ctx)
	})
	return em, addr
}

// TestBlipRefusedConnections: the network between the gateway and F&O
// refuses connections for 1.5 s (a proxy restart): no request is left in
// doubt, nothing is held or parked, and every message arrives exactly once.
func TestBlipRefusedConnections(t *testing.T) {
	const n = 300
	r := runBlip(t, n, func(p *blipProxy) int {
		p.refuse()
		time.Sleep(1500 * time.Millisecond)
		p.accept()
		return 0
	})
	t.Logf("refused-connections blip of 1.5 s: %d of %d messages delivered, %d held, %d parked", r.delivered, n, r.held, r.parked)
	if r.held+r.parked != 0 {
		t.Errorf("a refused-connections blip set %d records aside (%d held, %d parked), want 0", r.held+r.parked, r.held, r.parked)
	}
	if r.delivered != n {
		t.Errorf("%d messages in F&O, want exactly %d", r.delivered, n)
	}
}

// TestBlipCutMidRequest: the proxy cuts every established connection
// while requests are in flight. Only those requests are in doubt: the
// sink holds at most as many records as were in flight (at most
// max_concurrent); the records of other keys arrive exactly once.
func TestBlipCutMidRequest(t *testing.T) {
	const n = 300
	const maxConc = 16 // d365test.FOEnv's max_concurrent
	r := runBlip(t, n, func(p *blipProxy) int { return p.cut() })
	t.Logf("mid-request cut with %d requests in flight: %d of %d messages delivered, %d held, %d parked behind them",
		r.inFlightAtCut, r.delivered, n, r.held, r.parked)
	if r.held > r.inFlightAtCut || r.held > maxConc {
		t.Errorf("%d records held for %d requests in flight at the cut (max_concurrent %d)", r.held, r.inFlightAtCut, maxConc)
	}
	// With in_doubt: hold, later records of a held record's key may be
	// parked behind it until an operator settles it, so parked counts can
	// exceed the requests in flight. Reported, not asserted, while the
	// in-doubt tracker is being reworked.
	if r.held+r.parked > r.inFlightAtCut {
		t.Logf("NOTE: one cut set %d records aside (%d held, %d parked) for %d requests in flight", r.held+r.parked, r.held, r.parked, r.inFlightAtCut)
	}
	// A held message may be in F&O (its request was processed before the
	// cut): delivered plus set aside is at least n.
	if r.delivered+r.held+r.parked < n || r.delivered > n {
		t.Errorf("%d delivered and %d set aside of %d records", r.delivered, r.held+r.parked, n)
	}
}
