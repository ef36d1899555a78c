// Package scripts_test runs the repository's scripts as a newcomer would.
package scripts_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var fMessages = regexp.MustCompile(`MES messages: (\d+)`)

// TestDemoRerun runs scripts/demo.sh (what make demo runs) twice on one
// demo dir, on ports of its own. The first run ends by its duration, the
// second by SIGINT as Ctrl-C would end it; both exit 0 with "demo
// stopped", and both deliver MES messages to F&O (the second run starts
// with a fresh gateway data dir, as the emulator starts from its seed).
// While the second runs, no process's command line holds a secret of the
// run, and its admin API call answers with the token it printed.
func TestDemoRerun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	dir := t.TempDir()
	httpAddr, mqttAddr, foAddr, opcuaAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cfg, err := os.ReadFile("../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfgText := strings.NewReplacer("127.0.0.1:9464", httpAddr, "127.0.0.1:1883", mqttAddr, "127.0.0.1:18443", foAddr, "127.0.0.1:4840", opcuaAddr).Replace(string(cfg))
	cfgPath := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(duration string, interrupt func(*exec.Cmd)) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "./demo.sh")
		cmd.Env = append(os.Environ(), "PLANTGATE_DEMO_DIR="+filepath.Join(dir, "demo"), "PLANTGATE_DEMO_CONFIG="+cfgPath,
			"PLANTGATE_DEMO_HTTP="+httpAddr, "PLANTGATE_DEMO_MQTT="+mqttAddr, "PLANTGATE_DEMO_FO="+foAddr, "PLANTGATE_DEMO_OPCUA="+opcuaAddr,
			"PLANTGATE_DEMO_DURATION="+duration)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if interrupt != nil {
			interrupt(cmd)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("demo.sh: %v\n%s", err, out.String())
		}
		s := out.String()
		if !strings.Contains(s, "demo: demo stopped") || strings.Contains(s, "Terminated") {
			t.Errorf("demo.sh output does not end as a stop should:\n%s", s)
		}
		if m := fMessages.FindStringSubmatch(s); len(m) < 2 || m[1] == "0" {
			t.Errorf("demo run delivered no MES messages:\n%s", s)
		}
		if !strings.Contains(s, "(answered just now: 0 dead letters)") {
			t.Errorf("the admin call the demo prints did not answer:\n%s", s)
		}
		return s
	}
	run("8s", nil)
	out := run("60s", func(cmd *exec.Cmd) {
		// Interrupt once the gateway has delivered, as a newcomer would.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if delivered(httpAddr) > 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The simulator starts every order again; a gateway that kept the
		// last run's ids would drop these starts as copies.
		deadline = time.Now().Add(20 * time.Second)
		for startsInFO(t, filepath.Join(dir, "demo", "emulator", "ca.pem"), foAddr) == 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if n := startsInFO(t, filepath.Join(dir, "demo", "emulator", "ca.pem"), foAddr); n == 0 {
			t.Errorf("the second run sent F&O no production order start")
		}
		checkNoSecretsInArgv(t, filepath.Join(dir, "demo", "secrets"))
		checkAdminCall(t, filepath.Join(dir, "demo", "secrets"), httpAddr)
		_ = cmd.Process.Signal(syscall.SIGINT)
	})
	if !strings.Contains(out, "previous-run") {
		t.Errorf("the second run does not say where the first run's state went:\n%s", out)
	}
}

// startsInFO counts the start messages the emulator received.
func startsInFO(t *testing.T, caFile, addr string) int {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get("https://" + addr + "/_emulator/messages")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var ms struct {
		Value []struct {
			Type string `json:"type"`
		} `json:"value"`
	}
	if json.NewDecoder(resp.Body).Decode(&ms) != nil {
		return 0
	}
	n := 0
	for _, m := range ms.Value {
		if m.Type == "ProdProductionOrderStart" {
			n++
		}
	}
	return n
}

// delivered is the gateway's delivered count of its MES stream.
func delivered(addr string) int64 {
	resp, err := http.Get("http://" + addr + "/api/v1/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Streams []struct {
			Stream    string `json:"stream"`
			Delivered int64  `json:"delivered"`
		} `json:"streams"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0
	}
	for _, s := range st.Streams {
		if s.Stream == "mes" {
			return s.Delivered
		}
	}
	return 0
}

// checkNoSecretsInArgv reads every process's command line (what ps
// shows) for the run's admin token and MQTT password.
func checkNoSecretsInArgv(t *testing.T, secrets string) {
	t.Helper()
	var found int
	for _, name := range []string{"admin-token", "mqtt-password"} {
		secret, err := os.ReadFile(filepath.Join(secrets, name))
		if err != nil || len(secret) < 16 {
			t.Fatalf("secret %s of the run: %q %v", name, secret, err)
		}
		if fi, _ := os.Stat(filepath.Join(secrets, name)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			if bytes.Contains(b, []byte(secrets)) || bytes.Contains(b, []byte("fo-emulator")) || bytes.Contains(b, []byte("mes-simulator")) {
				found++
			}
			if bytes.Contains(b, secret) {
				t.Errorf("%s of the run is on a command line: %s", name, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
	}
	if found == 0 {
		t.Errorf("no demo process found in /proc to check")
	}
}

// checkAdminCall makes the admin call the demo prints, with its header file.
func checkAdminCall(t *testing.T, secrets, addr string) {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(secrets, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth string
		want int
	}{{"Bearer " + string(token), http.StatusOK}, {"Bearer wrong", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/admin/dead", nil)
		req.Header.Set("Authorization", tc.auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("admin call with %q: %d, want %d", tc.auth[:10], resp.StatusCode, tc.want)
		}
	}
}
