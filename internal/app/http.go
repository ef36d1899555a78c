package app

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/plantgate/plantgate/internal/buildinfo"
	"github.com/plantgate/plantgate/internal/certexpiry"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func (a *App) startHTTP() (*http.Server, error) {
	if a.cfg.HTTP.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", a.cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a.cfg.HTTP.Listen, err)
	}
	a.mu.Lock()
	a.httpAddr = ln.Addr()
	a.mu.Unlock()
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second}
	if t := a.cfg.HTTP.TLS; t != nil {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("http.tls: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		_ = certexpiry.For(a.reg).SetFile("http", "listener", certexpiry.UseServer, t.CertFile) // read just above
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	// The CLI finds a running gateway's API here (the port may be 0 in
	// the config).
	scheme := "http"
	if a.cfg.HTTP.TLS != nil {
		scheme = "https"
	}
	//nolint:gosec // an address, not a secret; the CLI reads it as the service's group
	if err := os.WriteFile(AddrFile(a.cfg), []byte(scheme+"://"+ln.Addr().String()+"\n"), 0o640); err != nil {
		a.log.Warn().Err(err).Msg("write the API address file; the CLI will not find the running gateway")
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("http server")
		}
	}()
	a.log.Info().Str(logging.FieldAddr, ln.Addr().String()).Msg("http listening")
	return srv, nil
}

// AddrFile is where a running gateway writes the URL of its API.
func AddrFile(cfg *config.Config) string { return filepath.Join(cfg.Gateway.DataDir, "api.url") }

// Handler serves health, metrics, status and the admin API.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", a.reader(metricsHandler(a.reg)))
	mux.HandleFunc("GET /api/v1/status", a.reader(http.HandlerFunc(a.statusJSON)))
	mux.HandleFunc("GET /{$}", a.reader(http.HandlerFunc(a.statusPage)))
	mux.HandleFunc("GET /api/v1/admin/dead", a.admin(a.adminDead))
	mux.HandleFunc("GET /api/v1/admin/dead/{stream}/{seq}", a.admin(a.adminDeadOne))
	mux.HandleFunc("POST /api/v1/admin/dead/replay", a.admin(a.adminReplay))
	mux.HandleFunc("POST /api/v1/admin/dead/drop", a.admin(a.adminDropDead))
	mux.HandleFunc("POST /api/v1/admin/replay", a.admin(a.adminReplay))
	mux.HandleFunc("POST /api/v1/admin/purge", a.admin(a.adminPurge))
	mux.HandleFunc("GET /api/v1/admin/records", a.admin(a.adminRecords))
	mux.HandleFunc("GET /api/v1/admin/in-doubt", a.admin(a.adminInDoubt))
	mux.HandleFunc("POST /api/v1/admin/in-doubt/release", a.admin(a.adminRelease))
	mux.HandleFunc("POST /api/v1/admin/in-doubt/drop", a.admin(a.adminDropHeld))
	mux.HandleFunc("POST /api/v1/admin/dmf/close", a.admin(a.adminCloseBatch))
	mux.HandleFunc("POST /api/v1/admin/flows/{flow}/pause", a.admin(a.adminPause))
	mux.HandleFunc("POST /api/v1/admin/flows/{flow}/resume", a.admin(a.adminPause))
	mux.HandleFunc("GET /api/v1/admin/audit", a.admin(a.adminAudit))
	a.mountReceivers(mux) // sources receiving on this listener (receivers.go)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// healthz is liveness: the queue file is open and readable. It is
// unauthenticated and may be polled often, so it only reads (one read
// transaction on the memory-mapped file, no disk write, no fsync); a
// closed or unusable queue answers 503.
func (a *App) healthz(w http.ResponseWriter, _ *http.Request) {
	if a.store == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "queue not open"})
		return
	}
	// Memory only: an unauthenticated probe must not cost a disk write.
	if err := a.store.Healthy(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "queue not usable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// readyz answers from the health model (health.go): 200 while ready
// (also when degraded), 503 otherwise, with the reasons.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	h := a.Health()
	code := http.StatusOK
	if !h.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (a *App) componentList() []componentState {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]componentState, 0, len(a.components))
	for _, c := range a.components {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+out[i].Name < out[j].Kind+out[j].Name })
	return out
}

// Status is the body of /api/v1/status. It never holds secrets.
type Status struct {
	Gateway   string              `json:"gateway"`
	Version   string              `json:"version"`
	StartedAt time.Time           `json:"started_at"`
	Uptime    string              `json:"uptime"`
	Ready     bool                `json:"ready"`
	Queue     queue.Stats         `json:"queue"`
	Streams   []flow.RunnerStatus `json:"streams"`
	Sources   []ComponentStatus   `json:"sources"`
	Sinks     []ComponentStatus   `json:"sinks"`
	// Flows are each flow's declared rate against its observed one.
	Flows   []FlowStatus  `json:"flows"`
	InDoubt []InDoubtView `json:"in_doubt,omitempty"`
	// Batches are the batches sinks closed and have not settled (DMF).
	Batches []BatchView `json:"batches,omitempty"`
	// Overflow is the state of the flows that may switch to DMF.
	Overflow []flow.OverflowStatus `json:"overflow,omitempty"`
	// Health is the one health model (health.go); Problems are its
	// reasons as sentences, blocking ones first.
	Health   Health   `json:"health"`
	Problems []string `json:"problems,omitempty"`
	// Environments are the F&O environments: token, breaker, limiter.
	Environments []EnvView `json:"environments,omitempty"`
	// FlowPaths are each flow from its source to its sinks with health,
	// rates and queue depth: the first table of the status page.
	FlowPaths []FlowPath `json:"flow_paths,omitempty"`
	// Now is when the status was taken.
	Now time.Time `json:"now"`
}

// BatchView is a sink's batch in the status output.
type BatchView struct {
	Sink string `json:"sink"`
	pipeline.BatchInfo
	AgeSeconds int64 `json:"age_seconds"`
}

// ComponentStatus is a source or sink in the status output.
type ComponentStatus struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Up        bool      `json:"up"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	// State is up, degraded or down (health.go).
	State   string         `json:"state"`
	Details map[string]any `json:"details,omitempty"`
	// Counters are a source's message counts (sources only).
	Counters *SourceCounters `json:"counters,omitempty"`
}

// Status collects the gateway's status. Its Ready, Health and Problems
// come from Health, as /readyz's answer does.
func (a *App) Status() Status {
	flows := a.flowStatuses() // one reading for Flows and for the problems
	h := a.health(flows)
	st := Status{Gateway: a.cfg.Gateway.ID, Version: buildinfo.Version, StartedAt: a.started.UTC(), Uptime: time.Since(a.started).Round(time.Second).String(),
		Ready: h.Ready, Health: h, Now: time.Now()}
	for _, r := range h.Reasons {
		st.Problems = append(st.Problems, r.Why)
	}
	qs, err := a.store.Stats()
	if err != nil {
		st.Problems = append(st.Problems, "queue stats: "+err.Error())
	}
	st.Queue = qs
	for _, r := range a.runners {
		st.Streams = append(st.Streams, r.Status())
	}
	for _, c := range a.componentList() {
		cs := ComponentStatus{Name: c.Name, Type: c.Type, Up: c.Up, Since: c.Since, LastError: c.LastError}
		for _, hc := range h.Components {
			if hc.Kind == c.Kind && hc.Name == c.Name {
				cs.Up, cs.State = hc.Up, hc.State
				if hc.Why != "" {
					cs.LastError = hc.Why
				}
			}
		}
		if sr, ok := c.plugin.(pipeline.StatusReporter); ok {
			cs.Details = sr.Status()
		}
		if br, ok := c.plugin.(pipeline.BatchReporter); ok && c.Kind == "sink" {
			for _, b := range br.Batches() {
				st.Batches = append(st.Batches, BatchView{Sink: c.Name, BatchInfo: b, AgeSeconds: int64(time.Since(b.ClosedAt).Seconds())})
			}
		}
		if c.Kind == "source" {
			cs.Counters = a.sourceCounters(c.Name, cs.Details)
			st.Sources = append(st.Sources, cs)
		} else {
			st.Sinks = append(st.Sinks, cs)
		}
	}
	st.Flows = flows
	if a.router != nil {
		st.Overflow = a.router.Overflows()
	}
	st.InDoubt, _ = a.inDoubt()
	st.Environments = a.envViews()
	st.FlowPaths = a.flowPaths(st)
	return st
}

func (a *App) statusJSON(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.Status())
}

// DeadLetterView is a dead letter as the admin API and the CLI show it.
type DeadLetterView struct {
	Stream   string         `json:"stream"`
	Seq      uint64         `json:"seq"`
	OrigSeq  uint64         `json:"orig_seq,omitempty"`
	Reason   string         `json:"reason"`
	DeadAt   time.Time      `json:"dead_at"`
	Attempts int            `json:"attempts,omitempty"`
	Key      string         `json:"key,omitempty"`
	ID       string         `json:"id,omitempty"`
	Source   string         `json:"source,omitempty"`
	Fields   map[string]any `json:"fields,omitempty"`
	Meta     map[string]any `json:"meta,omitempty"`
	// Raw is the original bytes as text when they are UTF-8; otherwise
	// RawBase64 holds them.
	Raw       string `json:"raw,omitempty"`
	RawBase64 []byte `json:"raw_base64,omitempty"`
}

// ViewDeadLetter converts a dead letter for display.
func ViewDeadLetter(stream string, d queue.DeadLetterRecord) DeadLetterView {
	v := DeadLetterView{Stream: stream, Seq: d.Seq, OrigSeq: d.OrigSeq, Reason: d.Reason, DeadAt: d.DeadAt, Attempts: d.Attempts,
		Key: d.Record.Key, ID: d.Record.ID, Source: d.Record.Source, Fields: d.Record.Fields, Meta: d.Record.Meta}
	if utf8.Valid(d.Record.Raw) {
		v.Raw = string(d.Record.Raw)
	} else {
		v.RawBase64 = d.Record.Raw
	}
	return v
}
