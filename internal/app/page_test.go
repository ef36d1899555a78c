package app

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// pageConfig: MES messages from a file to fo.mes on the emulator.
const pageConfig = `gateway:
  id: line-7
  data_dir: %[1]s
  drain_timeout: 1s
http: {listen: "127.0.0.1:0", admin_token: "${env:PG_TEST_ADMIN_TOKEN}"}
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_TEST_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
    timeout: 300ms
    max_requests_per_second: 500
sources:
  mes:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
flows:
  start:
    from: mes
    key: payload.order
    to: mes
    map:
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.n
sinks:
  mes:
    type: fo.mes
    env: emu
    message_type: ProdProductionOrderStart
    max_batch: 5
    retry: {initial: 20ms, max: 200ms}
`

type pageGateway struct {
	a    *App
	base string
	dir  string
	em   *foemu.Emulator
	stop func()
}

func startPageGateway(t *testing.T, secret string) *pageGateway {
	t.Helper()
	return startPageGatewayWith(t, secret, pageConfig)
}

func startPageGatewayWith(t *testing.T, secret, config string) *pageGateway {
	t.Helper()
	em := foemutest.Start(t)
	t.Setenv("PG_TEST_FO_SECRET", secret)
	t.Setenv("PG_TEST_ADMIN_TOKEN", adminToken)
	dir := t.TempDir()
	path := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(config, dir, em.BaseURL(), em.CAFile())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, flows, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, flows, zerolog.Nop())
	a.probeInterval = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "http listening", func() bool { return a.HTTPAddr() != nil })
	g := &pageGateway{a: a, base: "http://" + a.HTTPAddr().String(), dir: dir, em: em}
	g.stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(g.stop)
	return g
}

func (g *pageGateway) add(t *testing.T, lines ...string) {
	t.Helper()
	appendLines(t, filepath.Join(g.dir, "in.jsonl"), lines...)
}

// views is what each of the four outputs of the health model says.
type views struct {
	readyzCode             int
	readyzState            string
	statusReady            bool
	statusState            string
	metricReady, pageState string
	readyzBody, pageText   string
}

func (g *pageGateway) views(t *testing.T) views {
	t.Helper()
	var v views
	v.readyzCode, v.readyzBody = get(t, g.base+"/readyz", "")
	var h Health
	_ = json.Unmarshal([]byte(v.readyzBody), &h)
	v.readyzState = h.State
	_, body := get(t, g.base+"/api/v1/status", "")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status JSON: %v", err)
	}
	v.statusReady, v.statusState = st.Ready, st.Health.State
	_, m := get(t, g.base+"/metrics", "")
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "plantgate_ready ") {
			v.metricReady = strings.TrimPrefix(l, "plantgate_ready ")
		}
	}
	_, page := get(t, g.base+"/", "")
	v.pageText = page
	if i := strings.Index(page, `id="state">`); i >= 0 {
		rest := page[i+len(`id="state">`):]
		v.pageState = rest[:strings.Index(rest, "<")]
	}
	return v
}

// TestOneHealthTruth: /readyz, /api/v1/status, /metrics and the page
// read one health model, so they agree, healthy or not; the reason a
// sink cannot deliver (here the identity platform refuses the secret) is
// named in each.
func TestOneHealthTruth(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		g := startPageGateway(t, foemu.DefaultClientSecret)
		g.add(t, `{"order":"P000001","n":1}`)
		eventually(t, "delivered", func() bool { return len(g.em.Messages()) == 1 })
		eventually(t, "ready", func() bool { return g.views(t).readyzCode == 200 })
		v := g.views(t)
		if v.readyzState != StateReady || !v.statusReady || v.statusState != StateReady || v.metricReady != "1" || v.pageState != "ready" {
			t.Errorf("outputs disagree or are not ready: %+v", v)
		}
		if strings.Contains(v.pageText, `id="outcomes"`) {
			t.Error("the page shows F&O outcomes with no sink tracking them")
		}
	})
	t.Run("token refused", func(t *testing.T) {
		g := startPageGateway(t, "not-the-secret")
		g.add(t, `{"order":"P000001","n":1}`)
		eventually(t, "not ready", func() bool { return g.views(t).readyzCode == 503 })
		v := g.views(t)
		if v.readyzState != StateNotReady || v.statusReady || v.statusState != StateNotReady || v.metricReady != "0" || v.pageState != "not ready" {
			t.Errorf("outputs disagree: %+v", v)
		}
		for name, text := range map[string]string{"readyz": v.readyzBody, "page": v.pageText} {
			if !strings.Contains(text, "identity platform") {
				t.Errorf("%s does not say the identity platform refused the token:\n%s", name, text)
			}
		}
		if len(g.em.Messages()) != 0 {
			t.Error("a message reached F&O without a token")
		}
	})
}

// outcomesPageConfig is pageConfig with the fo.mes sink tracking
// outcomes (outcome_timeout 1s) and F&O's message processed events read
// from events.jsonl into a fo.outcomes sink.
var outcomesPageConfig = strings.NewReplacer(
	"    message_type: ProdProductionOrderStart\n", "    message_type: ProdProductionOrderStart\n    track_outcomes: true\n    outcome_timeout: 1s\n",
	"sinks:\n", "sinks:\n  outcomes: {type: fo.outcomes, mes: mes, retry: {initial: 20ms, max: 200ms}}\n",
	"flows:\n", "flows:\n  outcomes: {from: events, key: payload.EventId, id: payload.EventId, to: outcomes}\n",
	"sources:\n", "sources:\n  events: {type: file, path: \"%[1]s/events.jsonl\", follow: true, poll_interval: 10ms}\n",
).Replace(pageConfig)

// outcomesText is the text of the page's F&O outcomes table, one line
// per row, "" without the table.
func outcomesText(page string) string {
	i := strings.Index(page, `<table id="outcomes">`)
	if i < 0 {
		return ""
	}
	tbl := page[i:]
	tbl = tbl[:strings.Index(tbl, "</table>")]
	tbl = strings.ReplaceAll(strings.ReplaceAll(tbl, "\n", " "), "</tr>", "\n")
	tbl = html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(tbl, " "))
	var lines []string
	for l := range strings.Lines(tbl) {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestStatusPageShowsOutcomes sends three MES messages through a fo.mes
// sink that tracks outcomes; F&O's events say the first was processed and
// the second failed, the third gets none within outcome_timeout. The page
// shows the sink's outcome counts as the status does: 1 processed, 1
// failed, 1 awaiting and overdue.
func TestStatusPageShowsOutcomes(t *testing.T) {
	g := startOutcomesGateway(t)
	_, page := get(t, g.base+"/", "")
	got := outcomesText(page)
	want := "sink processed failed in F&O awaiting overdue duplicate / unknown events\nmes 1 1 1 1 no event within 1s 0 / 0"
	if got != want {
		t.Fatalf("the page's F&O outcomes table:\n%s\nwant:\n%s\nstatus: %v", got, want, mesOutcomes(g))
	}
}

func mesOutcomes(g *pageGateway) map[string]any {
	for _, s := range g.a.Status().Sinks {
		if s.Name == "mes" {
			o, _ := s.Details["outcomes"].(map[string]any)
			return o
		}
	}
	return nil
}

// startOutcomesGateway starts a gateway on outcomesPageConfig, sends
// three messages and has F&O's events say the first was processed and
// the second failed; it returns when the third is overdue.
func startOutcomesGateway(t *testing.T) *pageGateway {
	t.Helper()
	g := startPageGatewayWith(t, foemu.DefaultClientSecret, outcomesPageConfig)
	if err := os.WriteFile(filepath.Join(g.dir, "events.jsonl"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	g.add(t, `{"order":"P000401","n":1}`, `{"order":"P000402","n":2}`, `{"order":"P000403","n":3}`)
	eventually(t, "3 messages in F&O", func() bool { return len(g.em.Messages()) == 3 })
	content := map[string]string{}
	for _, m := range g.em.Messages() {
		content[m.ProductionOrder] = m.Content
	}
	event := func(id, order, state string) string {
		b, err := json.Marshal(map[string]any{"EventId": id, "EventTime": time.Now().UTC().Format(time.RFC3339Nano), "MessageType": "ProdProductionOrderStart",
			"LegalEntity": "USMF", "MessageContent": content[order], "MessageState": state, "MessageInfolog": "Production order " + order + " does not exist."})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	appendLines(t, filepath.Join(g.dir, "events.jsonl"), event("E1", "P000401", "Processed"), event("E2", "P000402", "Failed"))
	eventually(t, "the outcomes in status", func() bool {
		o := mesOutcomes(g)
		return o["confirmed"] == int64(1) && o["failed_in_fo"] == int64(1) && o["awaiting_outcome"] == 1 && o["overdue"] == 1
	})
	return g
}

// chromiumPath finds headless Chromium; the page tests need it. In CI
// (CI set) its absence fails the test: scripts/install-test-tools.sh
// installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Chromium")
	}
	for _, n := range []string{os.Getenv("PLANTGATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if n == "" {
			continue
		}
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("Chromium not found: scripts/install-test-tools.sh installs it (apt-get install chromium)")
	}
	t.Skip("Chromium not installed (apt-get install chromium)")
	return ""
}

// shot renders url in headless Chromium at width and returns the page's
// visible text, whether the page scrolls sideways, and a screenshot.
func shot(t *testing.T, chrome, url string, width int) (text string, overflow bool, png []byte) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(width, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()
	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(int64(width), 900),
		chromedp.Navigate(url),
		chromedp.WaitVisible("#state"),
	)
	if err != nil {
		t.Fatalf("chromium %s at %d px: %v", url, width, err)
	}
	scrollW, err1 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	innerW, err2 := chromedp.Run(ctx, chromedp.Evaluate[int](`window.innerWidth`))
	text, err3 := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	png, err4 := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	for _, e := range []error{err1, err2, err3, err4} {
		if e != nil {
			t.Fatalf("chromium %s at %d px: %v", url, width, e)
		}
	}
	return text, scrollW > innerW, png
}

func saveShot(t *testing.T, name string, png []byte) {
	dir := os.Getenv("PLANTGATE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStatusPageInChromium renders the status page in headless Chromium
// at desktop and phone width in five states and checks what each shows:
// the state, the reason, the dead letters and records in doubt with their
// actions, the F&O outcome counts. At 390 px the page itself must not scroll sideways (tables
// scroll inside their box).
func TestStatusPageInChromium(t *testing.T) {
	chrome := chromiumPath(t)
	type check struct {
		name  string
		url   string
		want  []string
		avoid []string
	}
	var checks []check

	healthy := startPageGateway(t, foemu.DefaultClientSecret)
	healthy.add(t, `{"order":"P000001","n":1}`)
	eventually(t, "healthy: delivered and ready", func() bool {
		c, _ := get(t, healthy.base+"/readyz", "")
		return len(healthy.em.Messages()) == 1 && c == 200
	})
	checks = append(checks, check{"healthy", healthy.base + "/", []string{"ready", "start", "F&O environments", "No dead letters", "No records in doubt", "UTC"}, []string{"not ready", "Needs attention", "F&O outcomes"}})

	refused := startPageGateway(t, "not-the-secret")
	eventually(t, "token refused: not ready", func() bool { c, _ := get(t, refused.base+"/readyz", ""); return c == 503 })
	checks = append(checks, check{"token-refused", refused.base + "/", []string{"not ready", "Needs attention", "no access token from the identity platform", "refused:"}, nil})

	dead := startPageGateway(t, foemu.DefaultClientSecret)
	dead.add(t, `{"order":"P000077"}`, `not json at all`, `{"order":"P000078","n":2}`)
	eventually(t, "dead letters", func() bool { st, _ := dead.a.store.Stats(); return st.Dead == 2 })
	checks = append(checks,
		check{"dead-letters", dead.base + "/", []string{"degraded", "Dead letters", "not json at all", "replay", "drop", "_source.mes"}, nil},
		check{"dead-letters-search", dead.base + "/?q=P000077", []string{"P000077", "replay"}, []string{"not json at all"}})

	held := startPageGateway(t, foemu.DefaultClientSecret)
	if err := held.em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, Latency: foemu.Duration(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	held.add(t, `{"order":"P000301","n":1}`)
	eventually(t, "a message in doubt", func() bool { return len(held.a.Status().InDoubt) == 1 })
	if err := held.em.SetFaults(foemu.Faults{}); err != nil {
		t.Fatal(err)
	}
	held.add(t, `{"order":"P000301","n":2}`)
	eventually(t, "one held and one parked", func() bool { return len(held.a.Status().InDoubt) == 2 })
	outcomes := startOutcomesGateway(t)
	checks = append(checks, check{"outcomes", outcomes.base + "/", []string{"F&O outcomes", "failed in F&O", "no event within 1s"}, nil})

	checks = append(checks, check{"in-doubt", held.base + "/", []string{"degraded", "P000301", "held", "parked", "release", "F&O has it", "holds 1 records in doubt", "No dead letters"}, nil})

	for _, c := range checks {
		for _, width := range []int{1280, 390} {
			text, overflow, png := shot(t, chrome, c.url, width)
			saveShot(t, fmt.Sprintf("%s-%d", c.name, width), png)
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("%s at %d px: the page does not show %q:\n%s", c.name, width, w, text)
				}
			}
			for _, w := range c.avoid {
				if strings.Contains(text, w) {
					t.Errorf("%s at %d px: the page shows %q", c.name, width, w)
				}
			}
			if overflow {
				t.Errorf("%s at %d px: the page scrolls sideways", c.name, width)
			}
			if strings.Contains(text, adminToken) {
				t.Errorf("%s: the page shows the admin token", c.name)
			}
		}
	}
}
