package app

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The alert rules and the dashboard shipped for central IT.
var (
	alertsDir     = filepath.Join("..", "..", "configs", "prometheus")
	alertsFile    = filepath.Join(alertsDir, "alerts.yaml")
	dashboardFile = filepath.Join("..", "..", "configs", "grafana", "plantgate.json")
)

// notGateway are the names the rules may use that Prometheus makes, not
// the gateway: up is the scrape's own result.
var notGateway = map[string]bool{"up": true}

// promtool returns the promtool that scripts/install-test-tools.sh puts in
// .tools/bin (PLANTGATE_PROMTOOL or PATH otherwise).
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PLANTGATE_PROMTOOL"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "..", ".tools", "bin", "promtool"))
	if err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if testing.Short() {
		t.Skip("promtool not installed (scripts/install-test-tools.sh puts it in .tools/bin); skipped under -short")
	}
	t.Fatalf("promtool not found at %s nor on PATH: run scripts/install-test-tools.sh (make tools) or set PLANTGATE_PROMTOOL", p)
	return ""
}

// TestPromtoolCheckRules: configs/prometheus/alerts.yaml is a valid rule
// file for Prometheus (promtool check rules, which also lints it).
func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", alertsFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
}

// TestPromtoolRuleUnitTests: the rules fire (and stay quiet) as
// configs/prometheus/alerts_test.yaml says: a stalled stream, a stalled
// DMF stream, new dead letters, records in doubt, MES messages F&O failed
// and MES messages without an outcome after outcome_timeout, a refused
// token, F&O unreachable, a queue near its quota and full, a disconnected
// source, expiring certificates.
func TestPromtoolRuleUnitTests(t *testing.T) {
	cmd := exec.Command(promtool(t), "test", "rules", "alerts_test.yaml")
	cmd.Dir = alertsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestAlertsAndDashboardUseExportedMetrics: every metric named in an
// alert expression and in a dashboard query is in the gateway's /metrics,
// so renaming a metric cannot silently leave an alert that never fires or
// a panel that stays empty.
func TestAlertsAndDashboardUseExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a gateway against the emulator")
	}
	exported := exportedNames(fixedStateScrape(t))
	check := func(what string, exprs map[string]string) {
		t.Helper()
		used := 0
		for where, expr := range exprs {
			names := metricNames(expr)
			if len(names) == 0 {
				t.Errorf("%s %s: no metric found in %q", what, where, expr)
			}
			for _, n := range names {
				used++
				if !exported[n] && !notGateway[n] {
					t.Errorf("%s %s uses %s, which the gateway does not export", what, where, n)
				}
			}
		}
		if used < 20 {
			t.Errorf("%s: only %d metric uses found", what, used)
		}
	}
	check("alert", alertExprs(t))
	check("dashboard panel", dashboardExprs(t))
}

// alertExprs returns each rule's expression by alert name.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert+r.Record] = r.Expr
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s: %d rules", alertsFile, len(out))
	}
	return out
}

// dashboardExprs returns every query of the dashboard: each panel's
// targets and the template variables' queries.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name, Type, Definition string
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out[p.Title+"#"+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			q := strings.TrimSuffix(strings.TrimPrefix(v.Definition, "label_values("), ")")
			out["variable "+v.Name] = q
		}
	}
	if len(out) < 20 {
		t.Fatalf("%s: %d queries", dashboardFile, len(out))
	}
	return out
}

// exportedNames returns the sample names of a scrape: each family's name
// and, for histograms and summaries, its _bucket, _sum and _count.
func exportedNames(scrape string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(scrape, "\n") {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
			if f[3] == "histogram" || f[3] == "summary" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					out[f[2]+s] = true
				}
			}
		}
	}
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// metricNames returns the metric names of a PromQL expression: its
// identifiers once strings, label matchers, ranges and grouping clauses
// are gone, less function names (followed by a parenthesis) and keywords.
// The second argument of label_values (a label) is dropped too.
func metricNames(expr string) []string {
	e := promString.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRange.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	if i := strings.IndexByte(e, ','); i >= 0 && !strings.ContainsAny(e, "()") {
		e = e[:i] // label_values(metric, label)
	}
	seen := map[string]bool{}
	for _, m := range promIdent.FindAllStringIndex(e, -1) {
		id := e[m[0]:m[1]]
		rest := strings.TrimLeft(e[m[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promKeywords[strings.ToLower(id)] {
			continue
		}
		if m[0] > 0 && (e[m[0]-1] >= '0' && e[m[0]-1] <= '9' || e[m[0]-1] == '.' || e[m[0]-1] == '$') {
			continue // 1e+05, a duration's unit, a template variable
		}
		seen[id] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestMetricNames checks the extraction the test above relies on.
func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`increase(plantgate_dead_lettered_total{stream!~"_source\\..*"}[10m]) > 0`:                                                                       "plantgate_dead_lettered_total",
		`sum by (instance, job, env) (increase(plantgate_fo_token_refreshes_total{result="error"}[15m])) > 0 unless on (instance, job, env) x_total > 0`: "plantgate_fo_token_refreshes_total x_total",
		`histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m])))`:                                                                                     "a_bucket",
		`(plantgate_certificate_expiry_timestamp_seconds - time()) < 21 * 86400`:                                                                         "plantgate_certificate_expiry_timestamp_seconds",
		`label_replace(increase(b_total[2h]), "stream", "$1", "sink", "(.*)") == 0 and on (stream) c`:                                                    "b_total c",
		`plantgate_build_info, instance`: "plantgate_build_info",
		`up{job="plantgate"} == 0`:       "up",
		`plantgate_queue_used_bytes / plantgate_queue_max_bytes > 0.8 and plantgate_queue_max_bytes > 0`: "plantgate_queue_max_bytes plantgate_queue_used_bytes",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// TestDashboardLayout: the dashboard's panels have unique ids and lie on
// Grafana's 24-column grid without overlapping, so it imports as drawn.
func TestDashboardLayout(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string
		Panels []struct {
			ID      int
			Title   string
			GridPos struct{ H, W, X, Y int }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" {
		t.Error("no uid")
	}
	ids := map[int]bool{}
	for i, p := range d.Panels {
		g := p.GridPos
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v off the 24-column grid", p.Title, g)
		}
		for _, q := range d.Panels[:i] {
			h := q.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", q.Title, p.Title)
			}
		}
	}
}
