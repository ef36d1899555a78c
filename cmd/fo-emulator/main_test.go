package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
)

// TestHelperMain runs main() when the test binary is re-executed as the
// command (see TestProcessSIGTERM).
func TestHelperMain(t *testing.T) {
	if os.Getenv("FO_EMULATOR_HELPER") != "1" {
		t.Skip("helper process only")
	}
	i := 0
	for i < len(os.Args) && os.Args[i] != "--" {
		i++
	}
	os.Args = append([]string{"fo-emulator"}, os.Args[min(i+1, len(os.Args)):]...)
	main()
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("odata:\n  page_size: -5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("listen: x\nthrottle: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"help documents every flag", []string{"--help"}, 0, []string{"-listen", "-data-dir", "-config", "-http", "-cert", "-key", "-public-url", "-log-level", "-log-format", "-snapshot", "-version", "Exit codes"}},
		{"version", []string{"--version"}, 0, []string{"fo-emulator"}},
		{"unknown flag", []string{"--nope"}, 2, []string{"flag provided but not defined: -nope"}},
		{"stray argument", []string{"serve"}, 2, []string{"unexpected arguments: serve"}},
		{"cert without key", []string{"--cert", "x.pem", "--data-dir", dir}, 2, []string{"--cert and --key go together"}},
		{"bad config value", []string{"--config", bad, "--data-dir", dir}, 78, []string{bad + ":2: page_size must be at least 1"}},
		{"unknown config key", []string{"--config", unknown, "--data-dir", dir}, 78, []string{unknown + ":2: field throttle not found in type foemu.Config"}},
		{"missing config", []string{"--config", filepath.Join(dir, "none.yaml")}, 78, []string{"none.yaml: no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errOut, nil)
			if code != tt.code {
				t.Errorf("exit code = %d, want %d\nstderr: %s", code, tt.code, errOut.String())
			}
			all := out.String() + errOut.String()
			for _, c := range tt.contains {
				if !strings.Contains(all, c) {
					t.Errorf("output lacks %q:\n%s", c, all)
				}
			}
		})
	}
}

func TestRunInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *foemu.Emulator, 1)
	done := make(chan int, 1)
	var out, errOut syncBuffer
	dir := t.TempDir()
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--log-format", "json"}, &out, &errOut, ready)
	}()
	var em *foemu.Emulator
	select {
	case em = <-ready:
	case code := <-done:
		t.Fatalf("exited with %d: %s", code, errOut.String())
	case <-time.After(20 * time.Second):
		t.Fatal("emulator did not start")
	}
	resp, err := em.HTTPClient().Get(em.BaseURL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("index status %d", resp.StatusCode)
	}
	banner := errOut.String()
	for _, want := range []string{"environment URL (token audience): " + em.BaseURL(), "authority URL:", filepath.Join(dir, "ca.pem"),
		"no --config: one client is accepted, plantgate-demo with secret demo-secret"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit code after cancel = %d", code)
	}
	if !strings.Contains(out.String(), `"message":"fo-emulator stopped"`) {
		t.Errorf("log lacks the stop event:\n%s", out.String())
	}
}

// TestProcessSIGTERM runs the command as a separate process, waits for its
// banner, calls it over HTTPS trusting only DIR/ca.pem, and stops it with
// SIGTERM.
func TestProcessSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMain$", "--", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-format", "json")
	cmd.Env = append(os.Environ(), "FO_EMULATOR_HELPER=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	urlRe := regexp.MustCompile(`environment URL \(token audience\): (\S+)`)
	sc := bufio.NewScanner(stderr)
	base := ""
	for sc.Scan() {
		if m := urlRe.FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
			break
		}
	}
	if base == "" {
		t.Fatal("no base URL in the banner")
	}
	go func() {
		for sc.Scan() { // drain the pipe so the child never blocks
		}
	}()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get(base + "/1234/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("discovery status %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want exit status 0", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
