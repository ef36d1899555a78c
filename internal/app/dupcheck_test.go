package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
)

// dupConfig writes a config with one flow "f" (at line 9) from source
// "in" to sink "out" and loads it with LoadConfig. flowExtra is added to
// the flow's keys.
func dupConfig(t *testing.T, source, sink, flowExtra string) (*config.Config, string, error) {
	t.Helper()
	body := fmt.Sprintf(`gateway: {id: t, data_dir: %s}
fo:
  prod: {url: "https://fo.example", tenant_id: t, client_id: c, certificate_file: a.crt, private_key_file: a.key}
sources:
  in: %s
sinks:
  out: %s
flows:
  f:
    from: in
    key: payload.order
    to: out
%s`, t.TempDir(), source, sink, flowExtra)
	p := filepath.Join(t.TempDir(), "plantgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// a.crt and a.key are not there: the files are checked elsewhere.
	opts := ConfigOptions()
	opts.SkipFiles = true
	cfg, _, err := LoadConfigOptions(p, opts)
	return cfg, p, err
}

const (
	mqttClient   = `{type: mqtt, broker: "tcp://broker.plant.local:1883", client_id: pg-1, topics: [mes/#]}`
	mqttEmbedded = `{type: mqtt, embedded: {listen: "127.0.0.1:0", allow_anonymous: true}, topics: [mes/#]}`
	fileSource   = `{type: file, path: /var/lib/plantgate/in.jsonl}`
	mesSink      = `{type: fo.mes, env: prod, message_type: ProdProductionOrderStart}`
)

// TestDuplicateCheckRejects: a flow from a redelivering source (MQTT, both
// modes) to a sink that cannot recognise a copy (fo.mes, fo.odata create
// without key), with neither id nor accept_duplicates, fails check-config
// at the flow's line with an explanation.
func TestDuplicateCheckRejects(t *testing.T) {
	for _, tc := range []struct{ name, source, sink, why string }{
		{"mqtt-client-to-mes", mqttClient, mesSink, "sink out (fo.mes)"},
		{"mqtt-embedded-to-mes", mqttEmbedded, mesSink, "sink out (fo.mes)"},
		{"mqtt-to-odata-create", mqttClient, `{type: fo.odata, env: prod, entity: ProductionOrderHeaders, mode: create}`,
			"sink out (fo.odata, mode create without key)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, path, err := dupConfig(t, tc.source, tc.sink, "")
			if err == nil {
				t.Fatal("loaded a flow that would send redeliveries to F&O twice")
			}
			if !config.IsConfigError(err) {
				t.Fatalf("not a config error (exit 78): %T %v", err, err)
			}
			probs := config.AsProblems(err)
			if len(probs) != 1 {
				t.Fatalf("want 1 problem, got %v", probs)
			}
			got := probs[0].String()
			for _, want := range []string{
				path + ":9:", "flows.f: ", "source in (mqtt) delivers at least once", "lost acknowledgement", tc.why,
				"reach F&O twice", "`id: payload.<unique field>`", "`accept_duplicates: true`",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("problem %q\nlacks %q", got, want)
				}
			}
			if strings.Count(got, "flows.f") != 1 {
				t.Errorf("the flow path is not printed exactly once: %q", got)
			}
		})
	}
}

// TestDuplicateCheckAcceptsID: an id lets the queue drop the copy.
func TestDuplicateCheckAcceptsID(t *testing.T) {
	if _, _, err := dupConfig(t, mqttClient, mesSink, "    id: payload.msg_id\n"); err != nil {
		t.Fatal(err)
	}
}

// TestDuplicateCheckAcceptsAcceptDuplicates: accept_duplicates says the
// copies are wanted, and check-config --print keeps the key.
func TestDuplicateCheckAcceptsAcceptDuplicates(t *testing.T) {
	cfg, _, err := dupConfig(t, mqttEmbedded, mesSink, "    accept_duplicates: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Flows["f"].AcceptDuplicates {
		t.Fatal("accept_duplicates not decoded")
	}
	out, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "accept_duplicates: true") {
		t.Fatalf("the effective config lost accept_duplicates:\n%s", out)
	}
}

// TestDuplicateCheckFileSource: the file source commits its offset with
// its records, so it never emits a line twice and needs no id.
func TestDuplicateCheckFileSource(t *testing.T) {
	if _, _, err := dupConfig(t, fileSource, mesSink, ""); err != nil {
		t.Fatal(err)
	}
}

// TestDuplicateCheckIdempotentSink: fo.odata update and upsert by a key
// (and create with a key, refused by F&O for an existing entity) leave one
// entity whatever the number of copies.
func TestDuplicateCheckIdempotentSink(t *testing.T) {
	for _, mode := range []string{"upsert", "update", "create"} {
		sink := fmt.Sprintf(`{type: fo.odata, env: prod, entity: ProductionOrderHeaders, mode: %s, key: [dataAreaId, ProductionOrderNumber]}`, mode)
		if _, _, err := dupConfig(t, mqttClient, sink, ""); err != nil {
			t.Errorf("mode %s with key: %v", mode, err)
		}
	}
	// A sink without the capability (a local recorder) is not checked.
	if _, _, err := dupConfig(t, mqttClient, `{type: recorder}`, ""); err != nil {
		t.Error(err)
	}
}
