package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// Names used by the test gateways.
const (
	testSource = "mes"
	testStream = "ingest.out"
	testDead   = "_source.mes"
)

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tk.C
	}
}

// mosquittoPath finds the mosquitto binary. Under -short the caller is
// skipped; otherwise a missing binary fails the test.
func mosquittoPath(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against mosquitto; skipped under -short")
	}
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("mosquitto is not installed: run `make tools` (it installs the Debian packages mosquitto and mosquitto-clients)")
	return ""
}

// mosquitto is a broker process started by a test on a free loopback
// port, with limits raised so it never drops a QoS 1 message.
type mosquitto struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func startMosquitto(t testing.TB) *mosquitto {
	t.Helper()
	m := &mosquitto{t: t, bin: mosquittoPath(t), dir: t.TempDir(), port: freePort(t)}
	// mosquitto started as root switches to the user named here; keep the
	// current user so the persistence directory stays writable.
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	// The limits come from the file plantgate ships for plant brokers.
	shipped, err := os.ReadFile("../../../configs/mosquitto/plantgate.conf")
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	for line := range strings.Lines(string(shipped)) {
		if strings.HasPrefix(line, "persistence_location") || strings.HasPrefix(line, "autosave_interval") {
			continue
		}
		conf.WriteString(line)
	}
	fmt.Fprintf(&conf, `
listener %d 127.0.0.1
allow_anonymous true
user %s
persistence_location %s/
autosave_interval 1800
log_dest stderr
log_type error
log_type warning
`, m.port, me, m.dir)
	if err := os.WriteFile(m.conf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(func() { m.stop(syscall.SIGKILL) })
	return m
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

func (m *mosquitto) url() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	var err error
	if m.log, err = os.OpenFile(filepath.Join(m.dir, "mosquitto.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(m.cmd, m.done)
	eventually(m.t, 10*time.Second, "mosquitto to listen", func() bool {
		select {
		case <-m.done:
			b, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
			m.t.Fatalf("mosquitto exited: %s", b)
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

// stop signals mosquitto and waits for it to exit. SIGTERM lets it save
// its persistence file; SIGKILL loses what was queued since the last save.
func (m *mosquitto) stop(sig syscall.Signal) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Signal(sig)
		<-m.done
	}
	_ = m.log.Close()
	m.cmd = nil
}

// gateway is an in-process plantgate: a queue, a router with one flow
// "ingest" from source "mes" to sink "out", and the mqtt source.
type gateway struct {
	t      testing.TB
	store  *queue.Store
	router *flow.Router
	src    *Source
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// testFlows builds the flows of a test gateway with an id expression.
func testFlows(t testing.TB, idExpr string) []*flow.Flow {
	t.Helper()
	cfg := &config.Config{
		Flows:     map[string]*config.Flow{"ingest": {From: testSource, ID: config.Expr{Src: idExpr}, Key: config.Expr{Src: "topic"}, To: []string{"out"}}},
		FlowOrder: []string{"ingest"},
	}
	flows, err := flow.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return flows
}

func openStore(t testing.TB, path string, o queue.Options) *queue.Store {
	t.Helper()
	if o.OpenTimeout == 0 {
		o.OpenTimeout = 5 * time.Second
	}
	s, err := queue.Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newGateway opens the queue at path and builds the source; start runs it.
func newGateway(t testing.TB, path string, cfg Config, o queue.Options) *gateway {
	t.Helper()
	g := &gateway{t: t, store: openStore(t, path, o), reg: prometheus.NewRegistry()}
	g.router = flow.NewRouter(g.store, testFlows(t, "payload.msg_id"), zerolog.Nop(), nil)
	src, err := New(&cfg, pipeline.Env{Name: testSource, Log: testLogger(t), Metrics: g.reg, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	g.src = src
	t.Cleanup(g.close)
	return g
}

func (g *gateway) start() *gateway {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan error, 1)
	go func() { g.done <- g.src.Run(ctx, g.router.Emitter(testSource)) }()
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

func (g *gateway) close() {
	g.stop()
	if g.store != nil {
		_ = g.store.Close()
		g.store = nil
	}
}

func (g *gateway) waitSubscribed() {
	g.t.Helper()
	eventually(g.t, 15*time.Second, "the source to connect and subscribe", func() bool {
		st := g.src.Status()
		subs, _ := st["subscriptions"].(map[string]int)
		return st["connected"] == true && len(subs) == len(g.src.cfg.Topics)
	})
}

// ids returns the msg_id of every record of the test stream, and how
// many records there are.
func (g *gateway) ids() (map[string]int, int) {
	g.t.Helper()
	return streamIDs(g.t, g.store)
}

func streamIDs(t testing.TB, s *queue.Store) (map[string]int, int) {
	t.Helper()
	recs, err := s.List(testStream, 0, 0)
	if err != nil && !errors.Is(err, queue.ErrUnknownStream) {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for _, r := range recs {
		ids[r.ID]++
	}
	return ids, len(recs)
}

func (g *gateway) count() int {
	_, n := g.ids()
	return n
}

// testLogger logs through t (warnings and up) so failures show context.
func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// publisher is a paho client that publishes test messages.
type publisher struct {
	t testing.TB
	c paho.Client
}

func newPublisher(t testing.TB, url, id string, tweak ...func(*paho.ClientOptions)) *publisher {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(false)
	for _, f := range tweak {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	p := &publisher{t: t, c: c}
	t.Cleanup(func() { c.Disconnect(50) })
	return p
}

// payload is the JSON of test message i.
func payload(prefix string, i int) []byte {
	return fmt.Appendf(nil, `{"msg_id":"%s-%d","seq":%d,"order":"P%d","pad":"%s"}`, prefix, i, i, i%17, strings.Repeat("x", 100))
}

// send publishes messages from..to-1 of prefix on topic at qos, keeping
// at most 1000 unacknowledged, and waits for the last acknowledgements.
func (p *publisher) send(topic string, qos byte, prefix string, from, to int) {
	p.t.Helper()
	var pending []paho.Token
	wait := func(toks []paho.Token) {
		for _, tok := range toks {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				p.t.Errorf("publish: not acknowledged: %v", tok.Error())
				return
			}
		}
	}
	for i := from; i < to; i++ {
		pending = append(pending, p.c.Publish(topic, qos, false, payload(prefix, i)))
		if len(pending) == 1000 {
			wait(pending)
			pending = pending[:0]
		}
	}
	wait(pending)
}

// blockingEmitter is an Emitter for tests: it records every message and
// can be made to wait before returning.
type blockingEmitter struct {
	mu       sync.Mutex
	gate     chan struct{} // Emit waits while gate is open (not closed)
	entered  chan struct{}
	msgs     []pipeline.Message
	fail     error
	inflight int
}

func newBlockingEmitter() *blockingEmitter {
	g := make(chan struct{})
	close(g)
	return &blockingEmitter{gate: g, entered: make(chan struct{}, 1<<16)}
}

func (e *blockingEmitter) block() {
	e.mu.Lock()
	e.gate = make(chan struct{})
	e.mu.Unlock()
}

func (e *blockingEmitter) unblock() {
	e.mu.Lock()
	select {
	case <-e.gate:
	default:
		close(e.gate)
	}
	e.mu.Unlock()
}

func (e *blockingEmitter) Emit(ctx context.Context, msgs ...pipeline.Message) error {
	e.mu.Lock()
	gate, fail := e.gate, e.fail
	e.inflight++
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.inflight--
		e.mu.Unlock()
	}()
	e.entered <- struct{}{}
	select {
	case <-gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	if fail != nil {
		return fail
	}
	e.mu.Lock()
	e.msgs = append(e.msgs, msgs...)
	e.mu.Unlock()
	return nil
}

func (e *blockingEmitter) committed() []pipeline.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]pipeline.Message(nil), e.msgs...)
}

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
