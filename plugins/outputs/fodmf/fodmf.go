package fodmf

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/dmfpackage"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Type is the sink type name.
const Type = "fo.dmf"

func init() {
	outputs.Add(pipeline.SinkFactory{
		Type: Type,
		NewConfig: func() any {
			return &Config{SourceFormat: dmfpackage.FormatCSVUnicode, EntityField: "_entity", MaxPackageBytes: 256 << 20,
				PollInitial: 5 * time.Second, PollMax: time.Minute, ImportDeadline: 2 * time.Hour, NotFoundGrace: 5 * time.Minute,
				OnFailed: OnFailedDeadLetter, MaxAttempts: 3, Overwrite: true,
				Batch: Batch{MaxRecords: 50000, MaxBytes: 64 << 20, MaxAge: 15 * time.Minute}}
		},
		New: func(cfg any, env pipeline.Env) (pipeline.Sink, error) { return New(cfg.(*Config), env) },
		// An import under an executionId persisted before the call is never
		// repeated for a batch F&O accepted, and a batch is acked whole.
		Dedups: func(any) bool { return true },
		// Records of several entities go into one package: one stream.
		SharedStream: true,
		// A flow that maps its fields must map exactly the columns (the
		// line field aside) of the entity its records go to.
		CheckFlow: func(cfg any, f pipeline.FlowInfo) error {
			c := cfg.(*Config)
			ents := c.entities()
			if len(f.Fields) == 0 || len(ents) != 1 {
				return nil // the payload as it is, or the entity per record
			}
			e := ents[0]
			var missing, unknown []string
			for _, col := range e.Columns {
				if col != e.LineField && !contains(f.Fields, col) {
					missing = append(missing, col)
				}
			}
			for _, fl := range f.Fields {
				if fl != c.EntityField && !contains(e.Columns, fl) {
					unknown = append(unknown, fl)
				}
				if fl == e.LineField {
					unknown = append(unknown, fl+" (filled by plantgate: line_field)")
				}
			}
			if len(missing)+len(unknown) == 0 {
				return nil
			}
			msg := fmt.Sprintf("entity %q", e.Name)
			if len(missing) > 0 {
				msg += ": the flow maps no " + strings.Join(missing, ", ")
			}
			if len(unknown) > 0 {
				msg += ": not a column: " + strings.Join(unknown, ", ")
			}
			return fmt.Errorf("%s (the data file's columns: %s)", msg, strings.Join(e.Columns, ", "))
		},
	})
}

// Batch steps, in order. A batch's step is persisted before the work of
// the next step starts, so a restart resumes at the step it was in.
const (
	StepClosed    = "closed"    // the set of records is fixed
	StepPackaged  = "packaged"  // the package file is built and synced
	StepUploaded  = "uploaded"  // the package is in F&O's blob store
	StepImporting = "importing" // executionId chosen; ImportFromPackage requested
	StepPolling   = "polling"   // F&O accepted the import; its status is polled
	StepSettling  = "settling"  // F&O answered; failed lines dead-lettered, the rest to ack
)

// batch is the persisted state of a stream's batch in flight.
type batch struct {
	ID     string    `json:"id"`
	Stream string    `json:"stream"`
	From   uint64    `json:"from"`
	To     uint64    `json:"to"`
	Lines  int       `json:"lines"`
	Bytes  int64     `json:"bytes"`
	Reason string    `json:"reason"`
	Opened time.Time `json:"opened_at"`
	Closed time.Time `json:"closed_at"`
	Step   string    `json:"step"`
	// StepAt is when the batch entered Step.
	StepAt        time.Time `json:"step_at"`
	PackageFile   string    `json:"package_file,omitempty"`
	PackageBytes  int64     `json:"package_bytes,omitempty"`
	PackageSHA256 string    `json:"package_sha256,omitempty"`
	Blob          string    `json:"blob,omitempty"`
	ExecutionID   string    `json:"execution_id,omitempty"`
	Attempt       int       `json:"attempt"`
	RequestedAt   time.Time `json:"requested_at,omitzero"`
	Status        string    `json:"status,omitempty"`
	Stalled       bool      `json:"stalled,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	// Outcome and Failed are set in StepSettling.
	Outcome string `json:"outcome,omitempty"`
	Failed  int    `json:"failed,omitempty"`
}

func stateName(stream string) string { return "batch/" + stream }

// Sink imports records into F&O as DMF data packages.
type Sink struct {
	*Layout
	name     string
	env      *d365.Env
	sched    cron.Schedule
	legal    string
	state    pipeline.StateStore
	dataDir  string
	gateway  string
	log      zerolog.Logger
	now      func() time.Time
	m        *sinkMetrics
	uploadFn func(ctx context.Context, sasURL, file string) error
	// onStep, if set, hears how long a batch spent in each step (tests).
	onStep func(step string, d time.Duration)

	mu      sync.Mutex
	streams map[string]*streamState
}

type streamState struct {
	batch     *batch
	closeNow  chan struct{}
	waiting   string // why no batch closes although records wait
	lastError string
	sasURL    string // the upload URL of the batch's package, in memory only
	lockHeld  bool   // the stream holds its environment's import lock
	// splitRest is set when a batch was split for size: the rest of it
	// closes at once, whatever the limits.
	splitRest bool
	// paused: an operator paused the stream; no batch closes (one in
	// flight finishes). resume is closed by Resume.
	paused bool
	resume chan struct{}
}

// New builds the sink. It resolves the environment and checks the
// settings; it does no network I/O.
func New(cfg *Config, env pipeline.Env) (*Sink, error) {
	lay, err := NewLayout(cfg)
	if err != nil {
		return nil, err
	}
	sched, err := cfg.schedule()
	if err != nil {
		return nil, err
	}
	fe, err := d365.Resolve(env, cfg.Env)
	if err != nil {
		return nil, err
	}
	legal := cfg.LegalEntity
	if legal == "" {
		legal = fe.Company()
	}
	if legal == "" {
		return nil, errors.New("no legal entity: set legal_entity on the sink or company on the fo environment")
	}
	now := env.Now
	if now == nil {
		now = time.Now
	}
	s := &Sink{Layout: lay, name: env.Name, env: fe, sched: sched, legal: legal,
		state: env.State, dataDir: env.DataDir, gateway: env.GatewayID, log: env.Log, now: now,
		m: newSinkMetrics(env.Metrics), streams: map[string]*streamState{}}
	s.uploadFn = s.upload
	if s.gateway == "" {
		s.gateway = "plantgate"
	}
	s.m.initSink(s.name)
	// A batch whose import F&O may be running takes the environment's
	// import lock now, before any sink's stream runs: otherwise after a
	// restart another sink could win the lock and start a second import
	// while this one still runs in F&O.
	keep := map[string]bool{}
	defer func() { s.removeStalePackages(keep) }()
	for _, f := range env.Flows {
		b, err := s.load(f.Stream)
		if err != nil {
			return nil, err
		}
		if b != nil {
			keep[b.ID] = true
		}
		if b != nil && (b.Step == StepImporting || b.Step == StepPolling) {
			st := s.stream(f.Stream)
			if st.lockHeld {
				continue
			}
			// Two batches importing at once cannot come from one gateway;
			// should it happen, the second waits for the lock when it polls.
			st.lockHeld = fe.ImportLock().TryLock(s.name + "/" + b.ID)
		}
	}
	return s, nil
}

// Write is not used: the sink drives its streams (RunStream).
func (s *Sink) Write(context.Context, []pipeline.Record) error {
	return pipeline.Permanent(errors.New("fo.dmf delivers through RunStream, not Write"))
}

func (s *Sink) stream(name string) *streamState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[name]
	if st == nil {
		st = &streamState{closeNow: make(chan struct{}, 1)}
		s.streams[name] = st
	}
	return st
}

// CloseNow closes the open batch of the sink's streams at once (it still
// waits for F&O to be reachable). It reports whether any stream had one to
// close.
func (s *Sink) CloseNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		select {
		case st.closeNow <- struct{}{}:
		default:
		}
	}
}

// PauseStream implements pipeline.StreamPauser: while paused no batch of
// stream closes; a batch already closed goes on to its import.
func (s *Sink) PauseStream(stream string, paused bool) {
	st := s.stream(stream)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case paused && !st.paused:
		st.paused, st.resume = true, make(chan struct{})
	case !paused && st.paused:
		st.paused = false
		close(st.resume)
	}
}

// RunStream implements pipeline.StreamSink: it resumes the stream's batch
// in flight at its step, then closes and delivers batches until ctx ends.
func (s *Sink) RunStream(ctx context.Context, stream string, q pipeline.StreamQueue) error {
	st := s.stream(stream)
	b, err := s.load(stream)
	if err != nil {
		return err
	}
	s.setBatch(st, b)
	if b != nil {
		s.log.Info().Str(logging.FieldStream, stream).Str("batch", b.ID).Str("step", b.Step).Msg("resuming DMF batch")
	}
	retry := 0
	for ctx.Err() == nil {
		b := s.current(st)
		if b == nil {
			nb, err := s.waitAndClose(ctx, stream, st, q)
			if err != nil {
				if ctx.Err() != nil {
					return nil //nolint:nilerr // a cancelled RunStream is a clean stop; the batch state is on disk
				}
				s.fail(st, err)
				retry++
				_ = wait(ctx, backoffDelay(retry))
				continue
			}
			retry = 0
			s.setBatch(st, nb)
			continue
		}
		done, err := s.advance(ctx, st, q, b)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			s.fail(st, err)
			retry++
			s.log.Warn().Str(logging.FieldReason, logging.RedactText(err.Error())).Str(logging.FieldStream, stream).Str("batch", b.ID).Str("step", b.Step).Msg("DMF batch step failed, will retry")
			_ = wait(ctx, backoffDelay(retry))
		case done:
			retry = 0
			s.setBatch(st, nil)
		default:
			retry = 0
		}
	}
	return nil
}

// retryPolicy spaces the retries of a failed step.
var retryPolicy = backoff.Policy{Initial: 500 * time.Millisecond, Max: time.Minute}

func backoffDelay(n int) time.Duration { return retryPolicy.Delay(n) }

func wait(ctx context.Context, d time.Duration) error { return backoff.Wait(ctx, d) }

func (s *Sink) fail(st *streamState, err error) {
	s.mu.Lock()
	st.lastError = logging.RedactText(err.Error())
	s.mu.Unlock()
}

func (s *Sink) current(st *streamState) *batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.batch == nil {
		return nil
	}
	b := *st.batch
	return &b
}

func (s *Sink) setBatch(st *streamState, b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == nil {
		st.batch, st.sasURL = nil, ""
		return
	}
	cp := *b
	st.batch = &cp
}

func (s *Sink) load(stream string) (*batch, error) {
	if s.state == nil {
		return nil, nil
	}
	v, ok, err := s.state.Get(stateName(stream))
	if err != nil || !ok {
		return nil, err
	}
	var b batch
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("read the DMF batch of %s: %w", stream, err)
	}
	return &b, nil
}

// save persists b durably (its step first, before the step's work).
func (s *Sink) save(ctx context.Context, st *streamState, b *batch) error {
	v, _ := json.Marshal(b) // plain fields always marshal
	if s.state != nil {
		if err := s.state.Put(ctx, stateName(b.Stream), v); err != nil {
			return fmt.Errorf("persist DMF batch %s: %w", b.ID, err)
		}
	}
	s.setBatch(st, b)
	return nil
}

func (s *Sink) stepTo(ctx context.Context, st *streamState, b *batch, step string) error {
	s.observeStep(b)
	b.Step, b.StepAt, b.LastError = step, s.now().UTC(), ""
	return s.save(ctx, st, b)
}

// observeStep records the time b spent in its current step.
func (s *Sink) observeStep(b *batch) {
	d := s.now().Sub(b.StepAt)
	s.m.stepSeconds.WithLabelValues(s.name, b.Step).Observe(d.Seconds())
	if s.onStep != nil {
		s.onStep(b.Step, d)
	}
}

// waitAndClose waits until the stream's open records should close into a
// batch, then closes it: the records are validated (those that can never
// be imported are dead-lettered with their reason, in the transaction
// that persists the batch), and the batch is the fixed range of the rest.
func (s *Sink) waitAndClose(ctx context.Context, stream string, st *streamState, q pipeline.StreamQueue) (*batch, error) {
	var next time.Time
	if s.sched != nil {
		next = s.sched.Next(s.now())
	}
	scheduled := false
	operator := false
	for {
		wake := q.Wait()
		count, bytes, oldest := q.Pending()
		now := s.now()
		if s.sched != nil && !now.Before(next) {
			next = s.sched.Next(now)
			scheduled = count > 0
		}
		reason := ""
		s.mu.Lock()
		rest := st.splitRest
		s.mu.Unlock()
		switch {
		case count == 0:
			scheduled, operator = false, false
			s.mu.Lock()
			st.splitRest = false
			s.mu.Unlock()
		case rest:
			reason = "split"
		case operator:
			reason = "operator"
		case count >= int64(s.cfg.Batch.MaxRecords):
			reason = "max_records"
		case s.cfg.Batch.MaxBytes > 0 && bytes >= int64(s.cfg.Batch.MaxBytes):
			reason = "max_bytes"
		case s.cfg.Batch.MaxAge > 0 && !oldest.IsZero() && now.Sub(oldest) >= s.cfg.Batch.MaxAge:
			reason = "max_age"
		case scheduled:
			reason = "schedule"
		}
		s.mu.Lock()
		paused, resume := st.paused, st.resume
		s.mu.Unlock()
		if paused {
			s.setWaiting(st, "paused by an operator")
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-resume:
			}
			s.setWaiting(st, "")
			continue
		}
		if reason != "" {
			// Only while F&O is reachable: a batch closed while it is not
			// would only wait, and records arriving meanwhile could have
			// joined it.
			if err := s.env.Probe(ctx); err != nil {
				s.setWaiting(st, "waiting for F&O to close a batch ("+reason+"): "+logging.RedactText(err.Error()))
				if wait(ctx, min(5*time.Second, s.cfg.PollMax)) != nil {
					return nil, ctx.Err()
				}
				continue
			}
			s.setWaiting(st, "")
			s.mu.Lock()
			st.splitRest = false
			s.mu.Unlock()
			b, err := s.closeBatch(ctx, stream, st, q, reason, oldest)
			if err != nil || b != nil {
				return b, err
			}
			continue // every record was dead-lettered
		}
		d := time.Hour
		if count > 0 && s.cfg.Batch.MaxAge > 0 && !oldest.IsZero() {
			d = min(d, oldest.Add(s.cfg.Batch.MaxAge).Sub(now))
		}
		if !next.IsZero() {
			d = min(d, next.Sub(now))
		}
		t := time.NewTimer(max(d, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-wake:
		case <-t.C:
		case <-st.closeNow:
			operator = true
		}
		t.Stop()
	}
}

func (s *Sink) setWaiting(st *streamState, why string) {
	s.mu.Lock()
	st.waiting = why
	s.mu.Unlock()
}

// closeBatch fixes the next batch of stream: up to max_records records and
// max_bytes, in queue order. A record that can never be imported (no
// entity, a missing or unknown column, a value a data file cannot hold) is
// dead-lettered with its reason in the same transaction that persists the
// batch. It returns nil when nothing importable was left.
func (s *Sink) closeBatch(ctx context.Context, stream string, st *streamState, q pipeline.StreamQueue, reason string, oldest time.Time) (*batch, error) {
	now := s.now().UTC()
	b := &batch{ID: fmt.Sprintf("%s-%s", now.Format("20060102T150405Z"), randomHex(4)), Stream: stream, Reason: reason,
		Opened: oldest.UTC(), Closed: now, Step: StepClosed, StepAt: now}
	var dead []pipeline.DeadRecord
	var after uint64
	for b.Lines < s.cfg.Batch.MaxRecords {
		page, err := q.List(after, min(10000, s.cfg.Batch.MaxRecords-b.Lines+len(dead)))
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			break
		}
		full := false
		for _, r := range page {
			after = r.Seq
			if r.Remap {
				nr, err := q.Remap(r)
				if err != nil {
					dead = append(dead, pipeline.DeadRecord{Seq: r.Seq, Reason: err.Error()})
					continue
				}
				r = nr
			}
			if _, _, err := s.row(r, 1); err != nil {
				dead = append(dead, pipeline.DeadRecord{Seq: r.Seq, Reason: err.Error()})
				continue
			}
			size := recordSize(r)
			if b.Lines > 0 && (b.Lines >= s.cfg.Batch.MaxRecords || s.cfg.Batch.MaxBytes > 0 && b.Bytes+size > int64(s.cfg.Batch.MaxBytes)) {
				full = true
				break
			}
			if b.From == 0 {
				b.From = r.Seq
			}
			b.To, b.Lines, b.Bytes = r.Seq, b.Lines+1, b.Bytes+size
		}
		if full {
			break
		}
	}
	var states []pipeline.StateWrite
	if b.Lines > 0 {
		v, _ := json.Marshal(b) // plain fields always marshal
		states = append(states, pipeline.StateWrite{Name: stateName(stream), Value: v})
	}
	if err := q.DeadLetter(ctx, dead, states...); err != nil {
		return nil, fmt.Errorf("close DMF batch: %w", err)
	}
	for _, d := range dead {
		s.log.Error().Str(logging.FieldStream, stream).Uint64(logging.FieldSeq, d.Seq).Str(logging.FieldReason, d.Reason).Msg("record dead-lettered: it cannot go into a DMF package")
	}
	s.m.linesDead.WithLabelValues(s.name).Add(float64(len(dead)))
	if b.Lines == 0 {
		return nil, nil
	}
	s.log.Info().Str(logging.FieldStream, stream).Str("batch", b.ID).Int("lines", b.Lines).Str(logging.FieldReason, reason).Msg("DMF batch closed")
	return b, nil
}

func recordSize(r pipeline.Record) int64 {
	n := 0
	for k, v := range r.Fields {
		n += len(k) + len(fmt.Sprint(v)) + 2
	}
	return int64(n)
}

// Layout is how a sink's records become rows of its package's data files.
// plantgate dmf build uses it to build the package a sink would send.
type Layout struct {
	cfg  Config
	ents []Entity
	spec dmfpackage.Spec
}

// NewLayout checks cfg and returns its layout.
func NewLayout(cfg *Config) (*Layout, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	spec, err := cfg.Spec()
	if err != nil {
		return nil, err
	}
	return &Layout{cfg: *cfg, ents: cfg.entities(), spec: spec}, nil
}

// Spec is the package layout.
func (s *Layout) Spec() dmfpackage.Spec { return s.spec }

// Columns returns each entity's label and data-file columns, in order.
func (s *Layout) Columns() []Entity { return append([]Entity(nil), s.ents...) }

// Build writes the package of recs (in order) to w, as the sink would
// send it; tmpDir holds the builder's spool files. A record that cannot go
// into a data file fails it with the record's position.
func (s *Layout) Build(w io.Writer, tmpDir string, recs []pipeline.Record) (dmfpackage.Stats, error) {
	b, err := dmfpackage.New(w, s.spec, tmpDir)
	if err != nil {
		return dmfpackage.Stats{}, err
	}
	counts := make([]int, len(s.ents))
	for n, r := range recs {
		i, err := s.entityOf(r)
		if err == nil {
			counts[i]++
			var vals map[string]any
			if _, vals, err = s.row(r, counts[i]); err == nil {
				_, err = b.Add(i, vals)
			}
		}
		if err != nil {
			b.Abort()
			return dmfpackage.Stats{}, fmt.Errorf("record %d: %w", n+1, err)
		}
	}
	return b.Close()
}

// entityOf returns the index of r's entity.
func (s *Layout) entityOf(r pipeline.Record) (int, error) {
	if len(s.ents) == 1 {
		if v, ok := r.Fields[s.cfg.EntityField]; ok {
			if name, _ := v.(string); name != "" && !strings.EqualFold(name, s.ents[0].Name) {
				return 0, fmt.Errorf("%s %q is not an entity of this sink (%s)", s.cfg.EntityField, name, s.ents[0].Name)
			}
		}
		return 0, nil
	}
	name, _ := r.Fields[s.cfg.EntityField].(string)
	for i, e := range s.ents {
		if strings.EqualFold(e.Name, name) {
			return i, nil
		}
	}
	names := make([]string, len(s.ents))
	for i, e := range s.ents {
		names[i] = e.Name
	}
	if name == "" {
		return 0, fmt.Errorf("no entity: map %s in the flow to one of: %s", s.cfg.EntityField, strings.Join(names, ", "))
	}
	return 0, fmt.Errorf("%s %q is not an entity of this sink: want one of %s", s.cfg.EntityField, name, strings.Join(names, ", "))
}

// row returns r's entity and its data-file values, with the line field set
// to line; it fails for a record that can never be imported.
func (s *Layout) row(r pipeline.Record, line int) (int, map[string]any, error) {
	i, err := s.entityOf(r)
	if err != nil {
		return 0, nil, err
	}
	e := s.ents[i]
	vals := make(map[string]any, len(e.Columns))
	for k, v := range r.Fields {
		if k == s.cfg.EntityField {
			continue
		}
		vals[k] = v
	}
	if e.LineField != "" {
		vals[e.LineField] = line
	}
	var missing, unknown []string
	for _, c := range e.Columns {
		if _, ok := vals[c]; !ok {
			missing = append(missing, c)
		}
	}
	for k := range vals {
		if !contains(e.Columns, k) {
			unknown = append(unknown, k)
		}
	}
	if len(missing)+len(unknown) > 0 {
		sort.Strings(unknown)
		msg := fmt.Sprintf("entity %q", e.Name)
		if len(missing) > 0 {
			msg += ": missing column " + strings.Join(missing, ", ")
		}
		if len(unknown) > 0 {
			msg += ": unknown column " + strings.Join(unknown, ", ")
		}
		return 0, nil, fmt.Errorf("%s (the data file's columns: %s)", msg, strings.Join(e.Columns, ", "))
	}
	for k, v := range vals {
		if _, err := dmfpackage.FormatValue(v); err != nil {
			return 0, nil, fmt.Errorf("entity %q column %s: %w", e.Name, k, err)
		}
	}
	return i, vals, nil
}

// packagePath is where a batch's package is built: a directory per batch
// holds the package and the builder's spool files, and goes with the batch.
func (s *Sink) packagePath(b *batch) string {
	return filepath.Join(s.dataDir, "packages", b.ID, "package.zip")
}

// removeStalePackages deletes the package directories of batches that are
// no longer in flight (settled before a crash removed them, or spool files
// of a build the crash cut short).
func (s *Sink) removeStalePackages(keep map[string]bool) {
	if s.dataDir == "" {
		return
	}
	dir := filepath.Join(s.dataDir, "packages")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				s.log.Warn().Err(err).Str("dir", e.Name()).Msg("remove a stale DMF package")
			}
		}
	}
}

// blobName is the package's unique file name in F&O's blob store.
func (s *Sink) blobName(b *batch) string {
	return sanitize(s.gateway) + "-" + sanitize(s.name) + "-" + b.ID + ".zip"
}

func sanitize(v string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, v)
}

// Probe reports whether the environment is reachable.
func (s *Sink) Probe(ctx context.Context) error { return s.env.Probe(ctx) }

// Close is safe to call twice.
func (s *Sink) Close(context.Context) error { return nil }

// Status implements pipeline.StatusReporter: per stream the batch in
// flight (step, lines, executionId, age) and why none closes.
func (s *Sink) Status() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var batches []map[string]any
	streams := map[string]any{}
	for name, st := range s.streams {
		v := map[string]any{}
		if st.waiting != "" {
			v["waiting"] = st.waiting
		}
		if st.lastError != "" {
			v["last_error"] = st.lastError
		}
		if b := st.batch; b != nil {
			bm := map[string]any{"stream": name, "id": b.ID, "step": b.Step, "lines": b.Lines, "reason": b.Reason,
				"closed_at": b.Closed, "age_seconds": int64(now.Sub(b.Closed).Seconds()), "step_since": b.StepAt, "attempt": b.Attempt}
			if b.ExecutionID != "" {
				bm["execution_id"] = b.ExecutionID
			}
			if b.Status != "" {
				bm["status"] = b.Status
			}
			if b.Stalled {
				bm["stalled"] = true
			}
			if b.LastError != "" {
				bm["last_error"] = b.LastError
			}
			batches = append(batches, bm)
		}
		streams[name] = v
	}
	sort.Slice(batches, func(i, j int) bool { return batches[i]["stream"].(string) < batches[j]["stream"].(string) })
	st := map[string]any{"env": s.env.Status(), "definition_group": s.cfg.DefinitionGroup, "legal_entity": s.legal,
		"streams": streams, "import_lock": s.env.ImportLock().Holder()}
	if batches != nil {
		st["batches"] = batches
	}
	return st
}

// Batches implements pipeline.BatchReporter.
func (s *Sink) Batches() []pipeline.BatchInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []pipeline.BatchInfo
	for _, st := range s.streams {
		if b := st.batch; b != nil {
			out = append(out, pipeline.BatchInfo{Stream: b.Stream, ID: b.ID, Step: b.Step, Lines: b.Lines, Reason: b.Reason, ClosedAt: b.Closed,
				ExecutionID: b.ExecutionID, Status: b.Status, Stalled: b.Stalled, LastError: b.LastError})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}

var (
	_ pipeline.BatchReporter  = (*Sink)(nil)
	_ pipeline.StreamSink     = (*Sink)(nil)
	_ pipeline.Prober         = (*Sink)(nil)
	_ pipeline.StatusReporter = (*Sink)(nil)
	_ pipeline.Closer         = (*Sink)(nil)
)

// sinkMetrics are the plantgate_dmf_* collectors.
type sinkMetrics struct {
	batches      *prometheus.CounterVec
	linesOK      *prometheus.CounterVec
	linesDead    *prometheus.CounterVec
	packageBytes *prometheus.HistogramVec
	stepSeconds  *prometheus.HistogramVec
	stalled      *prometheus.GaugeVec
}

var (
	metricsOnce sync.Map // registry -> *sinkMetrics
)

func newSinkMetrics(reg prometheus.Registerer) *sinkMetrics {
	if reg != nil {
		if m, ok := metricsOnce.Load(reg); ok {
			return m.(*sinkMetrics)
		}
	}
	m := &sinkMetrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_dmf_batches_total",
			Help: "DMF batches finished, by outcome: succeeded, partially_succeeded, failed (dead-lettered), retried."}, []string{"sink", "outcome"}),
		linesOK: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_dmf_lines_imported_total",
			Help: "Lines F&O imported through DMF packages."}, []string{"sink"}),
		linesDead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantgate_dmf_lines_dead_lettered_total",
			Help: "Lines dead-lettered: refused by F&O's import, or unfit for a data file."}, []string{"sink"}),
		packageBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "plantgate_dmf_package_bytes",
			Help: "Size of the DMF packages built.", Buckets: []float64{1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20}}, []string{"sink"}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "plantgate_dmf_step_duration_seconds",
			Help:    "Time DMF batches spent in each step (closed, packaged, uploaded, importing, polling, settling).",
			Buckets: []float64{.01, .1, .5, 1, 5, 15, 60, 300, 900, 3600}}, []string{"sink", "step"}),
		stalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantgate_dmf_stalled_batches",
			Help: "DMF batches whose import is still running past import_deadline: reported and held, never imported again."}, []string{"sink"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.batches, m.linesOK, m.linesDead, m.packageBytes, m.stepSeconds, m.stalled} {
			reg.MustRegister(c)
		}
		metricsOnce.Store(reg, m)
	}
	return m
}

// batchOutcomes are the values of plantgate_dmf_batches_total's outcome
// label.
var batchOutcomes = []string{"succeeded", "partially_succeeded", "failed", "retried"}

// initSink creates the counters and gauges of sink at 0, so a scrape shows
// them before its first batch.
func (m *sinkMetrics) initSink(sink string) {
	for _, o := range batchOutcomes {
		m.batches.WithLabelValues(sink, o)
	}
	m.linesOK.WithLabelValues(sink)
	m.linesDead.WithLabelValues(sink)
	m.stalled.WithLabelValues(sink)
	m.packageBytes.WithLabelValues(sink)
}

// lookup returns the sink's registered factory.
func lookup() (pipeline.SinkFactory, bool) { return outputs.Lookup(Type) }

// FOEnv returns the F&O environment the sink delivers to; the gateway's
// health model marks the sink down while that environment is.
func (s *Sink) FOEnv() *d365.Env { return s.env }
