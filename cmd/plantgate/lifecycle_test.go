package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const lifecycleConfig = `gateway:
  id: %[2]s
  data_dir: %[1]s
  drain_timeout: 1s
http: {listen: "127.0.0.1:0"}
sources:
  mes:
    type: file
    path: "-"
flows:
  finished:
    from: mes
    key: payload.order
    to: trace
    map:
      ProductionOrderNumber: payload.order
sinks:
  trace:
    type: recorder
    path: %[1]s/trace.jsonl
`

// notifySocket collects what the gateway tells systemd.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	// Unix socket paths are short: not under t.TempDir.
	dir, err := os.MkdirTemp("", "pg-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "n.sock")}
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := l.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

type gatewayProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan error
	dir    string
	stderr *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startGatewayProc(t *testing.T, bin, cfgPath, dir string, env ...string) *gatewayProc {
	t.Helper()
	cmd := exec.Command(bin, "run", "-c", cfgPath, "--log-format", "json")
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &gatewayProc{cmd: cmd, stdin: stdin, done: make(chan error, 1), dir: dir, stderr: &syncBuf{}}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *gatewayProc) api(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dir, "api.url"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}

// TestSIGTERMBoundWithStdinSource: a gateway reading standard input that
// stays open (a terminal, a pipe nobody closes) stops on SIGTERM within
// drain_timeout (1 s here) plus process start-up slack, exits 0, and has
// told systemd READY, WATCHDOG and STOPPING; what it read is delivered.
func TestSIGTERMBoundWithStdinSource(t *testing.T) {
	bin := plantgateBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(lifecycleConfig, dir, "line-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := newNotifySocket(t)
	p := startGatewayProc(t, bin, cfgPath, dir, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=200000")
	waitUntil(t, 10*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
	waitUntil(t, 2*time.Second, "WATCHDOG=1 pings", func() bool { return ns.count("WATCHDOG=1") >= 2 })
	fmt.Fprintln(p.stdin, `{"order":"P1"}`)
	fmt.Fprintln(p.stdin, `{"order":"P2"}`)
	waitUntil(t, 5*time.Second, "two records delivered", func() bool { return lines(filepath.Join(dir, "trace.jsonl")) == 2 })
	// stdin stays open: the source is blocked in a read.
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		took := time.Since(start)
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
		}
		if took > 2500*time.Millisecond {
			t.Errorf("stopping took %s with drain_timeout 1s", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the gateway did not stop within 15 s of SIGTERM\n%s", p.stderr.String())
	}
	if ns.count("STOPPING=1") != 1 {
		t.Errorf("STOPPING=1 sent %d times", ns.count("STOPPING=1"))
	}
}

// TestSIGHUPKeepsRunningOnBrokenConfig: a reload with a broken file keeps
// the running config and shows the reload error in status and /readyz; a
// fixed, changed file is then applied (RELOADING, then READY again) and
// the error is gone.
func TestSIGHUPKeepsRunningOnBrokenConfig(t *testing.T) {
	bin := plantgateBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	write := func(body string) {
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf(lifecycleConfig, dir, "line-1"))
	ns := newNotifySocket(t)
	p := startGatewayProc(t, bin, cfgPath, dir, "NOTIFY_SOCKET="+ns.path)
	waitUntil(t, 10*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 && p.api(t) != "" })
	status := func() (gateway, state string, reasons string) {
		resp, err := http.Get(p.api(t) + "/api/v1/status")
		if err != nil {
			return "", "", err.Error()
		}
		defer resp.Body.Close()
		var st struct {
			Gateway string
			Health  struct {
				State   string
				Reasons []struct{ Why string }
			}
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		var rs []string
		for _, r := range st.Health.Reasons {
			rs = append(rs, r.Why)
		}
		return st.Gateway, st.Health.State, strings.Join(rs, "\n")
	}

	write(fmt.Sprintf(lifecycleConfig, dir, "line-1") + "sinks:\n  broken: {type: recorder}\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the reload error in status", func() bool {
		_, _, r := status()
		return strings.Contains(r, "the last reload was refused")
	})
	gw, state, reasons := status()
	if gw != "line-1" || state != "degraded" || !strings.Contains(reasons, "plantgate.yaml") {
		t.Errorf("after a broken reload: gateway %q state %q reasons %q; want line-1, degraded, the file named", gw, state, reasons)
	}
	if ns.count("RELOADING=1") != 0 {
		t.Error("RELOADING=1 sent for a refused reload")
	}

	write(fmt.Sprintf(lifecycleConfig, dir, "line-2"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the new config running", func() bool {
		gw, state, _ := status()
		return gw == "line-2" && state == "ready"
	})
	if ns.count("RELOADING=1") != 1 || ns.count("READY=1") != 2 || ns.count("STOPPING=1") != 0 {
		t.Errorf("notifications: RELOADING %d, READY %d, STOPPING %d; want 1, 2, 0", ns.count("RELOADING=1"), ns.count("READY=1"), ns.count("STOPPING=1"))
	}
	select {
	case err := <-p.done:
		t.Fatalf("the gateway exited: %v\n%s", err, p.stderr.String())
	default:
	}
}
