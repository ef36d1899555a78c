package d365

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDecodeEvents(t *testing.T) {
	evs, err := DecodeEvents([]byte("\xef\xbb\xbf" + `[{"EventId":"a","ControlNumber":5,"Q":1.5},{"EventId":"b"}]`))
	if err != nil || len(evs) != 2 {
		t.Fatalf("%v %v", evs, err)
	}
	if evs[0].Payload["ControlNumber"] != int64(5) || evs[0].Payload["Q"] != 1.5 || string(evs[1].Raw) != `{"EventId":"b"}` {
		t.Fatalf("%#v", evs)
	}
	for _, bad := range []string{"", "[]", "[1]", "null", `{"a":1} {"b":2}`, `{"a":`, `"x"`} {
		if _, err := DecodeEvents([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

func TestParseEventTime(t *testing.T) {
	want := time.UnixMilli(1764240678000).UTC()
	for _, v := range []any{"/Date(1764240678000)/", "/Date(1764240678000+0000)/", want.Format(time.RFC3339Nano), int64(1764240678000), float64(1764240678000)} {
		if got, ok := ParseEventTime(v); !ok || !got.Equal(want) {
			t.Errorf("%v: %v %v", v, got, ok)
		}
	}
	for _, v := range []any{"yesterday", nil, "/Date(x)/", 1e300} {
		if _, ok := ParseEventTime(v); ok {
			t.Errorf("%v parsed", v)
		}
	}
}

// The fingerprint ignores key order and spacing, not values, types or
// companies.
func TestMessageFingerprint(t *testing.T) {
	a := MessageFingerprint("ProdProductionOrderStart", "usmf", `{"ProductionOrderNumber":"P1","StartedQuantity":5}`)
	if b := MessageFingerprint("ProdProductionOrderStart", "USMF", `{ "StartedQuantity": 5, "ProductionOrderNumber": "P1" }`); a != b {
		t.Fatal("same document, different fingerprint")
	}
	for _, o := range [][3]string{
		{"ProdProductionOrderStart", "USMF", `{"ProductionOrderNumber":"P1","StartedQuantity":5.0}`},
		{"ProdProductionOrderStart", "DEMF", `{"ProductionOrderNumber":"P1","StartedQuantity":5}`},
		{"ProdProductionOrderEnd", "USMF", `{"ProductionOrderNumber":"P1","StartedQuantity":5}`},
		{"ProdProductionOrderStart", "USMF", `{"ProductionOrderNumber":"P2","StartedQuantity":5}`},
	} {
		if MessageFingerprint(o[0], o[1], o[2]) == a {
			t.Errorf("%v has the same fingerprint", o)
		}
	}
}

// FuzzDecodeEvents: any input either fails or gives objects whose raw
// bytes decode again to the same payload.
func FuzzDecodeEvents(f *testing.F) {
	for _, s := range []string{`{"EventId":"x","EventTime":"/Date(1)/"}`, `[{"a":1},{"b":[1,2,{"c":null}]}]`, `[`, `{"a":1e400}`, "\xef\xbb\xbf{}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := DecodeEvents(b)
		if err != nil {
			return
		}
		if len(evs) == 0 {
			t.Fatal("no events and no error")
		}
		for _, e := range evs {
			if e.Payload == nil {
				t.Fatal("nil payload")
			}
			again, err := DecodeEvents(e.Raw)
			if err != nil || len(again) != 1 {
				t.Fatalf("raw %q does not decode again: %v", e.Raw, err)
			}
			a, _ := json.Marshal(e.Payload)
			c, _ := json.Marshal(again[0].Payload)
			if string(a) != string(c) {
				t.Fatalf("payload changed: %s vs %s", a, c)
			}
			_, _ = ParseEventTime(e.Payload["EventTime"])
		}
	})
}
