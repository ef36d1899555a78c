package queue

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// stdEnvelope is encoding/json's encoding of e, which appendEnvelope must
// reproduce byte for byte.
func stdEnvelope(e *envelope) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

func checkSameAsStdlib(t *testing.T, e *envelope) {
	t.Helper()
	want, werr := stdEnvelope(e)
	got, gerr := appendEnvelope(nil, e)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("encoding/json error %v, appendEnvelope error %v", werr, gerr)
	}
	if werr == nil && !bytes.Equal(got, want) {
		t.Fatalf("differs from encoding/json:\n got %s\nwant %s", got, want)
	}
}

func TestEnvelopeEncodingMatchesStdlib(t *testing.T) {
	at := time.Date(2026, 12, 1, 14, 3, 4, 123456789, time.UTC)
	cases := map[string]*envelope{
		"empty": {},
		"record": {Key: "P000012", ID: "m1", Source: "mes", Flow: "f", Time: at.UnixNano(), Appended: at.UnixNano() + 1,
			Fields: map[string]any{"ProductionOrderNumber": "P000012", "Quantity": int64(12), "Scrap": 0.5, "Done": true, "Note": nil},
			Meta: map[string]any{"mqtt.topic": "mes/line/3", "mqtt.qos": 1, "mqtt.retained": false, "mqtt.received_at": at,
				"mqtt.message_id": 65535, "local": at.In(time.FixedZone("CET", 3600))}},
		"dead letter": {Source: "mes", Raw: []byte("{\"bad\"\x00\xff"), Reason: "decode: <&> \"quoted\"\n", DeadAt: -5, Attempts: 3, OrigSeq: math.MaxUint64, Remap: true},
		"strings":     {Key: "\u2028\u2029 <tag> & \t\b\f\r\x01\x1f \\ / é 日本 \xff\xfe", Fields: map[string]any{"\xff": "\xed\xa0\x80", "": ""}},
		"floats": {Fields: map[string]any{"a": 1e21, "b": 1e20, "c": 1e-6, "d": 1e-7, "e": math.Copysign(0, -1), "f": 123456789.125, "g": math.SmallestNonzeroFloat64,
			"h": math.MaxFloat64, "i": 5e-324, "j": 1.5e-9, "k": float32(0.1), "l": -1e-10}},
		"nested": {Fields: map[string]any{"l": []any{1, "x", []any{}, map[string]any{}, nil, []any(nil), map[string]any(nil)},
			"m": map[string]any{"z": 1, "a": map[string]any{"b": []any{true}}}}},
		"other types": {Fields: map[string]any{"n": json.Number("12.50"), "e": json.Number(""), "s": []string{"a", "<b>"}, "u": uint8(7),
			"p": &at, "ms": map[string]string{"b": "1", "a": "2"}, "raw": json.RawMessage(`{"x": 1}`), "by": []byte{0, 1}}},
		"nan":          {Fields: map[string]any{"x": math.NaN()}},
		"inf":          {Meta: map[string]any{"x": math.Inf(-1)}},
		"bad number":   {Fields: map[string]any{"x": json.Number("1e")}},
		"year 10000":   {Meta: map[string]any{"t": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		"unsupported":  {Fields: map[string]any{"c": make(chan int)}},
		"deep nesting": {Fields: deepMap(150)},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) { checkSameAsStdlib(t, e) })
	}
}

func deepMap(n int) map[string]any {
	m := map[string]any{"leaf": "x"}
	for i := range n {
		if i%2 == 0 {
			m = map[string]any{"d": m}
		} else {
			m = map[string]any{"l": []any{m, i}}
		}
	}
	return m
}

// FuzzEnvelopeEncodingMatchesStdlib: for any JSON the gateway could
// decode (numbers as int64/float64, as the codec gives them, or as
// json.Number, as stored records decode) and any strings, the envelope
// encoder writes exactly what encoding/json writes.
func FuzzEnvelopeEncodingMatchesStdlib(f *testing.F) {
	f.Add([]byte(`{"order":"P1","n":12,"q":1.5,"ok":true,"x":null,"l":[1,"a",{"b":2e30}]}`), "key", []byte("raw"))
	f.Add([]byte(`[1e-7, 123456789012345678901234567890, -0, "\u2028<>&"]`), "\xff\u2029", []byte{})
	f.Add([]byte(`"just a string"`), "", []byte{0xff})
	f.Fuzz(func(t *testing.T, doc []byte, s string, raw []byte) {
		for _, useNumber := range []bool{false, true} {
			dec := json.NewDecoder(bytes.NewReader(doc))
			if useNumber {
				dec.UseNumber()
			}
			var v any
			if dec.Decode(&v) != nil {
				v = string(doc)
			}
			checkSameAsStdlib(t, &envelope{Key: s, ID: s, Raw: raw, Reason: s,
				Fields: map[string]any{"v": v, s: s}, Meta: map[string]any{"int": int64(len(doc)), "f": float64(len(s)) / 3}})
		}
	})
}
