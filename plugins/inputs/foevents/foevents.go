// Package foevents is the "fo.events" source: Dynamics 365 F&O business
// events (a MES message's processing result, production orders released
// or changed) taken into the queue like any other message, through the
// endpoint types a plant can use:
//
//   - blob: F&O's Azure Blob Storage endpoint writes each event as a blob
//     into a container. The source lists the container with the azblob SDK,
//     reads each new blob and commits its events together with the blob's
//     name in the source's queue state (one transaction), then deletes the
//     blob (after_read: delete) or leaves it (keep). A crash between the
//     commit and the delete leaves a blob the state already names: it is
//     not read twice.
//   - https: F&O's HTTPS endpoint posts each event to a route on
//     plantgate's own listener (/api/v1/events/<path>), authenticated with
//     a bearer token compared in constant time; the answer is 2xx only
//     after the event is committed to the queue, so F&O sends it again
//     otherwise.
//
// Events that do not decode are dead-lettered with their bytes by the
// router, like any source's messages.
package foevents

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/inputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Type is the source type name.
const Type = "fo.events"

// Config is the source's settings: at least one endpoint.
type Config struct {
	// Blob reads events from F&O's Azure Blob Storage endpoint.
	Blob *BlobEndpoint `yaml:"blob"`
	// HTTPS receives events from F&O's HTTPS endpoint.
	HTTPS *HTTPSEndpoint `yaml:"https"`
	// Poll reads production orders through OData instead of events.
	Poll *PollEndpoint `yaml:"odata_poll"`
}

// BlobEndpoint is the storage account and container F&O writes events to.
type BlobEndpoint struct {
	// URL is the account's blob service URL
	// (https://ACCOUNT.blob.core.windows.net, or Azurite's
	// http://127.0.0.1:10000/devstoreaccount1).
	URL string `yaml:"url" required:"true"`
	// Account and Key authenticate with the account's shared key.
	Account string         `yaml:"account"`
	Key     logging.Secret `yaml:"key"`
	// SAS is a SAS token for the container (list, read and, for
	// after_read delete, delete permissions), instead of Account and Key.
	SAS logging.Secret `yaml:"sas"`
	// Container holds the event blobs.
	Container string `yaml:"container" required:"true"`
	// Prefix limits the blobs read to names starting with it.
	Prefix string `yaml:"prefix"`
	// AfterRead is delete (default: delete each blob once its events are
	// queued) or keep (leave it; its name stays in the queue state until
	// the blob is gone).
	AfterRead string `yaml:"after_read" default:"delete" enum:"delete,keep"`
	// PollInterval is the wait between listings.
	PollInterval time.Duration `yaml:"poll_interval" default:"5s" min:"100ms"`
	// MaxPerPoll bounds the blobs read per listing (one commit).
	MaxPerPoll int `yaml:"max_per_poll" default:"200" min:"1"`
	// CAFile holds PEM certificates that sign the storage endpoint's
	// certificate (a private endpoint, the fo-emulator); empty: the system
	// roots.
	CAFile string `yaml:"ca_file" file:"ca"`
}

// HTTPSEndpoint is the receiving route on plantgate's listener.
type HTTPSEndpoint struct {
	// Path is the route below /api/v1/events/ (default: the source's name).
	Path string `yaml:"path"`
	// Token is what F&O sends as "Authorization: Bearer <token>" (or, with
	// another Header, as the header's value).
	Token logging.Secret `yaml:"token" required:"true"`
	// Header carries the token (default Authorization, as a bearer token).
	Header string `yaml:"header" default:"Authorization"`
}

// Validate checks what the tags cannot.
func (c *Config) Validate() error {
	if c.Blob == nil && c.HTTPS == nil && c.Poll == nil {
		return errors.New("fo.events needs an endpoint: blob, https, odata_poll, or several")
	}
	if b := c.Blob; b != nil {
		if !strings.HasPrefix(b.URL, "https://") && !strings.HasPrefix(b.URL, "http://") {
			return fmt.Errorf("blob.url %q must be an http(s) URL of the storage account", b.URL)
		}
		if b.SAS.IsZero() && (b.Account == "" || b.Key.IsZero()) {
			return errors.New("blob needs account and key, or sas")
		}
	}
	if h := c.HTTPS; h != nil && strings.ContainsAny(h.Path, " ?#{}") {
		return fmt.Errorf("https.path %q: use letters, digits, '-', '_', '.' and '/'", h.Path)
	}
	return nil
}

func init() {
	inputs.Add(pipeline.SourceFactory{
		Type:      Type,
		NewConfig: func() any { return &Config{} },
		New: func(cfg any, env pipeline.Env) (pipeline.Source, error) {
			return New(cfg.(*Config), env)
		},
		// F&O sends an HTTPS event again when it saw no 2xx (the answer
		// may be lost after the commit); blobs are read once (state).
		Redelivers: func(cfg any) bool { return cfg.(*Config).HTTPS != nil },
	})
}

// Source is the fo.events source.
type Source struct {
	cfg   Config
	name  string
	log   zerolog.Logger
	state pipeline.StateStore
	now   func() time.Time
	blob  *blobStore
	m     *metrics

	emMu sync.Mutex
	em   pipeline.Emitter

	blobStat, httpStat, pollStat endpointStatus
	fo                           *d365.Env
}

// endpointStatus is one endpoint's counters for status.
type endpointStatus struct {
	read, errors, bad atomic.Int64
	mu                sync.Mutex
	lastErr           string
	lastErrAt         time.Time
	lastAt            time.Time
	lag               time.Duration
	backlog           int
}

func (s *endpointStatus) fail(err error, now time.Time) {
	s.errors.Add(1)
	s.mu.Lock()
	s.lastErr, s.lastErrAt = logging.RedactText(err.Error()), now
	s.mu.Unlock()
}

func (s *endpointStatus) report(name string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := map[string]any{"endpoint": name, "events_read": s.read.Load(), "errors": s.errors.Load(), "lag_seconds": s.lag.Seconds()}
	if s.lastErr != "" {
		st["last_error"], st["last_error_at"] = s.lastErr, s.lastErrAt
	}
	if !s.lastAt.IsZero() {
		st["last_event_at"] = s.lastAt
	}
	if name == "blob" {
		st["backlog"] = s.backlog
	}
	return st
}

// New builds the source; it does no network I/O.
func New(cfg *Config, env pipeline.Env) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: *cfg, name: env.Name, log: env.Log, state: env.State, now: env.Now, m: newMetrics(env.Metrics, env.Name)}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.Poll != nil {
		fe, err := d365.Resolve(env, cfg.Poll.Env)
		if err != nil {
			return nil, fmt.Errorf("odata_poll: %w", err)
		}
		s.fo = fe
	}
	if b := cfg.Blob; b != nil {
		hc := &http.Client{Timeout: 60 * time.Second}
		if b.CAFile != "" {
			pem, err := os.ReadFile(b.CAFile)
			if err != nil {
				return nil, fmt.Errorf("blob.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("blob.ca_file %s holds no PEM certificate", b.CAFile)
			}
			hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		}
		var err error
		s.blob, err = newBlobStore(b.URL, b.Container, b.SAS.Reveal(), b.Account, b.Key.Reveal(), hc)
		if err != nil {
			return nil, fmt.Errorf("blob: %s", logging.RedactText(err.Error()))
		}
	}
	return s, nil
}

// Run reads the blob endpoint until ctx ends; the HTTPS route works while
// Run runs.
func (s *Source) Run(ctx context.Context, em pipeline.Emitter) error {
	s.emMu.Lock()
	s.em = em
	s.emMu.Unlock()
	defer func() {
		s.emMu.Lock()
		s.em = nil
		s.emMu.Unlock()
	}()
	se, ok := em.(pipeline.StateEmitter)
	if !ok && (s.cfg.Blob != nil || s.cfg.Poll != nil) {
		return errors.New("the blob and odata_poll endpoints need an emitter that commits state with the records")
	}
	if s.cfg.Poll != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			s.runPoll(ctx, se, s.fo)
		}()
	}
	if s.cfg.Blob == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.pollBlobs(ctx, se); err != nil && ctx.Err() == nil {
			s.blobStat.fail(err, s.now())
			s.m.errors.WithLabelValues(s.name, "blob").Inc()
			s.log.Warn().Str(logging.FieldReason, logging.RedactText(err.Error())).Msg("business events: blob endpoint")
		}
		t.Reset(s.cfg.Blob.PollInterval)
	}
}

const consumedPrefix = "b/"

type blobRef struct {
	name string
	mod  time.Time
}

// pollBlobs lists the container once, reads and commits new blobs, and
// deletes (after_read: delete) those committed.
func (s *Source) pollBlobs(ctx context.Context, se pipeline.StateEmitter) error {
	b := s.cfg.Blob
	var all []blobRef
	all, err := s.blob.list(ctx, b.Prefix, 0)
	if err != nil {
		return fmt.Errorf("list container %s: %w", b.Container, err)
	}
	listed := map[string]bool{}
	var todo, done []blobRef
	for _, r := range all {
		listed[r.name] = true
		_, seen, err := s.state.Get(consumedPrefix + r.name)
		if err != nil {
			return err
		}
		if seen {
			done = append(done, r)
		} else {
			todo = append(todo, r)
		}
	}
	now := s.now()
	s.blobStat.mu.Lock()
	s.blobStat.backlog = len(todo)
	s.blobStat.mu.Unlock()
	if len(todo) > 0 && !todo[0].mod.IsZero() {
		oldest := todo[0].mod
		for _, r := range todo {
			if r.mod.Before(oldest) {
				oldest = r.mod
			}
		}
		s.m.lag.WithLabelValues(s.name, "blob").Set(now.Sub(oldest).Seconds())
	} else {
		s.m.lag.WithLabelValues(s.name, "blob").Set(0)
	}
	if len(todo) > b.MaxPerPoll {
		todo = todo[:b.MaxPerPoll]
	}
	// Read the new blobs, then commit their events and names at once.
	var msgs []pipeline.Message
	var states []pipeline.StateWrite
	var committed []blobRef
	for _, r := range todo {
		data, err := s.download(ctx, r.name)
		if errors.Is(err, errBlobNotFound) {
			continue // gone since the listing
		}
		if err != nil {
			return err
		}
		ms := s.messages(data, map[string]any{"endpoint": "blob", "container": b.Container, "blob": r.name}, now)
		msgs = append(msgs, ms...)
		states = append(states, pipeline.StateWrite{Name: consumedPrefix + r.name, Value: []byte(now.UTC().Format(time.RFC3339Nano))})
		committed = append(committed, r)
	}
	if len(states) > 0 {
		if err := se.EmitWithState(ctx, states, msgs...); err != nil {
			return fmt.Errorf("queue %d events of %d blobs: %w", len(msgs), len(states), err)
		}
		s.counted(&s.blobStat, "blob", msgs, now)
		done = append(done, committed...)
	}
	// Blobs already queued: delete them (delete) and forget their names
	// once they are gone; names of blobs no longer listed are forgotten.
	var forget []string
	if b.AfterRead == "delete" {
		for _, r := range done {
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := s.blob.remove(dctx, r.name)
			cancel()
			if err != nil && !errors.Is(err, errBlobNotFound) {
				return fmt.Errorf("delete blob %s: %w", r.name, err)
			}
			forget = append(forget, r.name)
		}
	}
	if names, ok := s.state.(interface {
		List() (map[string][]byte, error)
	}); ok {
		if st, err := names.List(); err == nil {
			for n := range st {
				if name, ok := strings.CutPrefix(n, consumedPrefix); ok && !listed[name] {
					forget = append(forget, name)
				}
			}
		}
	}
	for _, n := range forget {
		if err := s.state.Delete(ctx, consumedPrefix+n); err != nil {
			return err
		}
	}
	return nil
}

func (s *Source) download(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	data, err := s.blob.read(ctx, name, d365.MaxEventBytes*16+1)
	if err != nil {
		if errors.Is(err, errBlobNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("read blob %s: %w", name, err)
	}
	return data, nil
}

// messages turns one blob or request body into messages: one per event,
// or one undecodable message carrying the bytes and the reason.
func (s *Source) messages(data []byte, meta map[string]any, now time.Time) []pipeline.Message {
	meta["received_at"] = now.UTC()
	evs, err := d365.DecodeEvents(data)
	if err != nil {
		s.log.Warn().Str(logging.FieldReason, err.Error()).Interface("where", meta).Msg("business event does not decode; dead-lettered with its bytes")
		return []pipeline.Message{{Raw: data, DecodeErr: err, Meta: meta, Time: now.UTC()}}
	}
	out := make([]pipeline.Message, len(evs))
	for i, ev := range evs {
		m := make(map[string]any, len(meta)+1)
		for k, v := range meta {
			m[k] = v
		}
		if id, ok := ev.Payload["BusinessEventId"].(string); ok {
			m["business_event_id"] = id
		}
		out[i] = pipeline.Message{Raw: ev.Raw, Payload: ev.Payload, Meta: m, Time: now.UTC()}
	}
	return out
}

// counted updates counters and lag after messages were committed.
func (s *Source) counted(st *endpointStatus, endpoint string, msgs []pipeline.Message, now time.Time) {
	var lag time.Duration
	n := 0
	for _, m := range msgs {
		if m.DecodeErr != nil {
			st.bad.Add(1)
			s.m.bad.WithLabelValues(s.name, endpoint).Inc()
			continue
		}
		n++
		if p, ok := m.Payload.(map[string]any); ok {
			if t, ok := d365.ParseEventTime(p["EventTime"]); ok && now.Sub(t) > lag {
				lag = now.Sub(t)
			}
		}
	}
	st.read.Add(int64(n))
	s.m.read.WithLabelValues(s.name, endpoint).Add(float64(n))
	st.mu.Lock()
	st.lastAt, st.lag = now.UTC(), lag
	st.mu.Unlock()
	if endpoint == "https" {
		s.m.lag.WithLabelValues(s.name, endpoint).Set(lag.Seconds())
	}
}

// Routes implements pipeline.HTTPReceiver.
func (s *Source) Routes() map[string]http.Handler {
	if s.cfg.HTTPS == nil {
		return nil
	}
	p := strings.Trim(s.cfg.HTTPS.Path, "/")
	if p == "" {
		p = s.name
	}
	return map[string]http.Handler{p: http.HandlerFunc(s.receive)}
}

// receive is the HTTPS endpoint: POST one event (or an array of events).
func (s *Source) receive(w http.ResponseWriter, r *http.Request) {
	h := s.cfg.HTTPS
	got := r.Header.Get(h.Header)
	if strings.EqualFold(h.Header, "Authorization") {
		got = strings.TrimSpace(strings.TrimPrefix(got, "Bearer "))
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(h.Token.Reveal())) != 1 {
		s.httpStat.fail(errors.New("a request without the endpoint's token was refused"), s.now())
		s.m.errors.WithLabelValues(s.name, "https").Inc()
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("business event refused: no or wrong token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="plantgate events"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "POST an event", http.StatusMethodNotAllowed)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, d365.MaxEventBytes*16))
	if err != nil {
		http.Error(w, "the body is too large", http.StatusRequestEntityTooLarge)
		return
	}
	s.emMu.Lock()
	em := s.em
	s.emMu.Unlock()
	if em == nil {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the source is not running", http.StatusServiceUnavailable)
		return
	}
	now := s.now()
	msgs := s.messages(data, map[string]any{"endpoint": "https", "remote": r.RemoteAddr}, now)
	if err := em.Emit(r.Context(), msgs...); err != nil {
		s.httpStat.fail(err, now)
		s.m.errors.WithLabelValues(s.name, "https").Inc()
		s.log.Warn().Str(logging.FieldReason, err.Error()).Msg("business event not queued; F&O sends it again")
		w.Header().Set("Retry-After", "5")
		http.Error(w, "not queued, send again", http.StatusServiceUnavailable)
		return
	}
	s.counted(&s.httpStat, "https", msgs, now)
	w.WriteHeader(http.StatusOK)
}

// Status implements pipeline.StatusReporter.
func (s *Source) Status() map[string]any {
	var eps []map[string]any
	if s.cfg.Blob != nil {
		st := s.blobStat.report("blob")
		st["container"], st["after_read"] = s.cfg.Blob.Container, s.cfg.Blob.AfterRead
		eps = append(eps, st)
	}
	if s.cfg.HTTPS != nil {
		st := s.httpStat.report("https")
		for p := range s.Routes() {
			st["path"] = "/api/v1/events/" + p
		}
		eps = append(eps, st)
	}
	if s.cfg.Poll != nil {
		st := s.pollStat.report("odata_poll")
		st["env"], st["interval"] = s.cfg.Poll.Env, s.cfg.Poll.Interval.String()
		eps = append(eps, st)
	}
	return map[string]any{"endpoints": eps}
}

// Probe checks that the container can be listed.
func (s *Source) Probe(ctx context.Context) error {
	if s.blob == nil {
		return nil
	}
	if _, err := s.blob.list(ctx, "", 1); err != nil {
		return fmt.Errorf("list container %s: %w", s.cfg.Blob.Container, err)
	}
	return nil
}

type metrics struct {
	read, bad, errors *prometheus.CounterVec
	lag               *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, source string) *metrics {
	l := []string{"source", "endpoint"}
	m := &metrics{
		read:   pipeline.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_fo_events_read_total", Help: "Business events read and queued, per fo.events source and endpoint."}, l)),
		bad:    pipeline.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_fo_events_undecodable_total", Help: "Blobs or requests that held no decodable business event; dead-lettered with their bytes."}, l)),
		errors: pipeline.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_fo_events_errors_total", Help: "Failed listings, reads, deletes, commits and refused requests of an event endpoint."}, l)),
		lag:    pipeline.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_fo_events_lag_seconds", Help: "blob: age of the oldest blob not yet read; https: age of the last event when it was received."}, l)),
	}
	for _, ep := range []string{"blob", "https", "odata_poll"} {
		m.read.WithLabelValues(source, ep)
		m.bad.WithLabelValues(source, ep)
		m.errors.WithLabelValues(source, ep)
		m.lag.WithLabelValues(source, ep)
	}
	return m
}

var (
	_ pipeline.Source         = (*Source)(nil)
	_ pipeline.HTTPReceiver   = (*Source)(nil)
	_ pipeline.StatusReporter = (*Source)(nil)
	_ pipeline.Prober         = (*Source)(nil)
)
