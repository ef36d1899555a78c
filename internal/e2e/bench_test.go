package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// benchConfig: an MQTT source into a recorder sink whose flow starts
// paused, so the figures are the gateway's own (ingest, memory, start).
const benchConfig = `gateway:
  id: bench
  data_dir: %[1]s
  drain_timeout: 2s
http: {listen: "127.0.0.1:0", admin_token: "${env:E2E_ADMIN_TOKEN}"}
sources:
  mes:
    type: mqtt
    broker: tcp://%[2]s
    client_id: plantgate-bench
    topics: [mes/#]
flows:
  f:
    from: mes
    key: payload.order
    id: payload.id
    to: trace
    map:
      ProductionOrderNumber: payload.order
      Quantity: payload.n
sinks:
  trace:
    type: recorder
    path: %[1]s/trace.jsonl
`

// rssMB reads a process's resident set (VmRSS) or its peak (VmHWM).
func rssMB(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// notifyListener collects READY=1 notifications.
func notifyListener(b testing.TB) (string, chan struct{}) {
	dir, err := os.MkdirTemp("", "pg-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "n.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	ready := make(chan struct{}, 8)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := l.ReadFromUnix(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- struct{}{}
			}
		}
	}()
	return path, ready
}

func benchGateway(b *testing.B, dir string, br *broker, env ...string) *proc {
	bin, _ := binaries(b)
	cfg := filepath.Join(b.TempDir(), "plantgate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(benchConfig, dir, br.addr())), 0o600); err != nil {
		b.Fatal(err)
	}
	p := newProc(b, "plantgate", bin, "run", "-c", cfg, "--log-level", "warn")
	p.env = append([]string{"E2E_ADMIN_TOKEN=" + adminToken}, env...)
	return p
}

// BenchmarkGatewayFootprint reports the binary's size, the gateway's idle
// RSS, and its peak RSS while it takes MQTT messages as fast as mosquitto
// delivers them (the flow paused, so every message stays queued).
func BenchmarkGatewayFootprint(b *testing.B) {
	bin, _ := binaries(b)
	br := startMosquittoWith(b, false)
	dir := b.TempDir()
	sock, ready := notifyListener(b)
	p := benchGateway(b, dir, br, "NOTIFY_SOCKET="+sock, os.Getenv("PG_BENCH_ENV"))
	pauseFlow(b, dir)
	p.start()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		b.Fatalf("not ready:\n%s", p.tail())
	}
	pid := p.cmd.Process.Pid
	time.Sleep(2 * time.Second)
	idle := rssMB(pid, "VmRSS")
	pub := newPublisher(b, br)
	b.ResetTimer()
	n := b.N
	if n < 1000 {
		n = 100000
	}
	start := time.Now()
	// QoS 1 with up to 2000 publishes unacknowledged: as fast as the
	// broker takes them.
	window := make(chan mqtt.Token, 2000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for tok := range window {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				b.Errorf("publish: %v", tok.Error())
			}
		}
	}()
	for i := 1; i <= n; i++ {
		window <- pub.c.Publish(fmt.Sprintf("mes/line/%d", i%16), 1, false, fmt.Appendf(nil, `{"order":"P%06d","n":%d,"id":"m%d"}`, i%16, i, i))
	}
	close(window)
	<-done
	peak := 0.0
	for time.Since(start) < 2*time.Minute {
		peak = max(peak, rssMB(pid, "VmRSS"))
		st, err := os.ReadFile(filepath.Join(dir, "api.url"))
		if err == nil && queued(b, strings.TrimSpace(string(st))) >= int64(n) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	fi, _ := os.Stat(bin)
	b.ReportMetric(float64(fi.Size())/1e6, "binary-MB")
	b.ReportMetric(idle, "idle-RSS-MB")
	b.ReportMetric(max(peak, rssMB(pid, "VmHWM")), "ingest-peak-RSS-MB")
	b.ReportMetric(float64(n)/took.Seconds(), "ingest-msg/s")
	p.stop()
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func newAuthedRequest(url string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err == nil {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	return req, err
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

func queued(b testing.TB, base string) int64 {
	req, _ := newAuthedRequest(base + "/api/v1/status")
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st status
	_ = decodeJSON(resp.Body, &st)
	return st.Queue.Records
}

// BenchmarkReadyWith1MQueued is the time from exec to READY=1 with a
// million records queued, beside the same with an empty queue.
func BenchmarkReadyWith1MQueued(b *testing.B) {
	br := startMosquittoWith(b, false)
	empty, full := b.TempDir(), b.TempDir()
	s, err := queue.Open(filepath.Join(full, "queue.db"), queue.Options{NoSync: true, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	const total, per = 1_000_000, 5000
	for i := 0; i < total; i += per {
		es := make([]queue.Entry, per)
		for j := range es {
			k := i + j
			es[j] = queue.Entry{Stream: "f.trace", Record: pipeline.Record{Key: fmt.Sprintf("P%06d", k%64), Source: "mes",
				Fields: map[string]any{"ProductionOrderNumber": fmt.Sprintf("P%06d", k%64), "Quantity": k}}}
		}
		if _, err := s.Append(context.Background(), es); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	measure := func(dir string) time.Duration {
		sock, ready := notifyListener(b)
		p := benchGateway(b, dir, br, "NOTIFY_SOCKET="+sock)
		// The flow is paused so nothing drains while we measure.
		pauseFlow(b, dir)
		start := time.Now()
		p.start()
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			b.Fatalf("not ready:\n%s", p.tail())
		}
		d := time.Since(start)
		p.stop()
		return d
	}
	var withFull, withEmpty time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		withEmpty += measure(empty)
		withFull += measure(full)
	}
	b.ReportMetric(float64(withFull.Milliseconds())/float64(b.N), "ready-1M-ms")
	b.ReportMetric(float64(withEmpty.Milliseconds())/float64(b.N), "ready-empty-ms")
}

// pauseFlow marks flow f paused in the queue file, as the admin API does.
func pauseFlow(b testing.TB, dir string) {
	s, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Scope("_admin").Put(context.Background(), "paused/f", []byte("bench")); err != nil {
		b.Fatal(err)
	}
}
