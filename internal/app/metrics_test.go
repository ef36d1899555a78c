package app

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/certexpiry"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden")

// metricsConfig has one of each kind of source and sink that reports
// metrics: a file source and an embedded MQTT broker; a recorder, fo.mes
// (tracking F&O's outcomes), fo.odata with overflow to fo.dmf; one F&O
// environment.
const metricsConfig = `gateway:
  id: golden
  data_dir: %[1]s
  drain_timeout: 1s
http: {listen: "127.0.0.1:0"}
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_TEST_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
sources:
  mes:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
  line:
    type: mqtt
    embedded: {listen: "127.0.0.1:0", allow_anonymous: true}
    topics: [line/#]
flows:
  finished:
    from: mes
    when: payload.type == "finished"
    key: payload.order
    id: payload.id
    to: trace
    map:
      ProductionOrderNumber: payload.order
      Good: payload.good
  started:
    from: mes
    when: payload.type == "started"
    key: payload.order
    id: payload.id
    to: mes
    map:
      _messageType: '"ProdProductionOrderStart"'
      dataAreaId: '"USMF"'
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.qty
  lines:
    from: mes
    when: payload.type == "line"
    key: payload.id
    to: odata
    overflow: {sink: dmf, backlog: 1000}
    map:
      ProductionOrderNumber: payload.order
      ItemNumber: payload.item
      ConsumptionBomQuantity: payload.qty
  telemetry:
    from: line
    key: topic
    accept_duplicates: true
    to: trace
    map:
      Topic: topic
sinks:
  trace:
    type: recorder
    path: %[1]s/trace.jsonl
  mes:
    type: fo.mes
    env: emu
    track_outcomes: true
  odata:
    type: fo.odata
    env: emu
    entity: ProductionPickingListJournalEntries
    mode: create
  dmf:
    type: fo.dmf
    env: emu
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
    batch: {max_records: 1000, max_age: 1h}
`

// startMetricsGateway runs the gateway of metricsConfig against an
// emulator and waits until every component is up.
func startMetricsGateway(t *testing.T) (a *App, em *foemu.Emulator, dir string) {
	t.Helper()
	em = foemutest.Start(t)
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	dir = t.TempDir()
	appendLines(t, filepath.Join(dir, "in.jsonl"))
	a, cancel, done := startAppWith(t, dir, fmt.Sprintf(metricsConfig, dir, em.BaseURL(), em.CAFile()))
	t.Cleanup(func() {
		cancel()
		<-done
	})
	eventually(t, "every source and sink up", func() bool {
		n := 0
		for _, c := range a.componentList() {
			if !c.Up {
				return false
			}
			if c.Kind == "source" || c.Kind == "sink" {
				n++
			}
		}
		return n == 6
	})
	return a, em, dir
}

// varying are the families whose values depend on timing, file layout or
// the machine: the golden keeps their names and labels, not their values.
var varying = map[string]bool{
	"plantgate_queue_file_bytes":                     true,
	"plantgate_queue_used_bytes":                     true,
	"plantgate_queue_bytes":                          true,
	"plantgate_queue_dead_bytes":                     true,
	"plantgate_queue_oldest_record_age_seconds":      true,
	"plantgate_fo_requests_total":                    true, // probes and polls run on timers
	"plantgate_fo_limiter_rate_requests_per_second":  true,
	"plantgate_mqtt_last_message_timestamp_seconds":  true,
	"plantgate_sink_write_duration_seconds":          true, // records arrive in one batch or several
	"plantgate_certificate_expiry_timestamp_seconds": true, // the emulator makes its CA at start
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)

// normalize keeps the families of a scrape but go_* and process_*, with
// the values of varying families and of histograms' sums replaced by "_",
// histograms' buckets dropped, and F&O's requests of timer-driven
// operations (probes, DMF polls) dropped. It reports whether go_* and
// process_* families were present.
func normalize(t *testing.T, scrape string) (string, bool) {
	t.Helper()
	var out []string
	runtime := map[string]bool{}
	histograms := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(scrape))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "# ") {
			f := strings.Fields(l)
			if len(f) < 3 {
				continue
			}
			if strings.HasPrefix(f[2], "go_") || strings.HasPrefix(f[2], "process_") {
				runtime[strings.SplitN(f[2], "_", 2)[0]] = true
				continue
			}
			if f[1] == "TYPE" && len(f) == 4 && f[3] == "histogram" {
				histograms[f[2]] = true
			}
			out = append(out, l)
			continue
		}
		m := sampleLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("not a sample line: %q", l)
		}
		name, labels, value := m[1], m[2], m[3]
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(name, suffix); base != name && histograms[base] {
				family = base
				if suffix != "_count" {
					value = "_"
				}
			}
		}
		if family != name && strings.HasSuffix(name, "_bucket") {
			continue // the buckets are in the code; their counts vary
		}
		if varying[family] {
			value = "_"
		}
		if family == "plantgate_fo_requests_total" && !strings.Contains(labels, `op="mes"`) && !strings.Contains(labels, `op="odata"`) {
			continue // probes, DMF polls and token checks run on timers
		}
		if family == "plantgate_fo_request_duration_seconds" {
			if !strings.Contains(labels, `op="mes"`) && !strings.Contains(labels, `op="odata"`) {
				continue
			}
		}
		out = append(out, name+labels+" "+value)
	}
	return strings.Join(out, "\n") + "\n", runtime["go"] && runtime["process"]
}

// fixedStateScrape runs the gateway of metricsConfig, brings it to a
// fixed state (three records delivered to a recorder, one start message to
// F&O's MES service, two lines to OData, a duplicate, an unmatched message
// and an undecodable line dead-lettered) and returns its /metrics.
func fixedStateScrape(t *testing.T) string {
	t.Helper()
	a, em, dir := startMetricsGateway(t)
	in := filepath.Join(dir, "in.jsonl")
	appendLines(t, in,
		`{"type":"finished","order":"P1","id":"f1","good":5}`,
		`{"type":"finished","order":"P1","id":"f1","good":5}`, // duplicate
		`{"type":"finished","order":"P2","id":"f2","good":3}`,
		`{"type":"finished","order":"P3","id":"f3","good":1}`,
		`{"type":"started","order":"P000101","id":"s1","qty":10}`,
		`{"type":"line","order":"P000101","id":"l1","item":"RM-2000","qty":1}`,
		`{"type":"line","order":"P000101","id":"l2","item":"RM-2000","qty":2}`,
		`{"type":"other","order":"P4"}`, // unmatched
		`not json`,                      // dead-lettered in _source.mes
	)
	eventually(t, "everything delivered", func() bool {
		recs, _ := em.Records("ProductionPickingListJournalEntries")
		return len(traceLines(t, filepath.Join(dir, "trace.jsonl"))) == 3 && len(em.Messages()) == 1 && len(recs) == 2 &&
			testutil.ToFloat64(a.m.Delivered.WithLabelValues("lines.odata")) == 2 && testutil.ToFloat64(a.m.Delivered.WithLabelValues("mes")) == 1 &&
			testutil.ToFloat64(a.m.Delivered.WithLabelValues("finished.trace")) == 3
	})
	code, body := get(t, "http://"+a.HTTPAddr().String()+"/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics = %d %s", code, body)
	}
	return body
}

// TestMetricsGolden: /metrics of a gateway in a fixed state
// (fixedStateScrape) matches testdata/metrics.golden: every family's name,
// help, type and labels, and every counter's value, including the ones
// still at 0. go test ./internal/app -run TestMetricsGolden -update
// rewrites it.
func TestMetricsGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a gateway against the emulator")
	}
	body := fixedStateScrape(t)
	got, runtime := normalize(t, body)
	if !runtime {
		t.Errorf("/metrics lacks the go_* or process_* families:\n%s", body)
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")); diff != "" {
		t.Errorf("/metrics differs from %s (-want +got); if the change is meant, rerun with -update:\n%s", golden, diff)
	}
}

// notAtStart are the families a gateway cannot export before their first
// event: the status label of fo_requests_total is whatever F&O answers,
// the op label of both the operation a sink asks for; a DMF batch's steps
// are observed as it passes them. They are histograms or carry labels
// from outside; every other counter starts at 0.
var notAtStart = map[string]bool{
	"plantgate_fo_requests_total":           true,
	"plantgate_fo_request_duration_seconds": true, // by op: what the sinks ask
	"plantgate_dmf_step_duration_seconds":   true,
}

var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestEveryMetricIsExportedFromTheStart: on a gateway that has received
// nothing, every family registered on its registry has a sample, so a
// counter's first increase is seen by rate() and increase() and alerts
// can tell 0 from missing (only notAtStart excepted).
func TestEveryMetricIsExportedFromTheStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a gateway against the emulator")
	}
	a, _, _ := startMetricsGateway(t)
	described := describedFamilies(a.reg)
	fams, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		if len(f.GetMetric()) > 0 {
			exported[f.GetName()] = true
		}
	}
	var missing []string
	for _, n := range described {
		if !exported[n] && !notAtStart[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("registered but not exported before their first event: %v", missing)
	}
	if len(described) < 60 {
		t.Errorf("only %d families registered: %v", len(described), described)
	}
}

// describedFamilies returns the names of every family registered on reg.
func describedFamilies(reg *prometheus.Registry) []string {
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			seen[m[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestHTTPCertificateExpiryExported: with http.tls the listener's
// certificate expiry is on /metrics, for PlantgateCertificateExpiring.
func TestHTTPCertificateExpiryExported(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	body := withHTTP(fmt.Sprintf(testConfig, dir), fmt.Sprintf("  tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile))
	a, cancel, done := startAppWith(t, dir, body)
	defer func() { cancel(); <-done }()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certexpiry.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + a.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	scrape, _ := io.ReadAll(resp.Body)
	want := fmt.Sprintf(`plantgate_certificate_expiry_timestamp_seconds{component="http",name="listener",use="server_certificate"} %g`, float64(certs[0].NotAfter.Unix()))
	if !strings.Contains(string(scrape), want+"\n") {
		t.Errorf("/metrics lacks %s:\n%s", want, scrape)
	}
}

// TestReloadRefusedMetric: plantgate_config_last_reload_successful is 0
// while the last reload was refused and 1 again once one succeeds.
func TestReloadRefusedMetric(t *testing.T) {
	dir := t.TempDir()
	a, cancel, done := startApp(t, dir)
	defer func() { cancel(); <-done }()
	gauge := func(v int) string {
		return fmt.Sprintf(`
# HELP plantgate_config_last_reload_successful 0 while the last reload (SIGHUP) was refused and the previous config keeps running; 1 otherwise.
# TYPE plantgate_config_last_reload_successful gauge
plantgate_config_last_reload_successful %d
`, v)
	}
	for _, step := range []struct {
		reloadErr string
		want      int
	}{{"", 1}, {"plantgate.yaml:3:5: flows.x.to: unknown sink", 0}, {"", 1}} {
		a.SetReloadError(step.reloadErr)
		if err := testutil.GatherAndCompare(a.reg, strings.NewReader(gauge(step.want)), "plantgate_config_last_reload_successful"); err != nil {
			t.Errorf("reload error %q: %v", step.reloadErr, err)
		}
	}
}
