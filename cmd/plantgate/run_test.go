package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/queue"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// plantgateBinary builds the command once per test run, outside the
// repository, in a directory any user may read (for setpriv).
func plantgateBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the plantgate binary")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "plantgate-bin-"); binErr != nil {
			return
		}
		if binErr = os.Chmod(binDir, 0o755); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "plantgate"), ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "plantgate")
}

// runBinary runs the binary with args and returns its exit code and
// stderr; it fails the test if the binary does not exit within 30 s.
func runBinary(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not exit within 30 s\n%s", name, args, stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stderr.String()
}

const runConfig = `gateway: {id: t, data_dir: %s}
http: {listen: "%s"}
fo:
  prod: {url: "https://127.0.0.1:%d", authority_url: "https://127.0.0.1:%d", tenant_id: t, client_id: c, client_secret: "${env:PG_TEST_SECRET}", company: USMF}
sources: {in: {type: file, path: "-"}}
flows: {f: {from: in, id: payload.id, to: mes}}
sinks:
  mes: {type: fo.mes, env: prod, message_type: ProdProductionOrderStart, startup: %s}
`

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// TestRunExitCodes runs the real binary: whatever run refuses at start
// because of its config exits 78 (systemd does not restart it) naming
// the field, a queue locked by another gateway 75, and a startup probe
// that fails (a peer down, which a restart may find up) 1.
func TestRunExitCodes(t *testing.T) {
	bin := plantgateBinary(t)
	checkFixtures(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	down := closedPort(t)
	config := func(t *testing.T, dataDir, listen, startup string) string {
		return writeConfig(t, fmt.Sprintf(runConfig, dataDir, listen, down, down, startup))
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string // returns the config path
		code  int
		want  []string
	}{
		{"config problem at load", func(*testing.T) string { return "testdata/checkconfig/missing-cert.yaml" }, exitConfig,
			[]string{"missing-cert.yaml:7:23: fo.prod.certificate_file: file", "does not exist"}},
		{"a sink its plugin refuses", func(*testing.T) string { return "testdata/checkconfig/dmf-no-legal-entity.yaml" }, exitConfig,
			[]string{"dmf-no-legal-entity.yaml:7:3: sinks.dmf: sink dmf cannot start: no legal entity"}},
		{"http address in use", func(t *testing.T) string { return config(t, t.TempDir(), busy.Addr().String(), "retry") }, exitConfig,
			[]string{": http.listen: listen on " + busy.Addr().String(), "address already in use", "another program holds the port; stop it or change http.listen"}},
		{"queue file unreadable", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "queue.db"), []byte("this is not a bbolt file, and long enough to be read as one ......"), 0o600); err != nil {
				t.Fatal(err)
			}
			return config(t, dir, "127.0.0.1:0", "retry")
		}, exitConfig, []string{":1:", "gateway.data_dir: open the queue in"}},
		{"queue locked by another gateway", func(t *testing.T) string {
			dir := t.TempDir()
			s, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return config(t, dir, "127.0.0.1:0", "retry")
		}, exitTempFail, nil},
		{"embedded broker address in use", func(t *testing.T) string {
			return writeConfig(t, fmt.Sprintf(`gateway: {id: t, data_dir: %s}
http: {listen: "127.0.0.1:0"}
sources:
  mes: {type: mqtt, startup: error, embedded: {listen: "%s", allow_anonymous: true}}
flows: {f: {from: mes, id: payload.id, to: out}}
sinks: {out: {type: recorder}}
`, t.TempDir(), busy.Addr().String()))
		}, exitConfig, []string{":4:", "sources.mes.embedded.listen: source mes: embedded broker listen on " + busy.Addr().String(), "address already in use: another program holds the port"}},
		{"startup probe fails", func(t *testing.T) string { return config(t, t.TempDir(), "127.0.0.1:0", "error") }, exitFailure,
			[]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errOut := runBinary(t, bin, "run", "-c", tc.setup(t), "--log-format", "json")
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}
