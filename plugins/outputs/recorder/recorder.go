// Package recorder is the "recorder" sink: it appends every record it
// receives to a JSON-lines file (fsync'd per batch), or keeps it in memory.
// It is plantgate's reference sink: use it to see what a flow produces
// before pointing the flow at F&O, and in tests of the engine.
package recorder

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Config is the recorder's settings.
type Config struct {
	// Path of the JSON-lines file; empty keeps records in memory only.
	Path string `yaml:"path" file:"write"`
	// Delay is added before each write (to rehearse a slow peer).
	Delay time.Duration `yaml:"delay"`
}

func init() {
	outputs.Add(pipeline.SinkFactory{
		Type:      "recorder",
		NewConfig: func() any { return &Config{} },
		New: func(cfg any, env pipeline.Env) (pipeline.Sink, error) {
			return New(cfg.(*Config)), nil
		},
	})
}

// Line is one record as written to the file.
type Line struct {
	Stream string         `json:"stream"`
	Seq    uint64         `json:"seq"`
	Key    string         `json:"key,omitempty"`
	ID     string         `json:"id,omitempty"`
	Time   time.Time      `json:"time"`
	Fields map[string]any `json:"fields"`
}

// Recorder is the sink.
type Recorder struct {
	cfg Config

	mu   sync.Mutex
	f    *os.File
	mem  []Line
	seen int64
}

// New builds a recorder; the file is opened on the first write.
func New(cfg *Config) *Recorder { return &Recorder{cfg: *cfg} }

// Write appends batch and syncs the file before returning.
func (r *Recorder) Write(ctx context.Context, batch []pipeline.Record) error {
	if r.cfg.Delay > 0 {
		t := time.NewTimer(r.cfg.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	lines := make([]Line, len(batch))
	for i, rec := range batch {
		lines[i] = lineOf(rec)
		if err := enc.Encode(lines[i]); err != nil {
			return pipeline.Permanent(fmt.Errorf("encode record %d: %w", rec.Seq, err))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg.Path != "" {
		if r.f == nil {
			f, err := os.OpenFile(r.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return fmt.Errorf("open %s: %w", r.cfg.Path, err)
			}
			r.f = f
		}
		if _, err := r.f.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("write %s: %w", r.cfg.Path, err)
		}
		if err := r.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", r.cfg.Path, err)
		}
	} else {
		r.mem = append(r.mem, lines...)
	}
	r.seen += int64(len(batch))
	return nil
}

// lineOf is the line Write records for rec.
func lineOf(rec pipeline.Record) Line {
	return Line{Stream: rec.Stream, Seq: rec.Seq, Key: rec.Key, ID: rec.ID, Time: rec.Time, Fields: rec.Fields}
}

// PreviewRequest implements pipeline.RequestPreviewer: the JSON line Write
// would append for rec (its seq is 0 until the queue assigns one).
func (r *Recorder) PreviewRequest(rec pipeline.Record) (pipeline.RequestPreview, error) {
	b, err := json.Marshal(lineOf(rec))
	if err != nil {
		return pipeline.RequestPreview{}, fmt.Errorf("encode record: %w", err)
	}
	where := "kept in memory"
	if r.cfg.Path != "" {
		where = "appended to " + r.cfg.Path
	}
	return pipeline.RequestPreview{Body: b, Note: "a JSON line " + where}, nil
}

// Records returns what was recorded in memory.
func (r *Recorder) Records() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Line(nil), r.mem...)
}

// Close closes the file; safe to call twice.
func (r *Recorder) Close(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Status implements pipeline.StatusReporter.
func (r *Recorder) Status() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return map[string]any{"path": r.cfg.Path, "records": r.seen}
}

var (
	_ pipeline.Sink             = (*Recorder)(nil)
	_ pipeline.Closer           = (*Recorder)(nil)
	_ pipeline.StatusReporter   = (*Recorder)(nil)
	_ pipeline.RequestPreviewer = (*Recorder)(nil)
)
