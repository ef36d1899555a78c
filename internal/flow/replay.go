package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/plantgate/plantgate/internal/codec"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// ReplaySink routes the records of a source's own stream (SourceDeadStream:
// dead letters an operator replayed) through the source's flows again, as
// if the source had just received them. Messages that still fail are
// dead-lettered again with their new reason; the others become records of
// their flows' streams, deduplicated by the flows' ids.
type ReplaySink struct {
	router *Router
	source string
	dec    pipeline.Redecoder
}

// NewReplaySink returns the sink for source's replayed messages; dec may be
// nil (JSON).
func NewReplaySink(r *Router, source string, dec pipeline.Redecoder) *ReplaySink {
	if dec == nil {
		d, _ := codec.New(codec.Options{})
		dec = jsonRedecoder{d}
	}
	return &ReplaySink{router: r, source: source, dec: dec}
}

type jsonRedecoder struct{ d codec.Decoder }

func (j jsonRedecoder) Redecode(raw []byte, _ map[string]any) (any, error) { return j.d.Decode(raw) }

// Write implements pipeline.Sink: one Append for the whole batch.
func (s *ReplaySink) Write(ctx context.Context, batch []pipeline.Record) error {
	msgs := make([]pipeline.Message, len(batch))
	for i, r := range batch {
		meta := plainMeta(r.Meta)
		m := pipeline.Message{Raw: r.Raw, Meta: meta, Time: r.Time}
		if r.Raw == nil {
			m.DecodeErr = errors.New("replayed message has no raw bytes")
		} else {
			m.Payload, m.DecodeErr = s.safeRedecode(r.Raw, meta)
		}
		msgs[i] = m
	}
	if err := s.router.route(ctx, s.source, msgs, nil); err != nil {
		return fmt.Errorf("replay %d messages of %s: %w", len(msgs), s.source, err)
	}
	return nil
}

func (s *ReplaySink) safeRedecode(raw []byte, meta map[string]any) (any, error) {
	return safeRedecode(s.dec, raw, meta)
}

func safeRedecode(dec pipeline.Redecoder, raw []byte, meta map[string]any) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("decode panicked: %v", p)
		}
	}()
	return dec.Redecode(raw, meta)
}

// plainMeta turns the json.Numbers of metadata read back from the queue
// into int64 or float64, as sources hand them to flows.
func plainMeta(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if n, ok := v.(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				v = i
			} else if f, err := n.Float64(); err == nil {
				v = f
			}
		}
		out[k] = v
	}
	return out
}

var _ pipeline.Sink = (*ReplaySink)(nil)
