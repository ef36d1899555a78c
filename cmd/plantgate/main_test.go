package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckConfigShippedConfigs(t *testing.T) {
	// The example config reads its secrets as systemd credentials.
	creds := t.TempDir()
	for _, name := range []string{"fo-client-secret", "admin-token"} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte("example-"+name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	// The example names files of a plant PC (/etc/plantgate/fo.crt):
	// checked as a config for another machine.
	for _, args := range [][]string{{"-c", "../../configs/plantgate.example.yaml", "--skip-files"}, {"-c", "../../configs/plantgate.minimal.yaml"}} {
		f := args[1]
		code, out, errOut := runCLI(append([]string{"check-config"}, args...)...)
		if code != exitOK {
			t.Errorf("check-config %s = %d, want 0\n%s%s", f, code, out, errOut)
		}
	}
}

func TestCheckConfigDemo(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PLANTGATE_DEMO_DIR", dir)
	// make demo starts the emulator, which writes its CA, before check-config.
	writeCert(t, filepath.Join(dir, "emulator"), "ca.pem", "")
	t.Setenv("PLANTGATE_DEMO_FO_SECRET", "demo-secret")
	t.Setenv("PLANTGATE_DEMO_MQTT_PASSWORD", "x")
	t.Setenv("PLANTGATE_DEMO_ADMIN_TOKEN", "y")
	code, out, errOut := runCLI("check-config", "-c", "../../configs/demo.yaml")
	if code != exitOK || strings.Contains(errOut, "warning") {
		t.Errorf("check-config demo.yaml = %d, want 0 without warnings\n%s%s", code, out, errOut)
	}
	// make demo also sends consumption through DMF.
	_, out, _ = runCLI("check-config", "-c", "../../configs/demo.yaml", "--print")
	for _, want := range []string{"type: fo.dmf", "to: [dmf-picking]", `topic == "mes/line3/consumption"`} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config --print demo.yaml lacks %q\n%s", want, out)
		}
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plantgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `gateway:
  id: t
  data_dir: %s
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

func TestCheckConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "gateway:\n  id: t\n  colour: blue\nsources: {in: {type: file, path: x}}\nflows: {f: {from: in, to: out}}\nsinks: {out: {type: recorder}}\n",
			[]string{":3:3: gateway.colour: unknown key \"colour\""}},
		{"bad expression", "gateway: {id: t}\nsources: {in: {type: file, path: x}}\nflows:\n  f:\n    from: in\n    when: payload.a ==\n    to: out\nsinks: {out: {type: recorder}}\n",
			[]string{":6:", "expression \"payload.a ==\""}},
		{"several problems", "gateway: {id: t, drain_timeout: soon}\nsources: {in: {type: nope}}\nflows: {f: {from: missing, to: out}}\nsinks: {out: {type: recorder}}\n",
			[]string{"gateway.drain_timeout", "unknown source type \"nope\"", "3 config problem(s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.body)
			code, _, errOut := runCLI("check-config", "-c", p)
			if code != exitConfig {
				t.Fatalf("exit %d, want 78\n%s", code, errOut)
			}
			if !strings.Contains(errOut, p) {
				t.Errorf("stderr does not name the file %s:\n%s", p, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
	if code, _, _ := runCLI("check-config", "-c", filepath.Join(t.TempDir(), "missing.yaml")); code != exitConfig {
		t.Errorf("missing file: exit %d, want 78", code)
	}
	if code, _, _ := runCLI("run", "-c", writeConfig(t, "gateway: {}\n")); code != exitConfig {
		t.Errorf("run with a bad config: exit %d, want 78", code)
	}
}

func TestQueueCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf(goodConfig, dir))
	qp := filepath.Join(dir, "queue.db")
	s, err := queue.Open(qp, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Append(ctx, []queue.Entry{{Stream: "f.out", Record: pipeline.Record{Key: "P1", Fields: map[string]any{"q": 1}}},
		{Stream: "f.out", Record: pipeline.Record{Key: "P2", Fields: map[string]any{"q": 2}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "f.out", []queue.Dead{{Seq: 2, Reason: "Write failed for table row of type 'ProdJournalProd'"}}); err != nil {
		t.Fatal(err)
	}
	// While a gateway holds the file, the CLI refuses and names the lock.
	code, _, errOut := runCLI("queue", "stats", "-c", cfg)
	if code != exitTempFail || !strings.Contains(errOut, "locked") {
		t.Fatalf("stats while locked: exit %d %q, want 75 naming the lock", code, errOut)
	}
	_ = s.Close()

	code, out, errOut := runCLI("queue", "stats", "-c", cfg)
	if code != 0 || !strings.Contains(out, "f.out") || !strings.Contains(out, "TOTAL") {
		t.Fatalf("stats: %d %s %s", code, out, errOut)
	}
	code, out, _ = runCLI("queue", "list", "-c", cfg, "--stream", "f.out")
	if code != 0 || !strings.Contains(out, "key=P1") || strings.Contains(out, "key=P2") {
		t.Fatalf("list: %d %s", code, out)
	}
	code, out, _ = runCLI("queue", "dead", "-c", cfg, "--json")
	if code != 0 || !strings.Contains(out, "ProdJournalProd") {
		t.Fatalf("dead: %d %s", code, out)
	}
	if code, _, _ = runCLI("queue", "purge", "-c", cfg, "--stream", "f.out", "--dead"); code != exitUsage {
		t.Fatalf("purge without --yes: exit %d, want 2", code)
	}
	code, out, _ = runCLI("queue", "replay", "-c", cfg, "--stream", "f.out")
	if code != 0 || !strings.Contains(out, "replayed 1") {
		t.Fatalf("replay: %d %s", code, out)
	}
	code, out, _ = runCLI("queue", "check", "-c", cfg)
	if code != 0 || !strings.Contains(out, "2 records") {
		t.Fatalf("check: %d %s", code, out)
	}
	code, out, _ = runCLI("queue", "purge", "-c", cfg, "--stream", "f.out", "--items", "--yes")
	if code != 0 || !strings.Contains(out, "purged 2") {
		t.Fatalf("purge: %d %s", code, out)
	}
	if code, out, _ = runCLI("queue", "compact", "-c", cfg); code != 0 || !strings.Contains(out, "compacted") {
		t.Fatalf("compact: %d %s", code, out)
	}
}

func TestVersionAndUsage(t *testing.T) {
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "plantgate ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, _ := runCLI(); code != exitUsage {
		t.Errorf("no args: exit %d, want 2", code)
	}
	if code, _, _ := runCLI("frobnicate"); code != exitUsage {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}
