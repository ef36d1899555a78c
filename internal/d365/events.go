package d365

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Business events: F&O's feedback to a plant (see plugins/inputs/foevents
// and plugins/outputs/fooutcomes). Microsoft documents the events' names
// and most fields, not the exact wire format, so the decoding here is
// lenient about the envelope and strict about what it returns.

// MaxEventBytes bounds one event's JSON.
const MaxEventBytes = 1 << 20

// Event is one business event as received: its own JSON bytes and the
// decoded object.
type Event struct {
	Raw     []byte
	Payload map[string]any
}

// DecodeEvents decodes a blob or HTTP body holding business events: one
// JSON object, or a JSON array of objects. Numbers stay json.Number until
// Normalize; an element that is not an object fails the whole body (the
// caller dead-letters it with its bytes).
func DecodeEvents(b []byte) ([]Event, error) {
	b = bytes.TrimSpace(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")))
	if len(b) == 0 {
		return nil, errors.New("empty event body")
	}
	if len(b) > MaxEventBytes*16 {
		return nil, fmt.Errorf("event body of %d bytes is larger than %d", len(b), MaxEventBytes*16)
	}
	var raws []json.RawMessage
	if b[0] == '[' {
		if err := json.Unmarshal(b, &raws); err != nil {
			return nil, fmt.Errorf("events are not a JSON array of objects: %w", err)
		}
		if len(raws) == 0 {
			return nil, errors.New("an empty array of events")
		}
	} else {
		raws = []json.RawMessage{b}
	}
	out := make([]Event, 0, len(raws))
	for i, r := range raws {
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("event %d is not a JSON object: %w", i, err)
		}
		if m == nil {
			return nil, fmt.Errorf("event %d is null", i)
		}
		if dec.More() {
			return nil, fmt.Errorf("event %d: more than one JSON value", i)
		}
		if len(r) > MaxEventBytes {
			return nil, fmt.Errorf("event %d has %d bytes, more than %d", i, len(r), MaxEventBytes)
		}
		out = append(out, Event{Raw: bytes.Clone(r), Payload: Normalize(m).(map[string]any)})
	}
	return out, nil
}

// Normalize turns json.Number values into float64 (integers that fit
// int64 into int64), as the flow expressions expect.
func Normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = Normalize(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = Normalize(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

var msDate = regexp.MustCompile(`^/Date\((-?\d+)([+-]\d{4})?\)/$`)

// ParseEventTime reads an event time: "/Date(<ms>)/" (as F&O sends it),
// RFC 3339, or a number of Unix milliseconds.
func ParseEventTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case string:
		if m := msDate.FindStringSubmatch(x); m != nil {
			ms, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return time.Time{}, false
			}
			return time.UnixMilli(ms).UTC(), true
		}
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return t.UTC(), true
		}
	case int64:
		return time.UnixMilli(x).UTC(), true
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x) > 1e15 {
			return time.Time{}, false
		}
		return time.UnixMilli(int64(x)).UTC(), true
	}
	return time.Time{}, false
}

// MessageFingerprint identifies a MES message by what F&O echoes in its
// "message processed" event: the message type, the company (upper case)
// and the content. The content is compared as canonical JSON (object keys
// sorted, insignificant space dropped, numbers as written) when it parses,
// else byte for byte, so a re-serialisation of the same document by F&O
// does not break the match while any change of a value does.
func MessageFingerprint(typ, company, content string) string {
	h := sha256.New()
	h.Write([]byte(typ))
	h.Write([]byte{0})
	h.Write([]byte(strings.ToUpper(strings.TrimSpace(company))))
	h.Write([]byte{0})
	h.Write(CanonicalJSON(content))
	return hex.EncodeToString(h.Sum(nil))
}

// CanonicalJSON returns s as canonical JSON, or s itself when it is not
// one JSON value.
func CanonicalJSON(s string) []byte {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return []byte(s)
	}
	b, err := json.Marshal(v) // maps marshal with sorted keys; json.Number as written
	if err != nil {
		return []byte(s)
	}
	return b
}
