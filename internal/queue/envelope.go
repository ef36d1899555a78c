package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// envelopeV1 is the first byte of every stored value.
const envelopeV1 byte = 1

// envelope is the stored form of a record (and of a dead letter).
//
//	byte 0    version (1)
//	byte 1..  JSON of envelope
type envelope struct {
	Key      string         `json:"k,omitempty"`
	ID       string         `json:"i,omitempty"`
	Source   string         `json:"s,omitempty"`
	Flow     string         `json:"fl,omitempty"`
	Time     int64          `json:"t"`
	Appended int64          `json:"a"`
	Fields   map[string]any `json:"f,omitempty"`
	Meta     map[string]any `json:"m,omitempty"`
	Raw      []byte         `json:"r,omitempty"`
	// Dead letters only.
	Reason   string `json:"e,omitempty"`
	DeadAt   int64  `json:"d,omitempty"`
	Attempts int    `json:"n,omitempty"`
	OrigSeq  uint64 `json:"o,omitempty"`
	// Remap is set on a replayed record that carries its source message:
	// the sink runner maps it again through its flow's current config.
	Remap bool `json:"x,omitempty"`
}

// encodeScratch holds the buffers envelopes are encoded into before the
// copy of exactly their size that the commit keeps: one allocation per
// record, none for the growth of the buffer.
var encodeScratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func encodeEnvelope(e *envelope) ([]byte, error) {
	sp := encodeScratch.Get().(*[]byte)
	b, err := appendEnvelope(append((*sp)[:0], envelopeV1), e)
	if err != nil {
		encodeScratch.Put(sp)
		return nil, fmt.Errorf("encode record: %w", err)
	}
	out := append([]byte(nil), b...)
	if cap(b) <= 64<<10 { // a rare huge record does not stay pinned in the pool
		*sp = b
		encodeScratch.Put(sp)
	}
	return out, nil
}

// decodeEnvelope parses a stored value. Numbers in fields are kept as
// json.Number so decimal quantities keep their exact text.
func decodeEnvelope(v []byte) (*envelope, error) {
	if len(v) < 2 {
		return nil, fmt.Errorf("%w: envelope of %d bytes", ErrCorrupt, len(v))
	}
	if v[0] != envelopeV1 {
		return nil, fmt.Errorf("%w: envelope version %d", ErrCorrupt, v[0])
	}
	dec := json.NewDecoder(bytes.NewReader(v[1:]))
	dec.UseNumber()
	var e envelope
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after envelope", ErrCorrupt)
	}
	return &e, nil
}

func (e *envelope) record(stream string, seq uint64) pipeline.Record {
	return pipeline.Record{
		Stream: stream, Seq: seq, Key: e.Key, ID: e.ID, Source: e.Source, Flow: e.Flow,
		Time: time.Unix(0, e.Time).UTC(), Fields: e.Fields, Meta: e.Meta, Raw: e.Raw,
		Attempts: e.Attempts, Remap: e.Remap, Appended: time.Unix(0, e.Appended).UTC(),
	}
}

func envelopeOf(r *pipeline.Record, now time.Time) *envelope {
	t := r.Time
	if t.IsZero() {
		t = now
	}
	return &envelope{Key: r.Key, ID: r.ID, Source: r.Source, Flow: r.Flow, Time: t.UnixNano(), Appended: now.UnixNano(),
		Fields: r.Fields, Meta: r.Meta, Raw: r.Raw, Attempts: r.Attempts}
}

// validName reports whether s can name a stream or state scope.
func validName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	return !strings.ContainsAny(s, "/\x00")
}
