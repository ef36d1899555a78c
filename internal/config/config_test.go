package config_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/logging"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// fileSource is the config of a fake source type "file".
type fileSource struct {
	Path    string            `yaml:"path" required:"true"`
	Format  string            `yaml:"format" default:"json" enum:"json,csv,raw"`
	Poll    config.Duration   `yaml:"poll" default:"1s"`
	MaxSize config.Size       `yaml:"max_size"`
	Tags    []string          `yaml:"tags"`
	Labels  map[string]string `yaml:"labels"`
	Extra   any               `yaml:"extra"`
}

func (f *fileSource) Validate() error {
	if strings.HasSuffix(f.Path, "/") {
		return errors.New("path names a directory; want a file")
	}
	return nil
}

// recorderSink is the config of a fake sink type "recorder".
type recorderSink struct {
	Path string `yaml:"path"`
}

// odataSink is the config of a fake sink type "fo.odata".
type odataSink struct {
	Env          string          `yaml:"env" ref:"fo" required:"true"`
	Entity       string          `yaml:"entity" required:"true"`
	ClientSecret logging.Secret  `yaml:"client_secret"`
	Timeout      config.Duration `yaml:"timeout" default:"30s"`
	Batch        *odataBatch     `yaml:"batch"`
}

type odataBatch struct {
	MaxRecords int             `yaml:"max_records" default:"100" min:"1"`
	MaxAge     config.Duration `yaml:"max_age" default:"15m"`
}

// secretValues are the values of every secret the tests use; none may
// appear in an error, a warning or Redacted output.
var secretValues = []string{"s3cr3t-fo-value", "0data-s3cr3t-value", "file-t0ken-value", "literal-adm1n-value"}

var testEnv = map[string]string{
	"PLANTGATE_FO_SECRET":    secretValues[0],
	"PLANTGATE_ODATA_SECRET": secretValues[1],
	"DATA_DIR":               "/srv/plantgate",
}

func testOptions() config.Options {
	return config.Options{
		SourceConfig: func(typ string) (any, bool) {
			if typ == "file" {
				return &fileSource{}, true
			}
			return nil, false
		},
		SinkConfig: func(typ string) (any, bool) {
			switch typ {
			case "recorder":
				return &recorderSink{Path: "/var/lib/plantgate/recorder.jsonl"}, true
			case "fo.odata":
				return &odataSink{}, true
			}
			return nil, false
		},
		// The files the configs name are checked in files_test.go.
		SkipFiles:   true,
		SourceTypes: func() []string { return []string{"file", "opcua"} },
		SinkTypes:   func() []string { return []string{"recorder", "fo.odata"} },
		Env: func(name string) (string, bool) {
			v, ok := testEnv[name]
			return v, ok
		},
	}
}

// checkGolden compares got with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", golden, diff)
	}
}

func assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range secretValues {
		if strings.Contains(text, s) {
			t.Errorf("%s contains the secret value %q:\n%s", what, s, text)
		}
	}
}

func TestLoadGood(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good configs: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := config.Load(file, testOptions())
			if err != nil {
				t.Fatalf("Load: got error\n%v\nwant none", err)
			}
			out, err := c.Redacted()
			if err != nil {
				t.Fatalf("Redacted: %v", err)
			}
			var b strings.Builder
			b.Write(out)
			for _, w := range c.Warnings {
				fmt.Fprintf(&b, "# warning: %s\n", w)
			}
			got := b.String()
			assertNoSecrets(t, "Redacted output", got)
			assertNoSecrets(t, "%+v of the config", fmt.Sprintf("%+v %#v", c, c))
			checkGolden(t, strings.TrimSuffix(file, ".yaml")+".golden", got)

			// The rendered config loads again to the same settings.
			again, err := config.Parse(file, out, testOptions())
			if err != nil {
				t.Fatalf("Parse of Redacted output: got error\n%v\nwant none", err)
			}
			out2, err := again.Redacted()
			if err != nil {
				t.Fatalf("Redacted: %v", err)
			}
			if diff := cmp.Diff(string(out), string(out2)); diff != "" {
				t.Errorf("Redacted output changes when loaded again (-first +second):\n%s", diff)
			}
		})
	}
}

func TestLoadBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := config.Load(file, testOptions())
			if err == nil {
				t.Fatalf("Load: got no error and %d warnings, want an error", len(c.Warnings))
			}
			if c != nil {
				t.Errorf("Load: got a config with the error, want nil")
			}
			if !config.IsConfigError(err) {
				t.Errorf("IsConfigError: got false for %T, want true", err)
			}
			ps := config.AsProblems(err)
			if len(ps) == 0 {
				t.Errorf("AsProblems: got none, want at least one")
			}
			for i := 1; i < len(ps); i++ {
				if ps[i].Pos.Line < ps[i-1].Pos.Line {
					t.Errorf("problems not sorted by line: %v before %v", ps[i-1], ps[i])
				}
			}
			got := err.Error() + "\n"
			assertNoSecrets(t, "error", got)
			checkGolden(t, strings.TrimSuffix(file, ".yaml")+".err", got)
		})
	}
}

// TestSecretsNeverLeak loads configs holding secrets from every kind of
// source next to deliberate errors, and checks that no secret value
// reaches the error text.
func TestSecretsNeverLeak(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secretValues[2]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		yaml string
	}{
		{"wrong types beside secrets", `
gateway: {id: g1, drain_timeout: nope}
http: {admin_token: "${file:` + secretFile + `}", listen: [1]}
fo:
  prod: {url: "https://x.example", tenant_id: t, client_id: c, client_secret: "${env:PLANTGATE_FO_SECRET}", timeout: x}
sources: {logs: {type: file, path: /x, format: bad}}
sinks:
  out: {type: fo.odata, env: nope, entity: E, client_secret: "${env:PLANTGATE_ODATA_SECRET}", timeout: 15}
flows: {all: {from: logs, to: out, expect: {rate: quick}}}
`},
		{"literal secrets in wrong places", `
gateway: {id: g1}
http: {admin_token: literal-adm1n-value, admin_tokn: literal-adm1n-value}
fo:
  prod: {url: "https://x.example", tenant_id: t, client_id: c, client_secret: literal-adm1n-value, certificate_file: /c}
sources: {logs: {type: file, path: /x}}
sinks:
  out: {type: fo.odata, env: prod, entity: E, client_secret: {value: literal-adm1n-value}}
flows: {all: {from: logs, to: out}}
`},
		{"secret with a bad reference", `
gateway: {id: g1}
http: {admin_token: "literal-adm1n-value${env:1BAD}"}
sources: {logs: {type: file, path: /x}}
sinks:
  out: {type: fo.odata, env: prod, entity: E, client_secret: "literal-adm1n-value${file:/x}"}
flows: {all: {from: logs, to: out}}
`},
		{"a secret as a duplicate key", `
gateway: {id: g1}
http:
  admin_token: literal-adm1n-value
  admin_token: ${env:PLANTGATE_FO_SECRET}
sources: {logs: {type: file, path: /x}}
sinks: {out: {type: recorder}}
flows: {all: {from: logs, to: out}}
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("secrets.yaml", []byte(tt.yaml), testOptions())
			if err == nil {
				t.Fatalf("Parse: got no error, want one; warnings: %v", c.Warnings)
			}
			assertNoSecrets(t, "error", err.Error())
			assertNoSecrets(t, "%#v of the error", fmt.Sprintf("%#v", err))
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load("testdata/does-not-exist.yaml", testOptions())
	got := fmt.Sprint(err)
	want := "testdata/does-not-exist.yaml: read config file: no such file or directory"
	if got != want {
		t.Errorf("Load: got error %q, want %q", got, want)
	}
	if !config.IsConfigError(err) {
		t.Errorf("IsConfigError: got false, want true")
	}
	if config.IsConfigError(errors.New("other")) || config.AsProblems(errors.New("other")) != nil {
		t.Errorf("IsConfigError/AsProblems: got a config error for a plain error")
	}
	if !config.IsConfigError(fmt.Errorf("start: %w", err)) {
		t.Errorf("IsConfigError: got false for a wrapped config error, want true")
	}
}

func TestLoadResult(t *testing.T) {
	c, err := config.Load("testdata/good/full.yaml", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(c.Checksum), 64; got != want {
		t.Errorf("Checksum: got %d hex digits, want %d", got, want)
	}
	if got, want := c.File, "testdata/good/full.yaml"; got != want {
		t.Errorf("File: got %q, want %q", got, want)
	}
	orders := []struct {
		name      string
		got, want []string
	}{
		{"SourceOrder", c.SourceOrder, []string{"mes", "line3"}},
		{"SinkOrder", c.SinkOrder, []string{"mes-finished", "archive"}},
		{"FlowOrder", c.FlowOrder, []string{"report-finished", "counters"}},
		{"FOOrder", c.FOOrder, []string{"prod", "test"}},
	}
	for _, o := range orders {
		if diff := cmp.Diff(o.want, o.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", o.name, diff)
		}
	}

	f := c.Flows["report-finished"]
	var names []string
	for _, m := range f.Map {
		names = append(names, m.Name)
	}
	if diff := cmp.Diff([]string{"ProductionOrderNumber", "ReportFinishedLines", "Quantity"}, names); diff != "" {
		t.Errorf("Map order (-want +got):\n%s", diff)
	}
	wantQty := config.Expr{Src: "payload.good", Pos: config.Pos{
		File: "testdata/good/full.yaml", Line: 58, Column: 17, Path: "flows.report-finished.map.Quantity",
	}}
	if diff := cmp.Diff(wantQty, f.Map[2].Expr); diff != "" {
		t.Errorf("Map Quantity (-want +got):\n%s", diff)
	}
	if got, want := f.When.Pos.Line, 50; got != want {
		t.Errorf("When.Pos.Line: got %d, want %d", got, want)
	}
	if got, want := f.Pos, (config.Pos{File: c.File, Line: 48, Column: 3, Path: "flows.report-finished"}); got != want {
		t.Errorf("Flow.Pos: got %v, want %v", got, want)
	}
	if got, want := f.Expect.PerSecond(), 0.2; got != want {
		t.Errorf("Expect.PerSecond: got %v, want %v", got, want)
	}
	counters := c.Flows["counters"]
	if diff := cmp.Diff([]string{"archive", "mes-finished"}, counters.To); diff != "" {
		t.Errorf("To (-want +got):\n%s", diff)
	}
	if got, want := counters.ToPos.Line, 61; got != want {
		t.Errorf("ToPos.Line: got %d, want %d", got, want)
	}

	mes, ok := c.Sources["mes"].Settings.(*fileSource)
	if !ok {
		t.Fatalf("Settings: got %T, want *fileSource", c.Sources["mes"].Settings)
	}
	if got, want := mes.MaxSize, config.Size(10_000_000); got != want {
		t.Errorf("max_size: got %d, want %d", got, want)
	}
	if diff := cmp.Diff([]string{"mes"}, mes.Tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if got, want := c.Sources["mes"].Startup, "retry"; got != want {
		t.Errorf("Startup default: got %q, want %q", got, want)
	}
	odata := c.Sinks["mes-finished"].Settings.(*odataSink)
	if got, want := odata.ClientSecret.Reveal(), secretValues[1]; got != want {
		t.Errorf("client_secret: got %q, want the env value", got)
	}
	if got, want := c.HTTP.AdminToken.Reveal(), secretValues[2]; got != want {
		t.Errorf("admin_token: got %q, want the file contents without newline", got)
	}
	if got, want := c.Gateway.DataDir, "/srv/plantgate/state"; got != want {
		t.Errorf("data_dir: got %q, want %q", got, want)
	}
	wantRunner := config.SinkRunner{MaxBatch: 1, Parallelism: 2, Retry: config.Retry{
		Initial: config.Duration(1e9), Max: config.Duration(36 * 3600e9),
	}}
	if diff := cmp.Diff(wantRunner, c.Sinks["mes-finished"].Runner); diff != "" {
		t.Errorf("Runner (-want +got):\n%s", diff)
	}
	if got, want := c.Sinks["archive"].Runner.Retry.Max, config.Duration(600e9); got != want {
		t.Errorf("merged retry.max: got %v, want %v", got, want)
	}
	if got, want := c.Sinks["archive"].Settings.(*recorderSink).Path, "/srv/archive.jsonl"; got != want {
		t.Errorf("recorder path: got %q, want %q", got, want)
	}
	rec := c.Sinks["mes-finished"]
	if got, want := rec.Pos, (config.Pos{File: c.File, Line: 65, Column: 3, Path: "sinks.mes-finished"}); got != want {
		t.Errorf("Plugin.Pos: got %v, want %v", got, want)
	}
}

// TestDefaults checks that plugin defaults from NewConfig survive and
// default tags fill the rest.
func TestDefaults(t *testing.T) {
	c, err := config.Load("testdata/good/minimal.yaml", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	wantQueue := config.Queue{
		MaxBytes: 2 << 30, DeadMaxBytes: 512 << 20, OnFull: "block", MaxRecordBytes: 1 << 20,
		DedupWindow: config.Duration(24 * 3600e9), LeaseTimeout: config.Duration(120e9),
		CommitMaxRecords: 1000, CommitMaxDelay: 0, CompactMinBytes: 256 << 20,
	}
	if diff := cmp.Diff(wantQueue, c.Gateway.Queue); diff != "" {
		t.Errorf("Queue defaults (-want +got):\n%s", diff)
	}
	if got, want := c.HTTP.Listen, "127.0.0.1:9464"; got != want {
		t.Errorf("http.listen: got %q, want %q", got, want)
	}
	src := c.Sources["logs"].Settings.(*fileSource)
	if got, want := *src, (fileSource{Path: "/var/log/mes.jsonl", Format: "json", Poll: config.Duration(1e9)}); !cmp.Equal(got, want) {
		t.Errorf("file settings: got %+v, want %+v", got, want)
	}
	if got, want := c.Sinks["out"].Settings.(*recorderSink).Path, "/tmp/out.jsonl"; got != want {
		t.Errorf("recorder path: got %q, want %q", got, want)
	}

	// An explicit empty value is kept, not replaced by the default.
	c, err = config.Parse("x.yaml", []byte(`
gateway: {id: g}
http: {listen: ""}
sources: {s: {type: file, path: /p}}
sinks: {k: {type: recorder}}
flows: {f: {from: s, to: k}}
`), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HTTP.Listen; got != "" {
		t.Errorf("explicit empty http.listen: got %q, want empty", got)
	}
	if got, want := c.Sinks["k"].Settings.(*recorderSink).Path, "/var/lib/plantgate/recorder.jsonl"; got != want {
		t.Errorf("NewConfig default: got %q, want %q", got, want)
	}
}

// TestNoRegistry checks that the zero Options accept any plugin type and
// keep its settings raw.
func TestNoRegistry(t *testing.T) {
	c, err := config.Parse("x.yaml", []byte(`
gateway: {id: g}
sources: {s: {type: mqtt, broker: "tcp://b:1883", qos: 1, topics: [a/#]}}
sinks: {k: {type: fo.mes, env: prod, max_batch: 5}}
flows: {f: {from: s, to: k}}
`), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"broker": "tcp://b:1883", "qos": 1, "topics": []any{"a/#"}}
	if diff := cmp.Diff(want, c.Sources["s"].Settings); diff != "" {
		t.Errorf("raw settings (-want +got):\n%s", diff)
	}
	if got, want := c.Sinks["k"].Runner.MaxBatch, 5; got != want {
		t.Errorf("max_batch: got %d, want %d", got, want)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    config.Duration
		wantErr bool
	}{
		{"15m", config.Duration(15 * 60e9), false},
		{"1h30m", config.Duration(90 * 60e9), false},
		{"500ms", config.Duration(500e6), false},
		{"2d", config.Duration(48 * 3600e9), false},
		{"1d12h", config.Duration(36 * 3600e9), false},
		{"1.5d", config.Duration(36 * 3600e9), false},
		{"0", 0, false},
		{"15", 0, true},
		{"-5m", 0, true},
		{"abc", 0, true},
		{"", 0, true},
		{"d", 0, true},
		{"1x", 0, true},
		{"99999999999d", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := config.ParseDuration(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseDuration(%q): got %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    config.Size
		wantErr bool
	}{
		{"2GiB", 2 << 30, false},
		{"512MiB", 512 << 20, false},
		{"10MB", 10_000_000, false},
		{"64KiB", 64 << 10, false},
		{"64kB", 64_000, false},
		{"1024", 1024, false},
		{"1.5GiB", 3 << 29, false},
		{"0", 0, false},
		{"7B", 7, false},
		{"-1", 0, true},
		{"2XB", 0, true},
		{"lots", 0, true},
		{"9999999PiB", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := config.ParseSize(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseSize(%q): got %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestValueStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{config.Duration(24 * 3600e9).String(), "24h"},
		{config.Duration(90 * 60e9).String(), "1h30m"},
		{config.Duration(120e9).String(), "2m"},
		{config.Duration(2e6).String(), "2ms"},
		{config.Duration(0).String(), "0s"},
		{config.Size(2 << 30).String(), "2GiB"},
		{config.Size(10_000_000).String(), "10MB"},
		{config.Size(1023).String(), "1023"},
		{config.Size(0).String(), "0"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestEnvInStrings checks ${env:...} expansion in plain strings.
func TestEnvInStrings(t *testing.T) {
	tests := []struct {
		name, path, want, wantErr string
	}{
		{"expanded", "${env:DATA_DIR}/x", "/srv/plantgate/x", ""},
		{"escaped", "$${env:DATA_DIR}", "${env:DATA_DIR}", ""},
		{"other dollar text kept", "a$${b}c$ ${1x} $x", "a${b}c$ ${1x} $x", ""},
		{"shell-style variable", "a${b}c", "", `x.yaml:2:33: sources.s.path: ${b} is not expanded: write ${env:b} for the environment variable (or $${b} for the text itself)`},
		{"missing", "${env:NOPE}/x", "", `x.yaml:2:33: sources.s.path: environment variable NOPE is not set`},
		{"unterminated", "${env:DATA_DIR", "", `x.yaml:2:33: sources.s.path: unterminated ${env:...} reference`},
		{"file ref", "${file:/etc/x}", "", `x.yaml:2:33: sources.s.path: a ${file:PATH} reference is only accepted as the whole value of a secret`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("gateway: {id: g}\nsources: {s: {type: file, path: %q}}\nsinks: {k: {type: recorder}}\nflows: {f: {from: s, to: k}}\n", tt.path)
			c, err := config.Parse("x.yaml", []byte(src), testOptions())
			if tt.wantErr != "" {
				if got := fmt.Sprint(err); got != tt.wantErr {
					t.Errorf("got error %q, want %q", got, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Sources["s"].Settings.(*fileSource).Path; got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
