package mqtt

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/certexpiry"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/inputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

func init() {
	inputs.Add(pipeline.SourceFactory{
		Type:      "mqtt",
		NewConfig: func() any { return &Config{} },
		New: func(cfg any, env pipeline.Env) (pipeline.Source, error) {
			return New(cfg.(*Config), env)
		},
		// MQTT is at least once in both modes: a broker or publisher sends
		// a message again when its acknowledgement was lost, and retained
		// messages come again on every subscribe.
		Redelivers: func(any) bool { return true },
	})
}

// ErrRunning is returned by Run when the source is already running.
var ErrRunning = errors.New("source is already running")

// Source is the mqtt source, in client or embedded broker mode.
type Source struct {
	cfg     Config
	name    string
	log     zerolog.Logger
	dec     *decoder
	m       *sourceMetrics
	now     func() time.Time
	recent  *recent
	tls     *tls.Config // client mode: the broker connection; embedded: the listener
	users   map[string]User
	running atomic.Bool

	// Counters, also exported as metrics.
	received, acked, redelivered, decodeFailures, connLosses, qos0Lost atomic.Int64
	inFlight                                                           atomic.Int64
	lastMessage                                                        atomic.Int64 // unix nanos

	mu        sync.Mutex // guards the fields below
	connected bool
	paused    bool
	lastErr   error
	subs      map[string]int // filter -> granted QoS (128: refused)
	listen    string         // embedded: the bound address
	clients   int64
	rate      rateMeter
}

// New builds an mqtt source. It checks cfg and reads the TLS files; it
// opens no connection.
func New(cfg *Config, env pipeline.Env) (*Source, error) {
	c := *cfg
	setDefaults(&c)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	dec, err := newDecoder(&c)
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: c, name: env.Name, log: env.Log, dec: dec, m: newMetrics(env.Metrics, env.Name), now: env.Now, recent: newRecent()}
	if s.now == nil {
		s.now = time.Now
	}
	if c.Embedded != nil {
		if c.Embedded.TLS != nil {
			if s.tls, err = serverTLS(c.Embedded.TLS); err != nil {
				return nil, err
			}
		}
		s.users = make(map[string]User, len(c.Embedded.Users))
		for _, u := range c.Embedded.Users {
			s.users[u.Username] = u
		}
	} else if s.tls, err = clientTLS(&c); err != nil {
		return nil, err
	}
	if s.tls != nil {
		recordCertificates(certexpiry.For(env.Metrics), env.Name, &c)
	}
	return s, nil
}

// recordCertificates exports when the TLS files of c expire (TLS in use);
// serverTLS and clientTLS read and checked them.
func recordCertificates(g *certexpiry.Gauge, source string, c *Config) {
	set := func(use, path string) {
		if path != "" {
			_ = g.SetFile("source", source, use, path)
		}
	}
	if c.Embedded != nil {
		if t := c.Embedded.TLS; t != nil {
			set(certexpiry.UseServer, t.CertFile)
			set(certexpiry.UseCA, t.ClientCAFile)
		}
		return
	}
	set(certexpiry.UseCA, c.TLS.CAFile)
	set(certexpiry.UseClient, c.TLS.CertFile)
}

// setDefaults fills what a config built in code may leave zero.
func setDefaults(c *Config) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.KeepAlive, 30*time.Second)
	def(&c.ConnectTimeout, 10*time.Second)
	def(&c.ReconnectInitial, time.Second)
	def(&c.ReconnectMax, time.Minute)
	def(&c.PauseAfter, 5*time.Second)
	if c.Format == "" {
		c.Format = "json"
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = 1 << 20
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 5000
	}
	if c.BatchMax <= 0 {
		c.BatchMax = 1000
	}
	if c.Embedded != nil {
		e := *c.Embedded
		if e.Listen == "" {
			e.Listen = "127.0.0.1:1883"
		}
		c.Embedded = &e
	}
}

// Run connects to the broker (or runs the embedded broker) and emits what
// arrives until ctx ends. It returns nil on a clean stop, or the error of
// an Emit that failed for another reason than ctx (nothing was
// acknowledged; the broker or publisher redelivers after the restart).
func (s *Source) Run(ctx context.Context, em pipeline.Emitter) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	stopTick := s.startTicker(ctx)
	defer stopTick()
	if s.cfg.Embedded != nil {
		return s.runBroker(ctx, em)
	}
	return s.runClient(ctx, em)
}

// startTicker updates the rate meter every second until ctx ends.
func (s *Source) startTicker(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				s.mu.Lock()
				s.rate.sample(now, s.received.Load())
				s.mu.Unlock()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// noteReceived counts one message entering the source.
func (s *Source) noteReceived(topic string, payload []byte, dup bool, at time.Time) {
	s.received.Add(1)
	s.m.received.Inc()
	s.inFlight.Add(1)
	s.m.inFlight.Inc()
	s.lastMessage.Store(at.UnixNano())
	s.m.lastMessage.Set(float64(at.UnixNano()) / 1e9)
	if again := s.recent.seen(topic, payload); dup || again {
		s.redelivered.Add(1)
		s.m.redeliveries.Inc()
	}
}

// noteDone counts n messages leaving the source: acked after their commit
// (acked true) or given back to the broker unacknowledged.
func (s *Source) noteDone(n int, acked bool) {
	s.inFlight.Add(int64(-n))
	s.m.inFlight.Sub(float64(n))
	if acked {
		s.acked.Add(int64(n))
		s.m.acked.Add(float64(n))
	}
}

func (s *Source) noteDecode(m *pipeline.Message) {
	if m.DecodeErr != nil {
		s.decodeFailures.Add(1)
		s.m.decodeFailures.Inc()
	}
}

func (s *Source) setConnected(v bool, err error) {
	s.mu.Lock()
	s.connected = v
	if v {
		s.lastErr = nil
	} else {
		s.subs = nil // a new connection subscribes again
		if err != nil {
			s.lastErr = err
		}
	}
	s.mu.Unlock()
	s.m.connected.Set(b2f(v))
}

func (s *Source) setPaused(v bool) {
	s.mu.Lock()
	s.paused = v
	s.mu.Unlock()
	s.m.paused.Set(b2f(v))
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// Status implements pipeline.StatusReporter.
func (s *Source) Status() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := map[string]any{
		"connected":           s.connected,
		"paused":              s.paused,
		"received":            s.received.Load(),
		"acked":               s.acked.Load(),
		"in_flight":           s.inFlight.Load(),
		"redeliveries":        s.redelivered.Load(),
		"decode_failures":     s.decodeFailures.Load(),
		"messages_per_second": s.rate.perSecond(),
	}
	if ns := s.lastMessage.Load(); ns != 0 {
		st["last_message_at"] = time.Unix(0, ns).UTC()
	}
	if s.lastErr != nil {
		st["last_error"] = s.lastErr.Error()
	}
	if s.cfg.Embedded != nil {
		st["mode"] = "embedded"
		st["listen"] = s.cfg.Embedded.Listen
		if s.listen != "" {
			st["listen"] = s.listen
		}
		st["clients"] = s.clients
	} else {
		st["mode"] = "client"
		st["broker"] = s.cfg.Broker
		st["client_id"] = s.cfg.ClientID
		st["connection_losses"] = s.connLosses.Load()
		st["qos0_lost"] = s.qos0Lost.Load()
		subs := make(map[string]int, len(s.subs))
		for f, q := range s.subs {
			subs[f] = q
		}
		st["subscriptions"] = subs
	}
	return st
}

// Probe implements pipeline.Prober. While the source runs it reports
// whether it is connected (client mode) or listening (embedded broker) and
// not paused; before that it checks that the broker answers on TCP (and
// TLS), or that the listen address is free.
func (s *Source) Probe(ctx context.Context) error {
	if s.running.Load() {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.paused:
			return fmt.Errorf("%w: ingest paused, the queue has no room", pipeline.ErrNotReady)
		case s.connected:
			return nil
		case s.lastErr != nil:
			return fmt.Errorf("%w: %w", pipeline.ErrNotReady, s.lastErr)
		default:
			return fmt.Errorf("%w: not connected yet", pipeline.ErrNotReady)
		}
	}
	if s.cfg.Embedded != nil {
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", s.cfg.Embedded.Listen)
		if err != nil {
			return fmt.Errorf("%w: embedded broker cannot listen: %w", pipeline.ErrNotReady, err)
		}
		return l.Close()
	}
	u, err := url.Parse(s.cfg.Broker)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), defaultPort(u.Scheme))
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("%w: %w", pipeline.ErrNotReady, err)
	}
	defer func() { _ = conn.Close() }()
	if s.tls != nil {
		tc := s.tls.Clone()
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("%w: tls: %w", pipeline.ErrNotReady, err)
		}
	}
	return nil
}

func defaultPort(scheme string) string {
	switch scheme {
	case "ssl", "tls", "mqtts", "tcps":
		return "8883"
	case "ws":
		return "80"
	case "wss":
		return "443"
	}
	return "1883"
}

// rateMeter averages the message rate over the last ten one-second samples.
type rateMeter struct {
	at    [11]time.Time
	count [11]int64
	n     int
}

func (r *rateMeter) sample(now time.Time, count int64) {
	if r.n == len(r.at) {
		copy(r.at[:], r.at[1:])
		copy(r.count[:], r.count[1:])
		r.n--
	}
	r.at[r.n], r.count[r.n] = now, count
	r.n++
}

func (r *rateMeter) perSecond() float64 {
	if r.n < 2 {
		return 0
	}
	d := r.at[r.n-1].Sub(r.at[0]).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.count[r.n-1]-r.count[0]) / d
}

var (
	_ pipeline.Source         = (*Source)(nil)
	_ pipeline.StatusReporter = (*Source)(nil)
	_ pipeline.Prober         = (*Source)(nil)
)
