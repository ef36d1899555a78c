package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestDecoders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       Options
		in      string
		want    string
		wantErr string
	}{
		{"json object", Options{}, `{"order":"P1","good":5,"qty":1.25,"big":12345678901234567}`, "map[big:12345678901234567 good:5 order:P1 qty:1.25]", ""},
		{"json trailing", Options{}, `{"a":1} x`, "", "json: trailing data after the value"},
		{"json empty", Options{}, ``, "", "json: empty payload"},
		{"json binary", Options{}, "\xff\xfe{}", "", "json: payload is not valid UTF-8 (binary data?)"},
		{"json bad", Options{}, `{"a":`, "", "json: unexpected EOF"},
		{"csv", Options{Format: "csv", CSVHeader: []string{"order", "qty"}}, "P1,3\n", "map[order:P1 qty:3]", ""},
		{"csv columns", Options{Format: "csv", CSVHeader: []string{"order", "qty"}}, "P1", "", "csv: 1 columns, header has 2"},
		{"csv semicolon", Options{Format: "csv", CSVHeader: []string{"a", "b"}, CSVDelimiter: ";"}, "x;y", "map[a:x b:y]", ""},
		{"raw", Options{Format: "raw"}, "hello", "hello", ""},
		{"too large", Options{MaxBytes: 3}, `{"a":1}`, "", "payload too large: 7 bytes, limit 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			v, err := d.Decode([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(v); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := New(Options{Format: "xml"}); err == nil {
		t.Fatal("unknown format accepted")
	}
	if _, err := New(Options{MaxBytes: 1}); err != nil {
		t.Fatal(err)
	}
	e := fmt.Errorf("x: %w", ErrTooLarge)
	if !errors.Is(e, ErrTooLarge) {
		t.Fatal("ErrTooLarge does not match")
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,2,{"b":null}]`, `1e400`, "P1,3", `"x"`, "\x00\xff", `{"a":{"b":[1.5,-2]}}`} {
		f.Add([]byte(s))
	}
	decs := []Decoder{}
	for _, o := range []Options{{}, {Format: "csv", CSVHeader: []string{"a", "b"}}, {Format: "raw"}, {MaxBytes: 64}} {
		d, err := New(o)
		if err != nil {
			f.Fatal(err)
		}
		decs = append(decs, d)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range decs {
			_, _ = d.Decode(b)
		}
		// A reused decoder gives what a fresh one gives, for b and for
		// each payload after it.
		p := jsonPool.New().(*pooledJSON)
		for _, raw := range append([][]byte{b}, []byte(`{"a":1}`), b, []byte("7")) {
			got, gerr := p.decode(raw)
			want, werr := freshDecode(raw)
			if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
				t.Fatalf("payload %q: pooled %#v, %v; fresh %#v, %v", raw, got, gerr, want, werr)
			}
			if gerr != nil {
				p = jsonPool.New().(*pooledJSON)
			}
		}
	})
}

// freshDecode is Decode on a decoder of its own: what the pooled
// decoders must match.
func freshDecode(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return decodeOne(dec)
}

// reuseCorpus is payloads of every kind, good and bad, with and without
// white space around them.
var reuseCorpus = []string{`{"a":1}`, ` {"b":[1,2.5,-3e2]} `, "7", `"s"`, "\n[1]\n", `null`, `{"big":12345678901234567890}`,
	`{"a":`, `{} {}`, ``, `   `, `{"x":"\u00e9"}`, `1 2`, `[`, `true`, `{"a":{"b":{"c":[{}]}}}`, "\t42\t"}

// A pooled decoder, reused for payload after payload (and dropped after
// an error, as Decode does), gives exactly what a fresh decoder gives for
// each: the same value or the same error.
func TestPooledJSONDecoderMatchesFresh(t *testing.T) {
	for start := range reuseCorpus {
		p := jsonPool.New().(*pooledJSON)
		for k := range reuseCorpus {
			raw := []byte(reuseCorpus[(start+k)%len(reuseCorpus)])
			got, gerr := p.decode(raw)
			want, werr := freshDecode(raw)
			if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
				t.Fatalf("payload %q after %d others: pooled %#v, %v; fresh %#v, %v", raw, k, got, gerr, want, werr)
			}
			if gerr != nil {
				p = jsonPool.New().(*pooledJSON)
			}
		}
	}
	// Through Decode and its pool: a decoder that saw an error (json
	// keeps it) never decodes the next payload.
	d, _ := New(Options{})
	for range 100 {
		if _, err := d.Decode([]byte(`{"a":`)); err == nil {
			t.Fatal("a cut payload decoded")
		}
		if v, err := d.Decode([]byte(`{"a":1}`)); err != nil || !reflect.DeepEqual(v, map[string]any{"a": int64(1)}) {
			t.Fatalf("a good payload after a bad one: %#v, %v", v, err)
		}
	}
}
