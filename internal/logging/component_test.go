package logging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
)

// jsonKeys returns the top-level keys of one JSON object line, in order and
// with repeats (encoding/json into a map would hide a repeat).
func jsonKeys(t *testing.T, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
	}
	return keys
}

// assertNoDuplicateKeys checks every line written to buf.
func assertNoDuplicateKeys(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var events []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		seen := map[string]bool{}
		for _, k := range jsonKeys(t, sc.Bytes()) {
			if seen[k] {
				t.Errorf("key %q repeated in %s", k, sc.Bytes())
			}
			seen[k] = true
		}
		var m map[string]any
		_ = json.Unmarshal(sc.Bytes(), &m)
		events = append(events, m)
	}
	if len(events) == 0 {
		t.Fatal("nothing logged")
	}
	return events
}

// TestComponentNestedNoDuplicateKeys builds the loggers the way the gateway
// does: the app hands the F&O registry a component logger and the registry
// derives each environment's logger from it with Component again, which
// used to write "component":"fo" twice on every line.
func TestComponentNestedNoDuplicateKeys(t *testing.T) {
	var buf bytes.Buffer
	root, err := New(Options{Level: "debug", Format: FormatJSON, Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	foLog := Component(root, "fo", "", "")       // internal/app: d365.Options.Log
	envLog := Component(foLog, "fo", "", "prod") // internal/d365: Registry.Env
	sinkLog := Component(root, "sink", "fo.mes", "mes")
	again := Component(sinkLog, "sink", "fo.mes", "mes")
	runner := Component(root, "runner", "fo.mes", "mes").With().Str(FieldFlow, "finished").Str(FieldStream, "finished.mes").Logger()
	other := Component(envLog, "tracker", "", "prod") // a parent's field is kept, never repeated

	envLog.Warn().Str(FieldReason, "503").Msg("circuit opened")
	foLog.Info().Msg("registry")
	again.Info().Str(FieldSink, "mes").Msg("sink")
	runner.Info().Int(FieldRecords, 3).Msg("batch delivered")
	other.Info().Msg("tracker")
	events := assertNoDuplicateKeys(t, &buf)
	if len(events) != 5 {
		t.Fatalf("%d events, want 5", len(events))
	}
	want := []map[string]any{
		{"component": "fo", "instance": "prod", "reason": "503"},
		{"component": "fo"},
		{"component": "sink", "plugin": "fo.mes", "instance": "mes", "sink": "mes"},
		{"component": "runner", "plugin": "fo.mes", "instance": "mes", "flow": "finished", "stream": "finished.mes"},
		{"component": "fo", "instance": "prod"},
	}
	for i, w := range want {
		for k, v := range w {
			if events[i][k] != v {
				t.Errorf("event %d: %s = %v, want %v (%v)", i, k, events[i][k], v, events[i])
			}
		}
	}
	if _, ok := events[1]["instance"]; ok {
		t.Errorf("the registry's logger got an environment's instance: %v", events[1])
	}
}

// TestComponentConsoleAndDisabledParents: Component works on a console
// logger and on a disabled one without writing to their outputs.
func TestComponentConsoleAndDisabledParents(t *testing.T) {
	var buf bytes.Buffer
	root, err := New(Options{Format: FormatConsole, Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	l := Component(Component(root, "fo", "", ""), "fo", "", "prod")
	if buf.Len() != 0 {
		t.Errorf("Component wrote to the parent's output: %q", buf.String())
	}
	l.Info().Msg("x")
	if got := buf.String(); bytes.Count([]byte(got), []byte("component=")) != 1 {
		t.Errorf("console line %q, want component once", got)
	}
	nop := Component(zerolog.Nop(), "fo", "", "prod")
	nop.Error().Msg("dropped") // must not panic or write
	var jbuf bytes.Buffer
	quiet := zerolog.New(&jbuf).Level(zerolog.ErrorLevel)
	q := Component(Component(quiet, "queue", "", ""), "queue", "", "")
	if jbuf.Len() != 0 {
		t.Errorf("Component wrote to a quiet parent's output: %q", jbuf.String())
	}
	q.Error().Msg("x")
	assertNoDuplicateKeys(t, &jbuf)
}
