package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// newQueueFile creates a stopped gateway's queue at dir/queue.db with n
// pending records and dead dead letters in stream f.out.
func newQueueFile(t *testing.T, dir string, n, dead int) string {
	t.Helper()
	qp := filepath.Join(dir, "queue.db")
	s, err := queue.Open(qp, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	var entries []queue.Entry
	for i := range n + dead {
		entries = append(entries, queue.Entry{Stream: "f.out", Record: pipeline.Record{Key: fmt.Sprintf("P%d", i+1), ID: fmt.Sprintf("m%d", i+1), Fields: map[string]any{"q": i + 1}}})
	}
	if len(entries) > 0 {
		if _, err := s.Append(ctx, entries); err != nil {
			t.Fatal(err)
		}
	}
	var dl []queue.Dead
	for i := range dead {
		dl = append(dl, queue.Dead{Seq: uint64(n + i + 1), Reason: fmt.Sprintf("rejected %d", i+1)})
	}
	if len(dl) > 0 {
		if err := s.DeadLetter(ctx, "f.out", dl); err != nil {
			t.Fatal(err)
		}
	}
	return qp
}

// TestQueueMissingFileNotCreated: a mistyped --queue path, or a data_dir
// without a queue, is refused with the path named, and nothing is created.
func TestQueueMissingFileNotCreated(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "typo", "queue.db")
	missingHere := filepath.Join(dir, "queu.db")
	emptyDataDir := filepath.Join(dir, "data")
	if err := os.Mkdir(emptyDataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf(goodConfig, emptyDataDir))
	for _, sub := range [][]string{{"stats"}, {"list", "--stream", "f.out"}, {"dead"}, {"check"}, {"compact"},
		{"replay", "--stream", "f.out"}, {"purge", "--stream", "f.out", "--all", "--yes"}} {
		for _, p := range []string{missing, missingHere} {
			args := append([]string{"queue"}, sub...)
			args = append(args, "--queue", p)
			code, out, errOut := runCLI(args...)
			if code != exitFailure || !strings.Contains(errOut, p) || !strings.Contains(errOut, "no queue file") {
				t.Errorf("%v: exit %d, want 1 naming %s\n%s%s", args, code, p, out, errOut)
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%v created %s", args, p)
			}
		}
		args := append([]string{"queue"}, sub...)
		args = append(args, "-c", cfg)
		want := filepath.Join(emptyDataDir, "queue.db")
		code, out, errOut := runCLI(args...)
		if code != exitFailure || !strings.Contains(errOut, want) || !strings.Contains(errOut, "gateway.data_dir") {
			t.Errorf("%v: exit %d, want 1 naming %s and gateway.data_dir\n%s%s", args, code, want, out, errOut)
		}
		if _, err := os.Stat(want); !os.IsNotExist(err) {
			t.Errorf("%v created %s", args, want)
		}
	}
	// A directory given as the queue file is refused too.
	if code, _, errOut := runCLI("queue", "stats", "--queue", dir); code != exitFailure || !strings.Contains(errOut, dir) {
		t.Errorf("--queue DIR: exit %d %s", code, errOut)
	}
}

// TestQueueDeadLimitSaysMore: when --limit cuts the list of dead letters
// (or pending records), the text output says so and how to see the rest.
func TestQueueDeadLimitSaysMore(t *testing.T) {
	dir := t.TempDir()
	qp := newQueueFile(t, dir, 3, 3)
	code, out, errOut := runCLI("queue", "dead", "--queue", qp, "--limit", "2")
	if code != exitOK || strings.Count(out, "rejected ") != 2 {
		t.Fatalf("dead --limit 2: %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "more dead letters in f.out") || !strings.Contains(out, "--limit 0") || !strings.Contains(out, "--after 2") {
		t.Errorf("dead --limit 2 does not say the list was cut:\n%s", out)
	}
	for _, lim := range []string{"0", "3", "50"} {
		code, out, _ := runCLI("queue", "dead", "--queue", qp, "--limit", lim)
		if code != exitOK || strings.Count(out, "rejected ") != 3 || strings.Contains(out, "more dead letters") {
			t.Errorf("dead --limit %s: %d\n%s", lim, code, out)
		}
	}
	// --after continues where the note says (dead letters have their own sequence).
	code, out, _ = runCLI("queue", "dead", "--queue", qp, "--limit", "2", "--after", "2")
	if code != exitOK || !strings.Contains(out, "rejected 3") || strings.Contains(out, "more dead letters") {
		t.Errorf("dead --after 2: %d\n%s", code, out)
	}
	// JSON stays a plain array of at most --limit per stream; the note goes to stderr.
	code, out, errOut = runCLI("queue", "dead", "--queue", qp, "--limit", "2", "--json")
	var arr []map[string]any
	if code != exitOK || json.Unmarshal([]byte(out), &arr) != nil || len(arr) != 2 {
		t.Errorf("dead --json --limit 2: %d %q", code, out)
	}
	if !strings.Contains(errOut, "more dead letters in f.out") {
		t.Errorf("dead --json --limit 2: no note on stderr: %q", errOut)
	}
	// list says so too.
	code, out, _ = runCLI("queue", "list", "--queue", qp, "--stream", "f.out", "--limit", "2")
	if code != exitOK || strings.Count(out, "key=") != 2 || !strings.Contains(out, "more records in f.out") || !strings.Contains(out, "--after 2") {
		t.Errorf("list --limit 2: %d\n%s", code, out)
	}
	code, out, _ = runCLI("queue", "list", "--queue", qp, "--stream", "f.out", "--limit", "0")
	if code != exitOK || strings.Count(out, "key=") != 3 || strings.Contains(out, "more records") {
		t.Errorf("list --limit 0: %d\n%s", code, out)
	}
	if code, _, errOut := runCLI("queue", "dead", "--queue", qp, "--limit", "-1"); code != exitUsage {
		t.Errorf("--limit -1: exit %d, want 2 %s", code, errOut)
	}
	// The usage text documents --limit 0.
	_, out, _ = runCLI("queue", "--help")
	if !strings.Contains(out, "--limit 0") {
		t.Errorf("queue --help does not document --limit 0:\n%s", out)
	}
	_, out, _ = runCLI("queue", "dead", "--help")
	if !strings.Contains(out, "0 for all") {
		t.Errorf("queue dead --help does not document --limit 0:\n%s", out)
	}
}

// TestQueueJSONEmptyIsArray: --json prints [] for an empty list.
func TestQueueJSONEmptyIsArray(t *testing.T) {
	dir := t.TempDir()
	qp := newQueueFile(t, dir, 1, 0)
	for _, args := range [][]string{
		{"dead"}, {"dead", "--stream", "f.out"}, {"list", "--stream", "f.out", "--after", "1"},
	} {
		args = append(append([]string{"queue"}, args...), "--queue", qp, "--json")
		code, out, errOut := runCLI(args...)
		if code != exitOK || strings.TrimSpace(out) != "[]" {
			t.Errorf("%v: %d %q %s, want []", args, code, out, errOut)
		}
	}
	// A queue with no streams at all.
	empty := newQueueFile(t, t.TempDir(), 0, 0)
	if code, out, _ := runCLI("queue", "dead", "--queue", empty, "--json"); code != exitOK || strings.TrimSpace(out) != "[]" {
		t.Errorf("dead on an empty queue: %d %q, want []", code, out)
	}
	code, out, _ := runCLI("queue", "stats", "--queue", empty, "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); code != exitOK || err != nil {
		t.Fatalf("stats --json: %d %v %q", code, err, out)
	}
	if l, ok := st["streams"].([]any); !ok || len(l) != 0 {
		t.Errorf("stats --json on an empty queue: streams = %#v, want []", st["streams"])
	}
}

// TestHelpNeedsNoConfig: help works without a config; an unknown queue
// subcommand is a usage error before any config is read.
func TestHelpNeedsNoConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, args := range [][]string{
		{"queue", "--help"}, {"queue", "-h"}, {"queue", "help"},
		{"queue", "stats", "--help"}, {"queue", "dead", "-h"}, {"queue", "list", "--stream", "x", "--help"},
		{"queue", "release", "--help"}, {"queue", "in-doubt", "-h"},
		{"check-config", "--help"}, {"check-config", "-h"}, {"run", "--help"},
		{"queue", "stats", "-c", missing, "--help"},
	} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || !strings.Contains(out, "Usage") || strings.Contains(errOut, "config") {
			t.Errorf("%v: exit %d, want 0 with usage on stdout\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
	}
	for _, args := range [][]string{{"queue", "frobnicate"}, {"queue", "frobnicate", "-c", missing}} {
		code, _, errOut := runCLI(args...)
		if code != exitUsage || !strings.Contains(errOut, `unknown subcommand "frobnicate"`) || !strings.Contains(errOut, "stats") ||
			strings.Contains(errOut, "missing.yaml") || strings.Contains(errOut, "config problem") {
			t.Errorf("%v: exit %d, want 2 naming the subcommand before any config\n%s", args, code, errOut)
		}
	}
	// A bad flag is still a usage error, reported on stderr.
	if code, _, errOut := runCLI("queue", "stats", "--frob"); code != exitUsage || !strings.Contains(errOut, "frob") {
		t.Errorf("bad flag: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("check-config", "--frob"); code != exitUsage || !strings.Contains(errOut, "frob") {
		t.Errorf("check-config bad flag: exit %d %q", code, errOut)
	}
}

const secretRefConfig = `gateway:
  id: t
  data_dir: %s
http:
  listen: "127.0.0.1:0"
  admin_token: ${env:PG_TEST_SURELY_UNSET_ADMIN_TOKEN}
fo:
  prod:
    url: https://contoso.operations.dynamics.com
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate
    client_secret: ${file:/nonexistent/plantgate/fo_secret}
    company: USMF
sources:
  in:
    type: file
    path: /dev/null
flows:
  f:
    from: in
    key: payload.order
    to: out
sinks:
  out:
    type: recorder
`

// TestQueueWithoutSecrets: queue commands need only the data dir, so a
// stopped gateway whose secrets are systemd credentials (readable only by
// the service) can be inspected; check-config still reports the secrets.
func TestQueueWithoutSecrets(t *testing.T) {
	dir := t.TempDir()
	newQueueFile(t, dir, 2, 1)
	cfg := writeConfig(t, fmt.Sprintf(secretRefConfig, dir))
	code, out, errOut := runCLI("queue", "stats", "-c", cfg)
	if code != exitOK || !strings.Contains(out, "f.out") {
		t.Fatalf("queue stats with unresolvable secrets: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI("queue", "dead", "-c", cfg); code != exitOK || !strings.Contains(out, "rejected 1") {
		t.Errorf("queue dead: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runCLI("check-config", "-c", cfg)
	if code != exitConfig || !strings.Contains(errOut, "${file:/nonexistent/plantgate/fo_secret}") || !strings.Contains(errOut, "PG_TEST_SURELY_UNSET_ADMIN_TOKEN") {
		t.Errorf("check-config: exit %d, want 78 naming both secrets\n%s", code, errOut)
	}
	// Other config problems still stop queue commands.
	bad := writeConfig(t, strings.Replace(fmt.Sprintf(secretRefConfig, dir), "  id: t\n", "  id: t\n  colour: blue\n", 1))
	if code, _, errOut := runCLI("queue", "stats", "-c", bad); code != exitConfig || !strings.Contains(errOut, "colour") {
		t.Errorf("queue stats with a bad config: exit %d\n%s", code, errOut)
	}
}

// TestQueueListJSONSnakeCase: list --json uses the snake_case names dead
// --json uses.
func TestQueueListJSONSnakeCase(t *testing.T) {
	dir := t.TempDir()
	qp := newQueueFile(t, dir, 1, 1)
	_, out, _ := runCLI("queue", "list", "--queue", qp, "--stream", "f.out", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("list --json: %v %q", err, out)
	}
	_, out, _ = runCLI("queue", "dead", "--queue", qp, "--json")
	var dead []map[string]any
	if err := json.Unmarshal([]byte(out), &dead); err != nil || len(dead) != 1 {
		t.Fatalf("dead --json: %v %q", err, out)
	}
	for k := range list[0] {
		if k != strings.ToLower(k) {
			t.Errorf("list --json key %q is not snake_case", k)
		}
	}
	for _, k := range []string{"stream", "seq", "key", "id", "fields"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("list --json lacks %q: %v", k, list[0])
		}
		if _, ok := dead[0][k]; !ok {
			t.Errorf("dead --json lacks %q: %v", k, dead[0])
		}
	}
	if list[0]["stream"] != "f.out" || list[0]["seq"] != float64(1) || list[0]["key"] != "P1" {
		t.Errorf("list --json values: %v", list[0])
	}
}
