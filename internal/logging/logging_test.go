package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestJSONLinesAndComponent(t *testing.T) {
	var buf bytes.Buffer
	root, err := New(Options{Level: "debug", Format: FormatJSON, Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	log := Component(root, "runner", "fo.mes", "mes-finished")
	log.Info().Str(FieldStream, "f.s").Msg("batch delivered")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not a JSON line: %q", buf.String())
	}
	for k, want := range map[string]string{"component": "runner", "plugin": "fo.mes", "instance": "mes-finished", "stream": "f.s", "message": "batch delivered", "level": "info"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %s", k, m[k], want)
		}
	}
	if _, ok := m["time"]; !ok {
		t.Error("no time field")
	}
}

func TestLevels(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{{"", false}, {"info", false}, {"WARNING", false}, {"trace", false}, {"loud", true}} {
		if _, err := ParseLevel(tc.in); (err != nil) != tc.wantErr {
			t.Errorf("ParseLevel(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
		}
	}
	if _, err := New(Options{Format: "xml"}); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	s := NewSecret("hunter2-client-secret")
	var buf bytes.Buffer
	log, _ := New(Options{Format: FormatJSON, Writer: &buf})
	log.Info().Interface("cfg", struct{ Secret Secret }{s}).Stringer("s", s).Msg("x")
	outs := []string{buf.String(), fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)}
	b, _ := json.Marshal(map[string]any{"s": s})
	outs = append(outs, string(b))
	for _, o := range outs {
		if strings.Contains(o, "hunter2") {
			t.Errorf("secret leaked: %s", o)
		}
	}
	if s.Reveal() != "hunter2-client-secret" {
		t.Error("Reveal lost the value")
	}
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://acct.blob.core.windows.net/c/b.zip?sv=2024&sig=abc%2Bdef&se=2026", "https://acct.blob.core.windows.net/c/b.zip?sv=2024&sig=[REDACTED]&se=2026"},
		{"https://user:pw@host/x", "https://[REDACTED]@host/x"},
	} {
		if got := RedactURL(tc.in); got != tc.want && !strings.Contains(got, "REDACTED") {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(RedactURL(tc.in), "abc") || strings.Contains(RedactURL(tc.in), ":pw") {
			t.Errorf("RedactURL(%q) leaks: %q", tc.in, RedactURL(tc.in))
		}
	}
	err := errors.New(`Put "https://x/b?sig=SECRETSIG": dial tcp: refused`)
	if got := RedactText(err.Error()); strings.Contains(got, "SECRETSIG") {
		t.Errorf("RedactText leaks: %s", got)
	}
}
