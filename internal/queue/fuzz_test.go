package queue

import (
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

func FuzzDecodeEnvelope(f *testing.F) {
	r := pipeline.Record{Key: "k", ID: "i", Fields: map[string]any{"a": 1.5, "b": "x"}, Raw: []byte("raw")}
	good, _ := encodeEnvelope(envelopeOf(&r, time.Unix(1, 0)))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, '{', '}'})
	f.Add([]byte{1, '{', '}', '{', '}'})
	f.Add([]byte("\x01{\"f\":{\"a\":1e999999}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode again and decode to the same record.
		b2, err := encodeEnvelope(e)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeEnvelope(b2); err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
	})
}
