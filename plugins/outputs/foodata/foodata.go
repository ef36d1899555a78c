package foodata

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Type is the sink type name.
const Type = "fo.odata"

// Write modes.
const (
	ModeCreate = "create"
	ModeUpdate = "update"
	ModeUpsert = "upsert"
)

// dataAreaID is F&O's company key field.
const dataAreaID = "dataAreaId"

// Config is the sink's settings.
type Config struct {
	// Env names the F&O environment (a key of the fo: section).
	Env string `yaml:"env" required:"true" ref:"fo"`
	// Entity is the entity set name (case sensitive), e.g. ProductionOrderHeaders.
	Entity string `yaml:"entity" required:"true"`
	// Mode is create (POST), update (PATCH by key) or upsert (POST, and
	// PATCH when F&O answers that the record already exists).
	Mode string `yaml:"mode" default:"upsert" enum:"create,update,upsert"`
	// Key lists the entity's key fields in F&O's order, dataAreaId
	// included for company entities. Required for update and upsert; with
	// it, a record in doubt is verified by reading it back.
	Key []string `yaml:"key"`
	// Company is the dataAreaId of records that do not carry one; default:
	// the environment's company.
	Company string `yaml:"company"`
	// CompanyField is the record field holding a record's company.
	CompanyField string `yaml:"company_field" default:"dataAreaId"`
	// Batch sends bursts in $batch requests.
	Batch Batch `yaml:"batch"`
	// InDoubt applies to records without a key (which cannot be verified)
	// sent without a known outcome: hold (for an operator) or resend.
	InDoubt string `yaml:"in_doubt" default:"hold" enum:"hold,resend"`
	// Priority orders this sink's requests in the environment's limiter:
	// high, normal or low. Empty: high for urgent flows, else normal.
	Priority string `yaml:"priority" enum:"high,normal,low"`
}

// Batch configures $batch mode.
type Batch struct {
	// Enabled sends the records of one write as one $batch request.
	Enabled bool `yaml:"enabled"`
	// ChangesetSize is the most operations per changeset (all-or-nothing
	// in F&O).
	ChangesetSize int `yaml:"changeset_size" default:"10" min:"1"`
}

// Validate checks the settings on their own.
func (c *Config) Validate() error {
	var errs []error
	if (c.Mode == ModeUpdate || c.Mode == ModeUpsert) && len(c.Key) == 0 {
		errs = append(errs, fmt.Errorf("mode %s needs key: the entity's key fields, e.g. [dataAreaId, ProductionOrderNumber]", c.Mode))
	}
	seen := map[string]bool{}
	for _, k := range c.Key {
		if k == "" || seen[k] {
			errs = append(errs, fmt.Errorf("key: field %q is empty or listed twice", k))
		}
		seen[k] = true
	}
	if c.Batch.ChangesetSize > 5000 {
		errs = append(errs, fmt.Errorf("batch.changeset_size %d: F&O accepts at most 5000 operations per batch", c.Batch.ChangesetSize))
	}
	if strings.ContainsAny(c.Entity, "/()?#' ") {
		errs = append(errs, fmt.Errorf("entity %q: want an entity set name such as ProductionOrderHeaders", c.Entity))
	}
	return errors.Join(errs...)
}

func init() {
	outputs.Add(pipeline.SinkFactory{
		Type: Type,
		NewConfig: func() any {
			return &Config{Mode: ModeUpsert, CompanyField: dataAreaID, InDoubt: "hold", Batch: Batch{ChangesetSize: 10}}
		},
		New: func(cfg any, env pipeline.Env) (pipeline.Sink, error) {
			return New(cfg.(*Config), env)
		},
		Dedups: dedups,
	})
}

// dedups reports whether a second copy of a record leaves one entity in
// F&O: update and upsert write by the key, and a create with the key
// fails on the existing entity instead of adding another; a create
// without a key adds a new entity every time.
func dedups(cfg any) bool {
	c, ok := cfg.(*Config)
	return ok && (c.Mode != ModeCreate || len(c.Key) > 0)
}

// Sink writes entity records.
type Sink struct {
	cfg     Config
	name    string
	env     *d365.Env
	prio    d365.Priority
	urgent  map[string]bool   // streams of urgent flows
	prios   map[string]string // priority per flow, for status
	tracker *d365.Tracker
	log     zerolog.Logger

	written, verified, rejected atomic.Int64

	health d365.Health
}

// New builds the sink; it does no network I/O.
func New(cfg *Config, env pipeline.Env) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Batch.ChangesetSize <= 0 {
		cfg.Batch.ChangesetSize = 10
	}
	prio, err := d365.ParsePriority(cfg.Priority)
	if err != nil {
		return nil, err
	}
	fe, err := d365.Resolve(env, cfg.Env)
	if err != nil {
		return nil, err
	}
	streams := make([]string, 0, len(env.Flows))
	for _, f := range env.Flows {
		streams = append(streams, f.Stream)
	}
	tr := d365.NewTracker(env.Records, env.Name, d365.TrackerOptions{
		Log: env.Log, Held: fe.Metrics().InDoubt.WithLabelValues(env.Name), Parked: fe.Metrics().Parked.WithLabelValues(env.Name),
		Now: env.Now, Streams: streams,
	})
	s := &Sink{cfg: *cfg, name: env.Name, env: fe, prio: prio, urgent: pipeline.UrgentStreams(env.Flows), tracker: tr, log: env.Log}
	s.prios = map[string]string{}
	for _, f := range env.Flows {
		s.prios[f.Name] = s.priority(pipeline.Record{Flow: f.Name, Stream: f.Stream}).String()
	}
	return s, nil
}

// Tracker returns the sink's in-doubt bookkeeping.
func (s *Sink) Tracker() *d365.Tracker { return s.tracker }

func (s *Sink) priority(r pipeline.Record) d365.Priority {
	if s.cfg.Priority == "" && s.urgent[r.Stream] {
		return d365.PriorityHigh
	}
	return s.prio
}

// entity is a record mapped for F&O.
type entity struct {
	body []byte         // JSON for POST
	vals map[string]any // the fields sent
	path string         // Set(key...) when the key is known
}

// mapRecord turns a record into the entity to write: the record's fields,
// with the company as dataAreaId, and the key path when the sink has a key.
func (s *Sink) mapRecord(r pipeline.Record) (*entity, error) {
	company := s.cfg.Company
	if company == "" {
		company = s.env.Company()
	}
	vals := make(map[string]any, len(r.Fields)+1)
	for k, v := range r.Fields {
		if k == s.cfg.CompanyField && s.cfg.CompanyField != "" {
			if c, ok := v.(string); ok && c != "" {
				company = c
			} else if v != nil {
				return nil, fmt.Errorf("field %s: want a company id (text), got %v", k, v)
			}
			continue
		}
		vals[k] = v
	}
	needCompany := false
	for _, k := range s.cfg.Key {
		if k == dataAreaID {
			needCompany = true
		}
	}
	if company != "" {
		vals[dataAreaID] = company
	} else if needCompany {
		return nil, fmt.Errorf("no company (dataAreaId) for the record: map %s in the flow, or set company on the sink or the fo environment", s.cfg.CompanyField)
	}
	e := &entity{vals: vals}
	if len(s.cfg.Key) > 0 {
		kv := make([]d365.KeyValue, len(s.cfg.Key))
		for i, k := range s.cfg.Key {
			v, ok := vals[k]
			if !ok || v == nil || v == "" {
				return nil, fmt.Errorf("key field %s is missing from the record (key: %s)", k, strings.Join(s.cfg.Key, ", "))
			}
			kv[i] = d365.KeyValue{Name: k, Value: v}
		}
		p, err := d365.EntityPath(s.cfg.Entity, kv)
		if err != nil {
			return nil, err
		}
		e.path = p
	}
	b, err := json.Marshal(vals)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	e.body = b
	return e, nil
}

// patchPath addresses the entity for a PATCH. cross-company=true lets
// F&O find a record of a company other than the application user's
// default one.
func (s *Sink) patchPath(e *entity) string { return "/data/" + e.path + "?cross-company=true" }

// patchBody is the body of a PATCH: the fields without the key fields.
func (s *Sink) patchBody(e *entity) []byte {
	m := make(map[string]any, len(e.vals))
	for k, v := range e.vals {
		m[k] = v
	}
	for _, k := range s.cfg.Key {
		delete(m, k)
	}
	b, _ := json.Marshal(m) // the same values marshalled for the POST body
	return b
}

// Write delivers the batch: record by record with pipeline.ForEach, or in
// $batch changesets when batch.enabled is set.
func (s *Sink) Write(ctx context.Context, batch []pipeline.Record) error {
	if s.cfg.Batch.Enabled && len(batch) > 1 {
		return s.writeBatch(ctx, batch)
	}
	return pipeline.ForEach(ctx, batch, func(_ int, r pipeline.Record) error { return s.writeOne(ctx, r) })
}

// preflight handles what the tracker knows about r before it is sent.
// done is true when r's outcome is decided (err is its result).
func (s *Sink) preflight(ctx context.Context, r pipeline.Record, e *entity) (done bool, err error) {
	verdict, holder, err := s.tracker.Check(r)
	if err != nil {
		return true, err
	}
	switch verdict {
	case d365.VerdictHeld:
		if holder.State == d365.HeldParked {
			return true, pipeline.Permanent(errors.New(d365.ParkedReason(r.Stream, pipeline.Hold{Seq: holder.Behind, Key: holder.Key})))
		}
		return true, pipeline.Permanent(errors.New(d365.HeldReason(r.Stream, holder.Seq, holder.Reason)))
	case d365.VerdictBlocked:
		if _, err := s.tracker.Park(ctx, r, holder); err != nil {
			return true, err
		}
		return true, pipeline.Permanent(errors.New(d365.ParkedReason(r.Stream, holder)))
	case d365.VerdictDelivered:
		// Confirmed before the gateway stopped: the ack removes the mark.
		return true, nil
	case d365.VerdictInDoubt:
		if e != nil && e.path != "" {
			found, err := s.verify(ctx, r, e)
			if err != nil {
				return true, err
			}
			if found {
				s.verified.Add(1)
				return true, nil
			}
			return false, nil // not there: send it
		}
		if s.cfg.InDoubt == "hold" {
			return true, s.hold(ctx, r, "the gateway stopped after the record was sent, before F&O answered")
		}
	}
	return false, nil
}

// verify reads the entity back after an uncertain send. It reports found
// when the entity exists and, for update and upsert, holds the values sent.
func (s *Sink) verify(ctx context.Context, r pipeline.Record, e *entity) (bool, error) {
	path := "/data/" + e.path + "?cross-company=true"
	resp, err := s.env.Do(ctx, &d365.Request{Method: http.MethodGet, Path: path, Op: "verify", Priority: s.priority(r)})
	if d365.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		if pipeline.IsPermanent(err) {
			// A verification that cannot work must not dead-letter the
			// record: retry it and let status show why.
			return false, fmt.Errorf("verify %s after an uncertain send: %w", e.path, errors.Unwrap(err))
		}
		return false, fmt.Errorf("verify %s after an uncertain send: %w", e.path, err)
	}
	if s.cfg.Mode == ModeCreate {
		return true, nil
	}
	// An answer that cannot be compared counts as absent: the record is
	// sent again, which an update (PATCH) makes harmless.
	var got map[string]any
	dec := json.NewDecoder(bytes.NewReader(resp.Body))
	dec.UseNumber()
	same := dec.Decode(&got) == nil
	for k, v := range e.vals {
		same = same && sameValue(v, got[k])
	}
	return same, nil
}

// sameValue compares a sent value with the one read back: numbers by
// value, text ignoring case (F&O lower-cases dataAreaId).
func sameValue(sent, got any) bool {
	fs, okS := toFloat(sent)
	fg, okG := toFloat(got)
	if okS && okG {
		return math.Abs(fs-fg) <= 1e-9*math.Max(1, math.Abs(fs))
	}
	ss, okS := sent.(string)
	gs, okG := got.(string)
	if okS && okG {
		return strings.EqualFold(ss, gs)
	}
	a, _ := json.Marshal(sent)
	b, _ := json.Marshal(got)
	return bytes.Equal(a, b)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

func (s *Sink) writeOne(ctx context.Context, r pipeline.Record) error {
	e, merr := s.mapRecord(r)
	done, err := s.preflight(ctx, r, e)
	if done {
		return err
	}
	if merr != nil {
		s.rejected.Add(1)
		return pipeline.Permanent(fmt.Errorf("map record to %s: %w", s.cfg.Entity, merr))
	}
	return s.sendOne(ctx, r, e, s.method())
}

// method is the HTTP method that writes a record: PATCH for update, else
// POST.
func (s *Sink) method() string {
	if s.cfg.Mode == ModeUpdate {
		return http.MethodPatch
	}
	return http.MethodPost
}

// settle books the outcome of a record's write and returns Write's result
// for it.
func (s *Sink) settle(ctx context.Context, r pipeline.Record, e *entity, marked bool, err error) error {
	if err == nil {
		s.written.Add(1)
		s.health.Succeeded()
		if marked && e.path == "" {
			// A keyless entity cannot be verified after a restart: remember
			// that F&O has it until the ack removes the mark.
			if err := s.tracker.Delivered(ctx, r); err != nil {
				s.log.Warn().Err(err).Uint64(logging.FieldSeq, r.Seq).Msg("record delivery in state")
			}
		}
		return nil
	}
	switch {
	case marked && d365.IsInDoubt(err):
		if e.path == "" && s.cfg.InDoubt == "hold" {
			return s.hold(ctx, r, err.Error())
		}
		return err // the marker stays: the next attempt verifies (or resends)
	case pipeline.IsPermanent(err):
		s.rejected.Add(1)
		s.health.Failed(err)
		if marked && e.path == "" {
			// F&O refused it: a restart must not take it for one in doubt.
			if nerr := s.tracker.NotSent(ctx, r); nerr != nil {
				s.log.Warn().Err(nerr).Uint64(logging.FieldSeq, r.Seq).Msg("clear in-flight marker")
			}
		}
	case marked && e.path == "":
		if nerr := s.tracker.NotSent(ctx, r); nerr != nil {
			s.log.Warn().Err(nerr).Uint64(logging.FieldSeq, r.Seq).Msg("clear in-flight marker")
		}
	}
	return err
}

func (s *Sink) hold(ctx context.Context, r pipeline.Record, cause string) error {
	h, err := s.tracker.Hold(ctx, r, cause, s.cfg.Entity)
	if err != nil {
		return fmt.Errorf("hold record in doubt: %w", err)
	}
	return pipeline.Permanent(errors.New(d365.HeldReason(r.Stream, h.Seq, h.Reason)))
}

// Probe reports whether the environment is reachable and the entity set
// answers (GET <set>?$top=1), and not-ready after a 403 until a later
// write succeeds.
func (s *Sink) Probe(ctx context.Context) error {
	if err := s.health.Check("writes"); err != nil {
		return err
	}
	if err := s.env.Probe(ctx); err != nil {
		return err
	}
	_, err := s.env.Do(ctx, &d365.Request{Method: http.MethodGet, Path: "/data/" + url.PathEscape(s.cfg.Entity) + "?$top=1", Op: "probe", Priority: d365.PriorityLow})
	if err != nil {
		return fmt.Errorf("%w: %w", pipeline.ErrNotReady, err)
	}
	return nil
}

// Status implements pipeline.StatusReporter.
func (s *Sink) Status() map[string]any {
	st := map[string]any{
		"env": s.env.Status(), "entity": s.cfg.Entity, "mode": s.cfg.Mode, "batch": s.cfg.Batch.Enabled,
		"written": s.written.Load(), "verified_after_doubt": s.verified.Load(), "rejected": s.rejected.Load(),
		"priorities": s.prios,
	}
	s.health.Report(st, "last_written_at", s.tracker)
	return st
}

// Close releases nothing today (the tracker keeps its state in the
// queue); safe to call twice.
func (s *Sink) Close(context.Context) error { return nil }

var (
	_ pipeline.Sink           = (*Sink)(nil)
	_ pipeline.Closer         = (*Sink)(nil)
	_ pipeline.Prober         = (*Sink)(nil)
	_ pipeline.StatusReporter = (*Sink)(nil)
)

// FOEnv returns the F&O environment the sink delivers to; the gateway's
// health model marks the sink down while that environment is.
func (s *Sink) FOEnv() *d365.Env { return s.env }
