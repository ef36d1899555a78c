package main

import (
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/flowtest/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "flowtest", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

const plantConfig = "testdata/flowtest/plant.yaml"

// TestFlowTest: what a flow makes of one message and what each sink would
// send, as text and as JSON (golden files), with the exit code saying
// whether the message would be delivered. Nothing is created in the data
// dir: no queue file is opened.
func TestFlowTest(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PG_TEST_DIR", dir)
	at := "--received-at=2026-12-01T06:00:00Z"
	finished := `{"msg_id":"m-1","order":"P000102","item":"FG-1000","good":5,"scrap":0}`
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"mes.txt", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", finished}, exitOK},
		{"mes.json", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", finished, "--json"}, exitOK},
		{"odata.txt", []string{"--flow", "order-status", "--topic", "mes/line3/order", "--message", `{"msg_id":"s-1","order":"P000102","status":"Started"}`}, exitOK},
		{"odata.json", []string{"--flow", "order-status", "--topic", "mes/line3/order", "--message", `{"msg_id":"s-1","order":"P000102","status":"Started"}`, "--json"}, exitOK},
		{"dmf.txt", []string{"--flow", "consumption", "--topic", "mes/line3/consumption", "--message", `{"msg_id":"c-1","order":"P000102","item":"RM-2000","qty":1.50}`}, exitOK},
		{"dmf.json", []string{"--flow", "consumption", "--topic", "mes/line3/consumption", "--message", `{"msg_id":"c-1","order":"P000102","item":"RM-2000","qty":1.50}`, "--json"}, exitOK},
		{"when-false.txt", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", `{"msg_id":"m-2","order":"P000102","item":"FG-1000","good":0}`}, exitFailure},
		{"topic-not-received.txt", []string{"--flow", "finished", "--topic", "plant/line3/finished", "--message", finished}, exitFailure},
		{"not-json.txt", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", "good=5"}, exitFailure},
		{"mapping-error.txt", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", `{"msg_id":"m-3","item":"FG-1000","good":5}`}, exitFailure},
		{"sink-refuses.txt", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", `{"msg_id":"m-4","order":"P000102","item":"FG-1000","good":5,"scrap":"a few"}`}, exitFailure},
		{"sink-refuses.json", []string{"--flow", "finished", "--topic", "mes/line3/finished", "--message", `{"msg_id":"m-4","order":"P000102","item":"FG-1000","good":5,"scrap":"a few"}`, "--json"}, exitFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"flow", "test", "-c", plantConfig, at}, tc.args...)
			code, out, errOut := runCLI(args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.code, out, errOut)
			}
			if errOut != "" {
				t.Errorf("stderr: %s", errOut)
			}
			golden(t, tc.name, out)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("flow test touched the data dir: %v", err)
	}
}

// TestFlowTestPayloadFile: --payload reads the message from a file or
// stdin, byte for byte as --message takes it.
func TestFlowTestPayloadFile(t *testing.T) {
	t.Setenv("PG_TEST_DIR", t.TempDir())
	msg := `{"msg_id":"c-1","order":"P000102","item":"RM-2000","qty":1.50}`
	p := filepath.Join(t.TempDir(), "msg.json")
	if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"flow", "test", "-c", plantConfig, "--received-at=2026-12-01T06:00:00Z", "--flow", "consumption", "--topic", "mes/l/consumption"}
	_, want, _ := runCLI(append(base, "--message", msg)...)
	code, got, errOut := runCLI(append(base, "--payload", p)...)
	if code != exitOK || got != want {
		t.Errorf("--payload FILE: exit %d\n%s%s\nwant\n%s", code, got, errOut, want)
	}
	flowStdin = strings.NewReader(msg)
	defer func() { flowStdin = os.Stdin }()
	code, got, errOut = runCLI(append(base, "--payload", "-")...)
	if code != exitOK || got != want {
		t.Errorf("--payload -: exit %d\n%s%s\nwant\n%s", code, got, errOut, want)
	}
}

// TestFlowTestBadInput: an unknown flow or a missing message is a usage
// error (2) that says what to give; a broken config is 78.
func TestFlowTestBadInput(t *testing.T) {
	t.Setenv("PG_TEST_DIR", t.TempDir())
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-c", plantConfig, "--flow", "nope", "--message", "{}"}, exitUsage, `unknown flow "nope" (flows: [finished order-status consumption])`},
		{[]string{"-c", plantConfig, "--flow", "finished"}, exitUsage, "give the message with either --payload FILE or --message TEXT"},
		{[]string{"-c", plantConfig, "--message", "{}"}, exitUsage, "--flow NAME is required"},
		{[]string{"-c", plantConfig, "--flow", "finished", "--payload", "/nonexistent/msg.json"}, exitUsage, "read --payload"},
		{[]string{"-c", "testdata/checkconfig/when-not-boolean.yaml", "--flow", "f", "--message", "{}"}, exitConfig, `flows.f.when: expression "topic" gives string, not true or false`},
	} {
		code, out, errOut := runCLI(append([]string{"flow", "test"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("flow test %v: exit %d, stderr %q; want %d and %q\n%s", tc.args, code, errOut, tc.code, tc.want, out)
		}
	}
}

// TestFlowTestSendsNothing: the real binary, with every HTTP(S) request
// routed to a proxy the test holds, shows the requests of all three F&O
// sinks without a single connection to it.
func TestFlowTestSendsNothing(t *testing.T) {
	bin := plantgateBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--flow", "finished", "--topic", "mes/l/finished", "--message", `{"msg_id":"m","order":"P1","item":"FG","good":1}`},
		{"--flow", "order-status", "--topic", "mes/l/order", "--message", `{"msg_id":"s","order":"P1","status":"Started"}`},
		{"--flow", "consumption", "--topic", "mes/l/consumption", "--message", `{"msg_id":"c","order":"P1","item":"RM","qty":1}`},
	} {
		cmd := exec.Command(bin, append([]string{"flow", "test", "-c", plantConfig}, args...)...)
		cmd.Env = append(os.Environ(), "PG_TEST_DIR="+dir, "HTTPS_PROXY=http://"+ln.Addr().String(), "HTTP_PROXY=http://"+ln.Addr().String(), "NO_PROXY=")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "matched:  yes") {
			t.Fatalf("flow test %v: %v\n%s", args, err, out)
		}
	}
	select {
	case c := <-conns:
		_ = c.Close()
		t.Fatal("flow test opened a connection")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("flow test touched the data dir: %v", err)
	}
}
