package app

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/plugins/outputs"
	"github.com/plantgate/plantgate/plugins/outputs/foodata"
)

// TestPatternAdvice: a high-rate flow to a synchronous sink and an urgent
// flow to a bulk sink are warned about, at the flow, with its path printed
// once, and the advice names only sink types this build has.
func TestPatternAdvice(t *testing.T) {
	pos := func(name string, line int) config.Pos {
		return config.Pos{File: "p.yaml", Line: line, Column: 3, Path: "flows." + name}
	}
	cfg := &config.Config{FlowOrder: []string{"bulk", "urgent", "calm"}, Flows: map[string]*config.Flow{
		"bulk":   {To: []string{"odata"}, Expect: config.Expect{Rate: "40/s"}, Pos: pos("bulk", 10)},
		"urgent": {To: []string{"dmf"}, Expect: config.Expect{Rate: "1/m", Urgent: true}, Pos: pos("urgent", 20)},
		"calm":   {To: []string{"mes"}, Expect: config.Expect{Rate: "1/s", Urgent: true}, Pos: pos("calm", 30)},
	}, Sinks: map[string]*config.Plugin{"odata": {Type: "fo.odata"}, "dmf": {Type: "fo.dmf"}, "mes": {Type: "fo.mes"}}}
	got := PatternAdvice(cfg)
	if len(got) != 2 {
		t.Fatalf("advice = %v", got)
	}
	bulk, urgent := got[0].String(), got[1].String()
	if !strings.HasPrefix(bulk, "p.yaml:10:3: flows.bulk: expects 40 records/s to sink odata (fo.odata): above what F&O's throttling tolerates for one client") ||
		!strings.HasPrefix(urgent, "p.yaml:20:3: flows.urgent: is urgent but sink dmf (fo.dmf)") {
		t.Fatalf("advice = %q, %q", bulk, urgent)
	}
	for name, s := range map[string]string{"bulk": bulk, "urgent": urgent} {
		if n := strings.Count(s, "flows."+name); n != 1 {
			t.Errorf("flow path printed %d times: %q", n, s)
		}
	}

	// Every sink type the advice recommends (after "route") is registered.
	typ := regexp.MustCompile(`fo\.[a-z]+`)
	for _, p := range got {
		_, advice, ok := strings.Cut(p.Msg, "; ")
		if !ok {
			t.Errorf("no advice in %q", p.Msg)
			continue
		}
		for _, tt := range typ.FindAllString(advice, -1) {
			if _, ok := outputs.Lookup(tt); !ok {
				t.Errorf("advice recommends sink type %s, which does not exist: %q", tt, p.Msg)
			}
		}
	}
	if _, ok := outputs.Lookup("fo.dmf"); !ok {
		if !strings.Contains(bulk, "this build has no bulk (DMF) sink") {
			t.Errorf("bulk advice without a bulk sink: %q", bulk)
		}
	} else if !strings.Contains(bulk, "route it to a fo.dmf sink") {
		t.Errorf("bulk advice does not name fo.dmf: %q", bulk)
	}
	if !strings.Contains(urgent, "route urgent records to fo.odata or fo.mes") {
		t.Errorf("urgent advice: %q", urgent)
	}
}

// adviceFor returns the advice messages for one flow to one sink.
func adviceFor(t *testing.T, f *config.Flow, sink *config.Plugin) []string {
	t.Helper()
	f.To = []string{"s"}
	cfg := &config.Config{FlowOrder: []string{"f"}, Flows: map[string]*config.Flow{"f": f}, Sinks: map[string]*config.Plugin{"s": sink}}
	var out []string
	for _, p := range PatternAdvice(cfg) {
		out = append(out, p.Msg)
	}
	return out
}

// TestPatternAdviceTelemetry: a declared rate at telemetry level (50/s and
// up) to any F&O sink, DMF included, is told that F&O is not a telemetry
// store and to aggregate; once, not also as a high rate; 40/s to DMF is
// fine, and so is 50/s to a sink outside F&O.
func TestPatternAdviceTelemetry(t *testing.T) {
	for _, typ := range []string{"fo.odata", "fo.mes", "fo.dmf"} {
		got := adviceFor(t, &config.Flow{Expect: config.Expect{Rate: "3000/m"}}, &config.Plugin{Type: typ})
		if len(got) != 1 || !strings.HasPrefix(got[0], "expects 3000/m (50 records/s) to sink s ("+typ+"): that is telemetry volume (4.3 million records a day), and F&O is not a telemetry store; aggregate before sending") {
			t.Errorf("%s: advice = %q", typ, got)
		}
	}
	if got := adviceFor(t, &config.Flow{Expect: config.Expect{Rate: "40/s"}}, &config.Plugin{Type: "fo.dmf"}); len(got) != 0 {
		t.Errorf("40/s to fo.dmf: advice = %q", got)
	}
	if got := adviceFor(t, &config.Flow{Expect: config.Expect{Rate: "500/s"}}, &config.Plugin{Type: "recorder"}); len(got) != 0 {
		t.Errorf("500/s to a recorder: advice = %q", got)
	}
}

// TestPatternAdviceSyncThreshold: maxSyncRate (5/s) is the limit for
// OData and MES; at it nothing is said, above it the flow is bulk.
func TestPatternAdviceSyncThreshold(t *testing.T) {
	for _, tc := range []struct {
		typ, rate string
		warn      bool
	}{{"fo.odata", "5/s", false}, {"fo.odata", "300/m", false}, {"fo.mes", "6/s", true}, {"fo.odata", "360/m", true}, {"fo.dmf", "20/s", false}} {
		got := adviceFor(t, &config.Flow{Expect: config.Expect{Rate: tc.rate}}, &config.Plugin{Type: tc.typ})
		if warned := len(got) == 1 && strings.Contains(got[0], "above what F&O's throttling tolerates for one client (about 5 records/s, one request per record)"); warned != tc.warn || len(got) > 1 {
			t.Errorf("%s at %s: advice = %q, want a warning: %v", tc.typ, tc.rate, got, tc.warn)
		}
	}
}

// TestPatternAdviceDualWrite: a flow writing master data that Dual-write
// syncs (customers, vendors, products, CDS entities) through OData is told
// that it is not a gateway path, whatever its rate; shop-floor entities
// are not.
func TestPatternAdviceDualWrite(t *testing.T) {
	odata := func(entity string) *config.Plugin {
		return &config.Plugin{Type: "fo.odata", Settings: &foodata.Config{Entity: entity}}
	}
	for _, set := range []string{"CustomersV3", "VendorsV2", "ReleasedProductsV2", "releasedproductsv2", "CDSReleasedDistinctProducts", "MyDataverseAccounts"} {
		got := adviceFor(t, &config.Flow{}, odata(set))
		if len(got) != 1 || !strings.HasPrefix(got[0], "writes "+set+" through sink s (fo.odata): master data that Dual-write keeps in sync between F&O and Dataverse apps") ||
			!strings.Contains(got[0], "plantgate is not the path for it") {
			t.Errorf("%s: advice = %q", set, got)
		}
	}
	for _, set := range []string{"ProductionOrderHeaders", "InventoryCountingJournalLines", "ProductionPickingListJournalEntries"} {
		if got := adviceFor(t, &config.Flow{Expect: config.Expect{Rate: "1/s"}}, odata(set)); len(got) != 0 {
			t.Errorf("%s: advice = %q", set, got)
		}
	}
}

// TestPatternAdviceShippedConfigs: the shipped configs follow the
// patterns: loading them adds no pattern advice.
func TestPatternAdviceShippedConfigs(t *testing.T) {
	// The example config reads its secrets as systemd credentials.
	creds := t.TempDir()
	for _, name := range []string{"fo-client-secret", "admin-token"} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte("example-"+name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv("PLANTGATE_DEMO_DIR", t.TempDir())
	t.Setenv("PLANTGATE_DEMO_FO_SECRET", "x")
	t.Setenv("PLANTGATE_DEMO_MQTT_PASSWORD", "x")
	t.Setenv("PLANTGATE_DEMO_ADMIN_TOKEN", "x")
	for _, f := range []string{"../../configs/plantgate.example.yaml", "../../configs/demo.yaml"} {
		// The configs name files of their machines (the emulator's CA).
		opts := ConfigOptions()
		opts.SkipFiles = true
		cfg, _, err := LoadConfigOptions(f, opts)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got := PatternAdvice(cfg); len(got) != 0 {
			t.Errorf("%s: advice = %v", f, got)
		}
	}
}
