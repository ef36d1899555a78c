package queue

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The envelope encoder.
//
// Every record is encoded once on its way into the queue, on the path an
// MQTT burst takes, and encoding/json's reflective walk of the Fields and
// Meta maps (sorting keys, boxing values, a Marshaler call for each time)
// was the largest single cost of that path: about a quarter of the
// gateway's CPU while it drained a broker's backlog. appendEnvelope
// writes the same bytes encoding/json writes for *envelope with HTML
// escaping off, directly, for the types records hold (those JSON decodes
// to, what flows compute, times); any other value goes through
// encoding/json. The output has to be byte for byte the same: decoders
// of every version read it, and FuzzEnvelopeEncodingMatchesStdlib holds
// the two encoders to that.

// appendEnvelope appends the JSON encoding of e (no trailing newline).
func appendEnvelope(b []byte, e *envelope) ([]byte, error) {
	var err error
	b = append(b, '{')
	first := true
	key := func(k string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
	}
	if e.Key != "" {
		key("k")
		b = appendJSONString(b, e.Key)
	}
	if e.ID != "" {
		key("i")
		b = appendJSONString(b, e.ID)
	}
	if e.Source != "" {
		key("s")
		b = appendJSONString(b, e.Source)
	}
	if e.Flow != "" {
		key("fl")
		b = appendJSONString(b, e.Flow)
	}
	key("t")
	b = strconv.AppendInt(b, e.Time, 10)
	key("a")
	b = strconv.AppendInt(b, e.Appended, 10)
	if len(e.Fields) > 0 {
		key("f")
		if b, err = appendJSONMap(b, e.Fields, 0); err != nil {
			return nil, err
		}
	}
	if len(e.Meta) > 0 {
		key("m")
		if b, err = appendJSONMap(b, e.Meta, 0); err != nil {
			return nil, err
		}
	}
	if len(e.Raw) > 0 {
		key("r")
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, e.Raw)
		b = append(b, '"')
	}
	if e.Reason != "" {
		key("e")
		b = appendJSONString(b, e.Reason)
	}
	if e.DeadAt != 0 {
		key("d")
		b = strconv.AppendInt(b, e.DeadAt, 10)
	}
	if e.Attempts != 0 {
		key("n")
		b = strconv.AppendInt(b, int64(e.Attempts), 10)
	}
	if e.OrigSeq != 0 {
		key("o")
		b = strconv.AppendUint(b, e.OrigSeq, 10)
	}
	if e.Remap {
		key("x")
		b = append(b, "true"...)
	}
	return append(b, '}'), nil
}

// maxDepth is the nesting below which values go through encoding/json,
// which reports a cycle where this encoder would recurse for ever.
const maxDepth = 100

// appendJSONMap appends m with its keys sorted, as encoding/json does.
func appendJSONMap(b []byte, m map[string]any, depth int) ([]byte, error) {
	if m == nil {
		return append(b, "null"...), nil
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		if b, err = appendJSONValue(b, m[k], depth+1); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendJSONValue appends v; types without a case here go through
// encoding/json.
func appendJSONValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return appendStdJSON(b, v)
	}
	switch t := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendJSONString(b, t), nil
	case bool:
		return strconv.AppendBool(b, t), nil
	case int:
		return strconv.AppendInt(b, int64(t), 10), nil
	case int64:
		return strconv.AppendInt(b, t, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(t), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(t), 10), nil
	case uint64:
		return strconv.AppendUint(b, t, 10), nil
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			break // encoding/json's error
		}
		return appendJSONFloat(b, t), nil
	case time.Time:
		// MarshalJSON is AppendText in quotes, with its allocation.
		j, err := t.AppendText(append(b, '"'))
		if err != nil {
			break // encoding/json's error, naming the type
		}
		return append(j, '"'), nil
	case map[string]any:
		return appendJSONMap(b, t, depth)
	case []any:
		if t == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		var err error
		for i, x := range t {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendJSONValue(b, x, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	return appendStdJSON(b, v)
}

// appendStdJSON appends encoding/json's encoding of v, HTML escaping off.
func appendStdJSON(b []byte, v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...), nil
}

// appendJSONFloat formats f as encoding/json does (ES6 number to string).
func appendJSONFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9
		n := len(b)
		if n-start >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does with HTML escaping off:
// invalid UTF-8 becomes U+FFFD, U+2028 and U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
