package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/pipeline"
	_ "github.com/plantgate/plantgate/plugins/all"
	"github.com/plantgate/plantgate/plugins/outputs"
)

const testConfig = `
gateway:
  id: test-line
  data_dir: %[1]s
  drain_timeout: 2s
http:
  listen: 127.0.0.1:0
  admin_token: ${env:PG_TEST_ADMIN_TOKEN}
sources:
  mes:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 20ms
flows:
  finished:
    from: mes
    when: payload.type == "finished"
    key: payload.order
    id: payload.id
    to: trace
    map:
      ProductionOrderNumber: payload.order
      Good: payload.good
sinks:
  trace:
    type: recorder
    path: %[1]s/trace.jsonl
    max_batch: 10
`

const adminToken = "s3cret-admin-token-value"

func startApp(t *testing.T, dir string) (*App, context.CancelFunc, chan error) {
	t.Helper()
	return startAppWith(t, dir, fmt.Sprintf(testConfig, dir))
}

func startAppWith(t *testing.T, dir, body string) (*App, context.CancelFunc, chan error) {
	t.Helper()
	t.Setenv("PG_TEST_ADMIN_TOKEN", adminToken)
	path := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, flows, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	a := New(cfg, flows, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "http listening", func() bool { return a.HTTPAddr() != nil })
	return a, cancel, done
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		_ = backoff.Wait(context.Background(), 10*time.Millisecond)
	}
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func traceLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGatewayEndToEnd(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	appendLines(t, in,
		`{"type":"finished","order":"P1","good":5,"id":"m1"}`,
		`{"type":"finished","order":"P1","good":6,"id":"m2"}`,
		`{"type":"finished","order":"P1","good":5,"id":"m1"}`, // redelivery: dropped by id
		`{"type":"started","order":"P2","id":"m3"}`,           // no flow matches
		`not json`,
		`{"type":"finished","order":"P3","id":"m4"}`, // good missing: dead letter
	)
	a, cancel, done := startApp(t, dir)
	base := "http://" + a.HTTPAddr().String()
	trace := filepath.Join(dir, "trace.jsonl")
	eventually(t, "two records delivered", func() bool { return len(traceLines(t, trace)) == 2 })

	code, body := get(t, base+"/healthz", "")
	if code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	code, body = get(t, base+"/readyz", "")
	if code != 200 || !strings.Contains(body, `"ready": true`) {
		t.Errorf("/readyz = %d %s", code, body)
	}
	// The recorder writes a record before the runner acks and counts it.
	eventually(t, "the delivery counted", func() bool {
		_, body = get(t, base+"/metrics", "")
		return strings.Contains(body, `plantgate_sink_delivered_total{stream="finished.trace"} 2`)
	})
	for _, want := range []string{`plantgate_sink_delivered_total{stream="finished.trace"} 2`, `plantgate_queue_dead_records{stream="_source.mes"} 2`,
		`plantgate_queue_duplicates_total{stream="finished.trace"} 1`, `plantgate_source_unmatched_total{source="mes"} 1`, `plantgate_component_up{component="sink",instance="trace",type="recorder"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	code, body = get(t, base+"/api/v1/status", "")
	if code != 200 || !strings.Contains(body, `"gateway": "test-line"`) || !strings.Contains(body, "_source.mes has 2 dead letters") {
		t.Errorf("/api/v1/status = %d %s", code, body)
	}
	code, page := get(t, base+"/", "")
	if code != 200 || !strings.Contains(page, "finished.trace") {
		t.Errorf("status page = %d", code)
	}
	for name, b := range map[string]string{"status": body, "page": page} {
		if strings.Contains(b, adminToken) {
			t.Errorf("%s leaks the admin token", name)
		}
	}

	// Admin API: token required.
	if code, _ := get(t, base+"/api/v1/admin/dead?stream=_source.mes", ""); code != 401 {
		t.Errorf("admin without token = %d, want 401", code)
	}
	if code, _ := get(t, base+"/api/v1/admin/dead?stream=_source.mes", "wrong"); code != 401 {
		t.Errorf("admin with a wrong token = %d, want 401", code)
	}
	code, body = get(t, base+"/api/v1/admin/dead?stream=_source.mes", adminToken)
	if code != 200 || !strings.Contains(body, "not json") || !strings.Contains(body, "map.Good") {
		t.Errorf("admin dead = %d %s", code, body)
	}
	if code, body := post(t, base+"/api/v1/admin/purge", adminToken, `{"stream":"_source.mes","seqs":[1]}`); code != 400 || !strings.Contains(body, "confirm") {
		t.Errorf("purge without confirm = %d %s, want 400 asking for confirm", code, body)
	}
	code, body = post(t, base+"/api/v1/admin/purge", adminToken, `{"stream":"_source.mes","seqs":[1],"confirm":true}`)
	if code != 200 || !strings.Contains(body, `"purged": 1`) {
		t.Errorf("admin purge = %d %s", code, body)
	}

	// More lines while running, then a restart: the file offset resumes
	// after the last committed line, nothing read twice.
	appendLines(t, in, `{"type":"finished","order":"P1","good":7,"id":"m5"}`)
	eventually(t, "third record", func() bool { return len(traceLines(t, trace)) == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	appendLines(t, in, `{"type":"finished","order":"P1","good":8,"id":"m6"}`)
	_, cancel, done = startApp(t, dir)
	eventually(t, "fourth record", func() bool { return len(traceLines(t, trace)) == 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	var goods []string
	for _, l := range traceLines(t, trace) {
		f := l["fields"].(map[string]any)
		goods = append(goods, fmt.Sprint(f["Good"]))
	}
	if got := strings.Join(goods, ","); got != "5,6,7,8" {
		t.Errorf("delivered goods %s, want 5,6,7,8 (in order, once each)", got)
	}
}

// probeSink is a sink whose peer goes away and comes back.
type probeSink struct{ down atomic.Bool }

func (p *probeSink) Write(context.Context, []pipeline.Record) error { return nil }
func (p *probeSink) Probe(context.Context) error {
	if p.down.Load() {
		return errors.New("connect to F&O: connection refused")
	}
	return nil
}

var theProbeSink = &probeSink{}

func init() {
	outputs.Add(pipeline.SinkFactory{Type: "test.probe", NewConfig: func() any { return &struct{}{} },
		New: func(any, pipeline.Env) (pipeline.Sink, error) { return theProbeSink, nil }})
}

func TestReadinessFollowsProbes(t *testing.T) {
	dir := t.TempDir()
	appendLines(t, filepath.Join(dir, "in.jsonl"), `{"type":"other"}`)
	body := strings.Replace(fmt.Sprintf(testConfig, dir), "    type: recorder\n    path: "+dir+"/trace.jsonl\n", "    type: test.probe\n", 1)
	t.Setenv("PG_TEST_ADMIN_TOKEN", adminToken)
	cfg, flows, err := func() (*config.Config, []*flow.Flow, error) {
		p := filepath.Join(dir, "p.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p)
	}()
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, flows, zerolog.Nop())
	a.probeInterval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	eventually(t, "http", func() bool { return a.HTTPAddr() != nil })
	url := "http://" + a.HTTPAddr().String() + "/readyz"
	eventually(t, "ready", func() bool { c, _ := get(t, url, ""); return c == 200 })
	theProbeSink.down.Store(true)
	eventually(t, "not ready while the peer is down", func() bool {
		c, b := get(t, url, "")
		return c == 503 && strings.Contains(b, "connection refused")
	})
	theProbeSink.down.Store(false)
	eventually(t, "ready again", func() bool { c, _ := get(t, url, ""); return c == 200 })
}

// TestReplayAfterConfigFix dead-letters a message the flow cannot map,
// fixes the flow, replays the dead letter through the admin API, and finds
// it delivered: a source's dead letters are replayable after a fix.
func TestReplayAfterConfigFix(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	trace := filepath.Join(dir, "trace.jsonl")
	appendLines(t, in, `{"type":"finished","order":"P9","id":"x9"}`) // no good
	a, cancel, done := startApp(t, dir)
	eventually(t, "the dead letter", func() bool {
		st, _ := a.store.Stats()
		return st.Dead == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(fmt.Sprintf(testConfig, dir), "Good: payload.good", "Good: payload.good ?? 0", 1)
	a, cancel, done = startAppWith(t, dir, fixed)
	base := "http://" + a.HTTPAddr().String()
	code, body := post(t, base+"/api/v1/admin/replay", adminToken, `{"stream":"_source.mes"}`)
	if code != 200 || !strings.Contains(body, `"replayed": 1`) {
		t.Fatalf("replay = %d %s", code, body)
	}
	eventually(t, "the replayed message delivered", func() bool { return len(traceLines(t, trace)) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l := traceLines(t, trace)[0]
	if f := l["fields"].(map[string]any); f["ProductionOrderNumber"] != "P9" || fmt.Sprint(f["Good"]) != "0" {
		t.Fatalf("delivered %v", f)
	}
	st, _ := a.store.Stats()
	if st.Dead != 0 || st.Records != 0 {
		t.Fatalf("after replay: %d dead, %d pending; want 0 and 0", st.Dead, st.Records)
	}
}
