package app

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/plantgate/plantgate/internal/buildinfo"
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
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("http server")
		}
	}()
	a.log.Info().Str(logging.FieldAddr, ln.Addr().String()).Msg("http listening")
	return srv, nil
}

// Handler serves health, metrics, status and the admin API.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", metricsHandler(a.reg))
	mux.HandleFunc("GET /api/v1/status", a.statusJSON)
	mux.HandleFunc("GET /{$}", a.statusPage)
	mux.HandleFunc("GET /api/v1/admin/dead", a.admin(a.adminDead))
	mux.HandleFunc("POST /api/v1/admin/replay", a.admin(a.adminReplay))
	mux.HandleFunc("POST /api/v1/admin/purge", a.admin(a.adminPurge))
	mux.HandleFunc("POST /api/v1/admin/dmf/close", a.admin(a.adminCloseBatch))
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

// readyz reports each component; 503 while any is down or during start/stop.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	comps := a.componentList()
	a.mu.Lock()
	ready := a.ready
	a.mu.Unlock()
	for _, c := range comps {
		if !c.Up {
			ready = false
		}
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": ready, "components": comps})
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
	Problems []string              `json:"problems,omitempty"`
}

// BatchView is a sink's batch in the status output.
type BatchView struct {
	Sink string `json:"sink"`
	pipeline.BatchInfo
	AgeSeconds int64 `json:"age_seconds"`
}

// ComponentStatus is a source or sink in the status output.
type ComponentStatus struct {
	Name      string         `json:"name"`
	Type      string         `json:"type"`
	Up        bool           `json:"up"`
	Since     time.Time      `json:"since"`
	LastError string         `json:"last_error,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
}

// Status collects the gateway's status.
func (a *App) Status() Status {
	st := Status{Gateway: a.cfg.Gateway.ID, Version: buildinfo.Version, StartedAt: a.started.UTC(), Uptime: time.Since(a.started).Round(time.Second).String()}
	a.mu.Lock()
	st.Ready = a.ready
	a.mu.Unlock()
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
		if sr, ok := c.plugin.(pipeline.StatusReporter); ok {
			cs.Details = sr.Status()
		}
		if br, ok := c.plugin.(pipeline.BatchReporter); ok && c.Kind == "sink" {
			for _, b := range br.Batches() {
				st.Batches = append(st.Batches, BatchView{Sink: c.Name, BatchInfo: b, AgeSeconds: int64(time.Since(b.ClosedAt).Seconds())})
				if b.Stalled {
					st.Problems = append(st.Problems, fmt.Sprintf("sink %s: the import %s of batch %s is still running past import_deadline (F&O says %s); it is held, never imported again: check it in F&O's Data management workspace",
						c.Name, b.ExecutionID, b.ID, b.Status))
				}
			}
		}
		if !c.Up {
			st.Problems = append(st.Problems, fmt.Sprintf("%s %s is down: %s", c.Kind, c.Name, c.LastError))
		}
		if c.Kind == "source" {
			st.Sources = append(st.Sources, cs)
		} else {
			st.Sinks = append(st.Sinks, cs)
		}
	}
	if a.rates != nil {
		st.Flows = flowStatuses(a.cfg, a.rates.rates(), a.rateWindow)
		st.Problems = append(st.Problems, flowProblems(st.Flows)...)
	}
	if a.router != nil {
		st.Overflow = a.router.Overflows()
		for _, o := range st.Overflow {
			if o.Active {
				st.Problems = append(st.Problems, fmt.Sprintf("flow %s is under pressure since %s: its new records go to DMF (sink %s); %d so far",
					o.Flow, o.Since.UTC().Format("15:04:05Z"), o.Sink, o.Moved))
			}
		}
	}
	inDoubt, foProblems := a.inDoubt()
	st.InDoubt = inDoubt
	st.Problems = append(st.Problems, foProblems...)
	if qs.Full {
		st.Problems = append(st.Problems, "queue is full: sources are not acknowledging upstream")
	}
	for _, s := range qs.Streams {
		if s.Dead > 0 {
			noun := "dead letters"
			if s.Dead == 1 {
				noun = "dead letter"
			}
			st.Problems = append(st.Problems, fmt.Sprintf("stream %s has %d %s (plantgate queue dead --stream %s)", s.Stream, s.Dead, noun, s.Stream))
		}
	}
	return st
}

func (a *App) statusJSON(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.Status())
}

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": func(n int64) string {
		const unit = 1024
		if n < unit {
			return strconv.FormatInt(n, 10) + " B"
		}
		div, exp := int64(unit), 0
		for m := n / unit; m >= unit; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
	},
	"age": func(d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return d.Round(time.Second).String()
	},
	"rate": rateWords,
	"secs": func(s float64) string {
		d := time.Duration(s * float64(time.Second))
		if d >= time.Second {
			return d.Round(time.Second).String()
		}
		return d.Round(time.Millisecond).String()
	},
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Format("2006-01-02 15:04:05Z")
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>plantgate {{.Gateway}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
.sub{color:#5b6475;font-size:.9rem}
table{border-collapse:collapse;background:#fff;min-width:60%;box-shadow:0 1px 2px #0001}
th,td{padding:.35rem .7rem;border-bottom:1px solid #e4e7ec;text-align:left;font-size:.9rem}
th{background:#eef1f5;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#127a3a;font-weight:600} .bad{color:#b42318;font-weight:600}
.problems{background:#fef3f2;border:1px solid #fecdca;padding:.6rem 1rem;border-radius:6px;max-width:60rem}
</style></head><body>
<h1>plantgate · {{.Gateway}}</h1>
<div class="sub">version {{.Version}} · up {{.Uptime}} · {{if .Ready}}<span class="ok">ready</span>{{else}}<span class="bad">not ready</span>{{end}}</div>
{{if .Problems}}<h2>Needs attention</h2><div class="problems"><ul>{{range .Problems}}<li>{{.}}</li>{{end}}</ul></div>{{end}}
<h2>Queue</h2>
<div class="sub">{{.Queue.Records}} pending · {{bytes .Queue.Bytes}}{{if .Queue.MaxBytes}} of {{bytes .Queue.MaxBytes}}{{end}} · {{.Queue.Dead}} dead letters · file {{bytes .Queue.FileBytes}}{{if .Queue.Full}} · <span class="bad">FULL</span>{{end}}</div>
<table><tr><th>stream</th><th>pending</th><th>bytes</th><th>in flight</th><th>oldest waiting</th><th>dead</th></tr>
{{range .Queue.Streams}}<tr><td>{{.Stream}}</td><td class="n">{{.Records}}</td><td class="n">{{bytes .Bytes}}</td><td class="n">{{.Leased}}</td><td class="n">{{age .OldestAge}}</td><td class="n">{{if .Dead}}<span class="bad">{{.Dead}}</span>{{else}}0{{end}}</td></tr>{{end}}
</table>
<h2>Delivery</h2>
<table><tr><th>stream</th><th>state</th><th>delivered</th><th>retries</th><th>dead-lettered</th><th>last success</th><th>last error</th></tr>
{{range .Streams}}<tr><td>{{.Stream}}</td><td>{{.State}}</td><td class="n">{{.Delivered}}</td><td class="n">{{.Retries}}</td><td class="n">{{.DeadLetters}}</td><td>{{ts .LastOKAt}}</td><td>{{.LastError}}</td></tr>{{end}}
</table>
{{if .Flows}}<h2>Flows</h2>
<table><tr><th>flow</th><th>pattern</th><th>declared</th><th>urgent</th><th>observed</th><th>drift</th></tr>
{{range .Flows}}<tr><td>{{.Name}}</td><td>{{.Pattern}}</td><td class="n">{{if .Declared}}{{.Declared}}{{else}}-{{end}}</td><td>{{if .Urgent}}yes{{end}}</td><td class="n">{{rate .ObservedRate}}{{if .ObservedSeconds}} over {{secs .ObservedSeconds}}{{end}}</td><td>{{if .Drift}}<span class="bad">{{.Drift}}</span>{{end}}</td></tr>{{end}}
</table>{{end}}
{{if .Batches}}<h2>Batches</h2>
<table><tr><th>sink</th><th>stream</th><th>batch</th><th>step</th><th>lines</th><th>closed by</th><th>age</th><th>execution</th><th>F&amp;O status</th><th>last error</th></tr>
{{range .Batches}}<tr><td>{{.Sink}}</td><td>{{.Stream}}</td><td>{{.ID}}</td><td>{{.Step}}{{if .Stalled}} <span class="bad">stalled</span>{{end}}</td><td class="n">{{.Lines}}</td><td>{{.Reason}}</td><td class="n">{{.AgeSeconds}} s</td><td>{{.ExecutionID}}</td><td>{{.Status}}</td><td>{{.LastError}}</td></tr>{{end}}
</table>{{end}}
<h2>Sources</h2>
<table><tr><th>name</th><th>type</th><th>state</th><th>since</th><th>last error</th></tr>
{{range .Sources}}<tr><td>{{.Name}}</td><td>{{.Type}}</td><td>{{if .Up}}<span class="ok">up</span>{{else}}<span class="bad">down</span>{{end}}</td><td>{{ts .Since}}</td><td>{{.LastError}}</td></tr>{{end}}
</table>
<h2>Sinks</h2>
<table><tr><th>name</th><th>type</th><th>state</th><th>since</th><th>last error</th></tr>
{{range .Sinks}}<tr><td>{{.Name}}</td><td>{{.Type}}</td><td>{{if .Up}}<span class="ok">up</span>{{else}}<span class="bad">down</span>{{end}}</td><td>{{ts .Since}}</td><td>{{.LastError}}</td></tr>{{end}}
</table>
<p class="sub">JSON: <a href="/api/v1/status">/api/v1/status</a> · <a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p>
</body></html>`))

func (a *App) statusPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusTmpl.Execute(w, a.Status()); err != nil {
		a.log.Warn().Err(err).Msg("render status page")
	}
}

// admin guards a handler with the admin bearer token. Without a configured
// token the admin API is off.
func (a *App) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := a.cfg.HTTP.AdminToken.Reveal()
		if tok == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "admin API disabled: set http.admin_token"})
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="plantgate admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong admin token"})
			return
		}
		h(w, r)
	}
}

func (a *App) adminDead(w http.ResponseWriter, r *http.Request) {
	stream := r.URL.Query().Get("stream")
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	dead, err := a.store.ListDead(stream, after, limit)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	views := make([]DeadLetterView, len(dead))
	for i, d := range dead {
		views[i] = ViewDeadLetter(stream, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"stream": stream, "dead_letters": views})
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

type adminRequest struct {
	Stream string   `json:"stream"`
	Seqs   []uint64 `json:"seqs"`
	// What, for purge: "dead" (default) or "items".
	What string `json:"what"`
}

func decodeAdmin(w http.ResponseWriter, r *http.Request) (adminRequest, bool) {
	var req adminRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Stream == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be JSON {\"stream\": ..., \"seqs\": [...]}"})
		return req, false
	}
	return req, true
}

func (a *App) adminReplay(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeAdmin(w, r)
	if !ok {
		return
	}
	n, err := a.store.Replay(r.Context(), req.Stream, req.Seqs)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	a.log.Info().Str(logging.FieldStream, req.Stream).Int(logging.FieldCount, n).Msg("dead letters replayed by operator")
	writeJSON(w, http.StatusOK, map[string]any{"replayed": n})
}

func (a *App) adminPurge(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeAdmin(w, r)
	if !ok {
		return
	}
	what := queue.PurgeDead
	if req.What == "items" {
		what = queue.PurgeItems
	} else if req.What != "" && req.What != "dead" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "what must be dead or items"})
		return
	}
	n, err := a.store.Purge(r.Context(), req.Stream, what, req.Seqs)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	a.log.Warn().Str(logging.FieldStream, req.Stream).Int(logging.FieldCount, n).Str("what", req.What).Msg("records purged by operator")
	writeJSON(w, http.StatusOK, map[string]any{"purged": n})
}

// batchCloser is implemented by sinks that close batches (fo.dmf).
type batchCloser interface{ CloseNow() }

// adminCloseBatch closes the open batch of a batching sink now:
// {"sink": "dmf-picking"}.
func (a *App) adminCloseBatch(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Sink string `json:"sink"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Sink == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be JSON {\"sink\": \"<a fo.dmf sink>\"}"})
		return
	}
	bc, ok := a.sinks[req.Sink].(batchCloser)
	if !ok {
		var names []string
		for n, s := range a.sinks {
			if _, ok := s.(batchCloser); ok {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("sink %q does not batch; batching sinks: %s", req.Sink, strings.Join(names, ", "))})
		return
	}
	bc.CloseNow()
	a.log.Info().Str(logging.FieldSink, req.Sink).Msg("batch closed by operator")
	writeJSON(w, http.StatusAccepted, map[string]any{"closing": req.Sink})
}
