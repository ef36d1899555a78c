package opcua

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

const (
	testSource  = "line"
	eventStream = "counts.out"
	gapStream   = "gaps.out"
	valueStream = "values.out"
)

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parseConfig loads a whole gateway config with the strict loader: the
// source named line is an opcua source with body as its settings; flows
// send events, gaps and values to a sink "out".
func parseConfig(t testing.TB, body string) (*Config, []*flow.Flow) {
	return parseConfigFlows(t, body, `counts: {from: line, when: 'meta.kind == "event"', key: payload.rule, to: out}
gaps: {from: line, when: 'meta.kind == "gap"', to: out}
values: {from: line, when: 'meta.kind == "value"', to: out}`)
}

func parseConfigFlows(t testing.TB, body, flowsYAML string) (*Config, []*flow.Flow) {
	t.Helper()
	doc := "gateway: {id: test}\nsources:\n  line:\n    type: opcua\n" + indent(body, "    ") + "\nsinks:\n  out: {type: out}\nflows:\n" + indent(flowsYAML, "  ")
	opts := config.Options{
		SourceConfig: func(typ string) (any, bool) {
			if typ == "opcua" {
				return &Config{}, true
			}
			return nil, false
		},
		SinkConfig: func(typ string) (any, bool) { return nil, typ == "out" },
		Env:        func(string) (string, bool) { return "secret", true },
	}
	cfg, err := config.Parse("test.yaml", []byte(doc), opts)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", doc, err)
	}
	flows, err := flow.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Sources["line"].Settings.(*Config), flows
}

// configError loads body as the opcua source's settings and returns the
// loader's error.
func configError(body string) error {
	doc := "gateway: {id: test}\nsources:\n  line:\n    type: opcua\n" + indent(body, "    ") + "\nsinks:\n  out: {type: out}\nflows:\n  f: {from: line, to: out}\n"
	opts := config.Options{
		SourceConfig: func(typ string) (any, bool) { return &Config{}, typ == "opcua" },
		SinkConfig:   func(typ string) (any, bool) { return nil, typ == "out" },
	}
	_, err := config.Parse("test.yaml", []byte(doc), opts)
	return err
}

func indent(s, pre string) string {
	var b strings.Builder
	for line := range strings.Lines(strings.TrimSpace(s) + "\n") {
		b.WriteString(pre + line)
	}
	return b.String()
}

// gateway is an in-process plantgate: a queue, a router and the source.
type gateway struct {
	t      testing.TB
	path   string
	data   string
	store  *queue.Store
	router *flow.Router
	src    *Source
	cfg    *Config
	flows  []*flow.Flow
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func newGateway(t testing.TB, dir, body string) *gateway {
	t.Helper()
	cfg, flows := parseConfig(t, body)
	return newGatewayWith(t, dir, cfg, flows)
}

func newGatewayFlows(t testing.TB, dir, body, flowsYAML string) *gateway {
	t.Helper()
	cfg, flows := parseConfigFlows(t, body, flowsYAML)
	return newGatewayWith(t, dir, cfg, flows)
}

func newGatewayWith(t testing.TB, dir string, cfg *Config, flows []*flow.Flow) *gateway {
	t.Helper()
	g := &gateway{t: t, path: filepath.Join(dir, "queue.db"), data: dir, cfg: cfg, flows: flows, reg: prometheus.NewRegistry()}
	g.open()
	t.Cleanup(g.close)
	return g
}

func (g *gateway) open() {
	g.t.Helper()
	s, err := queue.Open(g.path, queue.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		g.t.Fatal(err)
	}
	g.store = s
	g.router = flow.NewRouter(s, g.flows, zerolog.Nop(), nil)
	cfg := *g.cfg
	src, err := New(&cfg, pipeline.Env{Name: testSource, Log: testLogger(g.t), Now: time.Now, Metrics: g.reg, State: s.Scope(flow.SourceStateScope(testSource)),
		DataDir: filepath.Join(g.data, "sources", testSource), GatewayID: "test"})
	if err != nil {
		g.t.Fatal(err)
	}
	g.src = src
}

func (g *gateway) start() *gateway {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan error, 1)
	src, em := g.src, g.router.Emitter(testSource)
	go func() { g.done <- src.Run(ctx, em) }()
	return g
}

// stop ends Run and waits for it; the queue stays open.
func (g *gateway) stop() {
	if g.cancel == nil {
		return
	}
	g.cancel()
	select {
	case err := <-g.done:
		if err != nil {
			g.t.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		g.t.Fatal("Run did not return within 20s of cancel")
	}
	g.cancel = nil
}

// restart stops the source, closes and reopens the queue and starts a
// new source on it: a gateway restart.
func (g *gateway) restart() {
	g.stop()
	_ = g.store.Close()
	g.open()
	g.start()
}

func (g *gateway) close() {
	g.stop()
	if g.store != nil {
		_ = g.store.Close()
		g.store = nil
	}
}

func (g *gateway) records(stream string) []pipeline.Record {
	g.t.Helper()
	recs, err := g.store.List(stream, 0, 0)
	if err != nil && !errors.Is(err, queue.ErrUnknownStream) {
		g.t.Fatal(err)
	}
	return recs
}

// increase sums the increases the queue holds for a counter rule.
func (g *gateway) increase(rule string) int64 {
	var n int64
	for _, r := range g.records(eventStream) {
		if r.Fields["rule"] == rule {
			n += toInt(r.Fields["increase"])
		}
	}
	return n
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	case json.Number:
		n, _ := x.Int64()
		return n
	}
	return 0
}

func (g *gateway) status() map[string]any { return g.src.Status() }

// metric returns the value of an opcua metric of the test source.
func (g *gateway) metric(name string) float64 {
	g.t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		g.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	g.t.Fatalf("no metric %s", name)
	return 0
}

func (g *gateway) connected() bool { return g.status()["state"] == "connected" }

func (g *gateway) gaps() []pipeline.Record { return g.records(gapStream) }

// testLogger logs through t (warnings and up) so failures show context.
func testLogger(t testing.TB) zerolog.Logger {
	lvl := zerolog.WarnLevel
	if os.Getenv("PLANTGATE_TEST_LOG") == "debug" {
		lvl = zerolog.DebugLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(lvl).With().Timestamp().Logger()
}

// proxy is a TCP proxy between the gateway and a server that a test can
// cut (close every connection and refuse new ones) and restore.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	frozen bool
	conns  []net.Conn
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.setCut(true) })
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst, holding the bytes while the proxy is frozen.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		for p.isFrozen() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

// freeze holds every byte in both directions without closing anything:
// a server (or network) that hangs.
func (p *proxy) freeze(f bool) {
	p.mu.Lock()
	p.frozen = f
	p.mu.Unlock()
}

// setCut drops every connection (the network is gone) or restores it.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func endpointVia(p *proxy, path string) string { return fmt.Sprintf("opc.tcp://%s%s", p.addr(), path) }
