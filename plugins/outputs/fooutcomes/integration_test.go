package fooutcomes_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// The gateway under test is the real binary, built once per test run.
var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func plantgate(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the plantgate binary")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "plantgate-outcomes-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "plantgate")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/plantgate/plantgate/cmd/plantgate").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

const gatewayConfig = `gateway:
  id: outcomes
  data_dir: %[1]s
  drain_timeout: 1s
http:
  listen: %[2]s
  admin_token: ${env:PG_ADMIN_TOKEN}
fo:
  emu:
    url: %[3]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_FO_SECRET}
    authority_url: %[3]s
    ca_file: %[4]s
    company: USMF
    timeout: 1s
sources:
  in:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
  events:
    type: fo.events
%[7]sflows:
  starts:
    from: in
    key: payload.order
    id: payload.id
    to: mes
    map:
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.n
  outcomes:
    from: events
    when: meta.business_event_id == "SysMessageProcessorMessageProcessedBusinessEvent"
    key: payload.EventId
    id: payload.EventId
    to: outcomes
  released:
    from: events
    when: meta.business_event_id == "ProductionOrderReleasedBusinessEvent"
    key: payload.ProductionOrderNumber
    id: payload.EventId
    to: orders
    map:
      ProductionOrderNumber: payload.ProductionOrderNumber
      Company: payload.LegalEntity
      Item: payload.ItemNumber
      Quantity: payload.ScheduledQuantity
      Status: payload.ProductionOrderStatus
sinks:
  orders:
    type: mqtt
    broker: %[6]s
    client_id: plantgate-outcomes-test
    topic: mes/orders/{Company}/{ProductionOrderNumber}
    retry: {initial: 20ms, max: 200ms}
  mes:
    type: fo.mes
    env: emu
    message_type: ProdProductionOrderStart
    track_outcomes: true
    outcome_timeout: 1m
    retry: {initial: 20ms, max: 200ms}
  outcomes:
    type: fo.outcomes
    mes: mes
    retry: {initial: 20ms, max: 200ms}
`

type gateway struct {
	t       *testing.T
	bin     string
	cfg     string
	addr    string
	env     []string
	cmd     *exec.Cmd
	exited  chan error
	stderr  *bytes.Buffer
	starts  int
	adminTk string
}

func (g *gateway) start() {
	g.t.Helper()
	g.cmd = exec.Command(g.bin, "run", "-c", g.cfg)
	g.cmd.Env = append(os.Environ(), g.env...)
	g.stderr = &bytes.Buffer{}
	g.cmd.Stderr = g.stderr
	g.cmd.Stdout = io.Discard
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.starts++
	g.exited = make(chan error, 1)
	cmd := g.cmd
	go func() { g.exited <- cmd.Wait() }()
	foemutest.WaitFor(g.t, 20*time.Second, "the gateway to listen", func() bool {
		select {
		case err := <-g.exited:
			g.t.Fatalf("gateway exited: %v\n%s", err, g.stderr.String())
		default:
		}
		resp, err := http.Get("http://" + g.addr + "/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	})
}

func (g *gateway) kill() {
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

func (g *gateway) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-g.exited; err != nil {
		g.t.Errorf("gateway stop: %v\n%s", err, g.stderr.String())
	}
}

// api calls the admin API; nil body is a GET.
func (g *gateway) api(path string, body any) map[string]any {
	g.t.Helper()
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		b, _ := json.Marshal(body)
		method, rd = http.MethodPost, bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+g.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+g.adminTk)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode/100 != 2 {
		g.t.Logf("%s %s: %d %v", method, path, resp.StatusCode, m)
		return nil
	}
	return m
}

func (g *gateway) list(path, field string) []map[string]any {
	m := g.api(path, nil)
	raw, _ := m[field].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		if x, ok := r.(map[string]any); ok {
			out = append(out, x)
		}
	}
	return out
}

func messagesOf(em *foemu.Emulator, order string) []foemu.Message {
	var out []foemu.Message
	for _, m := range em.Messages() {
		if m.ProductionOrder == order {
			out = append(out, m)
		}
	}
	return out
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
}

// TestOutcomesThroughSIGKILL runs the real gateway against the emulator
// with F&O's business events arriving through Azurite and the HTTPS
// endpoint, killing it with SIGKILL again and again: a message for an
// order that is not released ends as a dead letter carrying F&O's
// infolog; after the order is released in F&O and the dead letter
// replayed it is processed once; a send whose answer is lost (in doubt)
// is resolved by its event without an operator. The emulator's own
// records are the count: nothing lost, nothing twice.
func TestOutcomesThroughSIGKILL(t *testing.T) {
	for _, endpoints := range []string{"blob", "https", "blob+https"} {
		t.Run(endpoints, func(t *testing.T) { testOutcomes(t, endpoints) })
	}
}

const (
	blobSource = `    blob:
      url: %s
      account: devstoreaccount1
      key: ${env:PG_AZ_KEY}
      container: events
      poll_interval: 100ms
`
	httpsSource = `    https:
      path: hook
      token: ${env:PG_EVENTS_TOKEN}
`
)

func testOutcomes(t *testing.T, endpoints string) {
	bin := plantgate(t)
	azurite := foemutest.StartAzurite(t)
	em := foemutest.Start(t)
	broker := startMosquitto(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	var eps []foemu.EventEndpoint
	source := ""
	if strings.Contains(endpoints, "blob") {
		eps = append(eps, foemu.EventEndpoint{Name: "blob", Type: foemu.EndpointBlob, Container: "events", Blob: &foemu.BlobConfig{Mode: foemu.BlobAzurite, Endpoint: azurite}})
		source += fmt.Sprintf(blobSource, azurite)
	}
	// The HTTPS route is mounted in every run: the bad-input checks use it.
	source += httpsSource
	if strings.Contains(endpoints, "https") {
		eps = append(eps, foemu.EventEndpoint{Name: "hook", Type: foemu.EndpointHTTPS, URL: "http://" + addr + "/api/v1/events/hook", Secret: "events-token"})
	}
	if err := em.SetEventsConfig(foemu.EventsConfig{
		Delay: foemu.Duration(200 * time.Millisecond), Attempts: 30, RetryDelay: foemu.Duration(300 * time.Millisecond), Endpoints: eps,
	}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(gatewayConfig, dir, addr, em.BaseURL(), em.CAFile(), azurite, broker, source)), 0o600); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.jsonl")
	g := &gateway{t: t, bin: bin, cfg: cfgPath, addr: addr, adminTk: "admin-token", env: []string{
		"PG_ADMIN_TOKEN=admin-token", "PG_FO_SECRET=" + foemu.DefaultClientSecret, "PG_AZ_KEY=" + foemu.AzuriteKey,
		"PG_EVENTS_TOKEN=events-token",
	}}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 14))
	// killSome kills the gateway a few times at random moments.
	killSome := func(n int) {
		for range n {
			time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
			g.kill()
			g.start()
		}
	}

	// 1. P000101 is released (processed); P000104 is only created: F&O
	// fails the start after its three attempts.
	appendLine(t, in, `{"id":"m1","order":"P000101","n":5}`)
	appendLine(t, in, `{"id":"m2","order":"P000104","n":5}`)
	g.start()
	killSome(4)
	var failed map[string]any
	foemutest.WaitFor(t, 60*time.Second, "the failed start as a dead letter with F&O's infolog", func() bool {
		for _, d := range g.list("/api/v1/admin/dead?stream=mes", "dead_letters") {
			if r, _ := d["reason"].(string); strings.Contains(r, "F&O failed to process the message") {
				failed = d
				return true
			}
		}
		return false
	})
	reason := failed["reason"].(string)
	fails := messagesOf(em, "P000104")
	if len(fails) != 1 || fails[0].State != foemu.MessageFailed || !strings.Contains(reason, fails[0].Infolog) {
		t.Fatalf("dead letter %q for emulator messages %+v", reason, fails)
	}
	if got := messagesOf(em, "P000101"); len(got) != 1 || got[0].State != foemu.MessageProcessed {
		t.Fatalf("P000101: %+v", got)
	}

	// 2. Release the order in F&O, replay the dead letter: processed once.
	tok := foemutest.Token(t, em)
	req, _ := http.NewRequest(http.MethodPatch, em.BaseURL()+"/data/ProductionOrderHeaders(dataAreaId='USMF',ProductionOrderNumber='P000104')",
		strings.NewReader(`{"ProductionOrderStatus":"Released"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := em.HTTPClient().Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("release P000104: %v %v", err, resp)
	}
	_ = resp.Body.Close()
	killSome(2)
	// The released order appears on its MQTT topic, retained.
	foemutest.WaitFor(t, 30*time.Second, "P000104 on its MQTT topic", func() bool {
		m := subscribe(t, broker, "mes/orders/#")
		time.Sleep(200 * time.Millisecond)
		v := m.get("mes/orders/USMF/P000104")
		return v != nil && v["Status"] == "Released" && v["Item"] == "FG-1000" && v["Quantity"] == float64(40) && v["_retained"] == true
	})
	if g.api("/api/v1/admin/dead/replay", map[string]any{"stream": "mes", "seqs": []any{failed["seq"]}}) == nil {
		t.Fatal("replay refused")
	}
	killSome(2)
	foemutest.WaitFor(t, 60*time.Second, "the replayed start processed", func() bool {
		ms := messagesOf(em, "P000104")
		return len(ms) == 2 && ms[1].State == foemu.MessageProcessed
	})

	// 3. A send whose answer is lost: held in doubt (the event comes later
	// than the sink's timeout), then resolved by the message processed
	// event, with no operator; the start parked behind it follows.
	evCfg := em.EventsConfig()
	evCfg.Delay = foemu.Duration(4 * time.Second)
	for i := range evCfg.Endpoints {
		if evCfg.Endpoints[i].Blob != nil {
			evCfg.Endpoints[i].Blob.Key = foemu.AzuriteKey
		}
		if evCfg.Endpoints[i].Type == foemu.EndpointHTTPS {
			evCfg.Endpoints[i].Secret = "events-token"
		}
	}
	if err := em.SetEventsConfig(evCfg); err != nil {
		t.Fatal(err)
	}
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteMES, AnswerDelay: foemu.Duration(5 * time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	appendLine(t, in, `{"id":"m3","order":"P000102","n":5}`)
	appendLine(t, in, `{"id":"m4","order":"P000102","n":6}`) // parked behind m3 while it is held
	foemutest.WaitFor(t, 30*time.Second, "the first P000102 start held in doubt", func() bool {
		for _, h := range g.list("/api/v1/admin/in-doubt", "in_doubt") {
			if h["key"] == "P000102" {
				return true
			}
		}
		return false
	})
	_ = em.SetFaults(foemu.Faults{})
	if ms := messagesOf(em, "P000102"); len(ms) != 1 {
		for _, m := range ms {
			t.Logf("message %d %s %s received %s", m.ID, m.State, m.Content, m.ReceivedAt.Format(time.RFC3339Nano))
		}
		for _, ev := range em.Events() {
			d, _ := json.Marshal(ev.Deliveries)
			t.Logf("event %s %v %v %s", ev.BusinessEventID, ev.Payload["MessageContent"], ev.CreatedAt.Format(time.RFC3339Nano), d)
		}
		t.Fatalf("%d P000102 messages reached F&O while the first was in doubt (now %s)", len(ms), time.Now().Format(time.RFC3339Nano))
	}
	killSome(2)
	foemutest.WaitFor(t, 60*time.Second, "both P000102 starts processed, nothing held", func() bool {
		ms := messagesOf(em, "P000102")
		return len(ms) == 2 && ms[0].State == foemu.MessageProcessed && ms[1].State == foemu.MessageProcessed &&
			len(g.list("/api/v1/admin/in-doubt", "in_doubt")) == 0
	})

	// Settle: nothing left anywhere, nothing sent twice.
	time.Sleep(time.Second)
	if d := g.list("/api/v1/admin/dead?stream=mes", "dead_letters"); len(d) != 0 {
		t.Errorf("dead letters left: %v", d)
	}
	if d := g.list("/api/v1/admin/dead", "dead_letters"); len(d) != 0 {
		t.Errorf("dead letters left in some stream: %v", d)
	}
	counts := map[string]int{}
	for _, m := range em.Messages() {
		counts[m.ProductionOrder+"/"+string(m.State)]++
	}
	want := map[string]int{"P000101/Processed": 1, "P000104/Failed": 1, "P000104/Processed": 1, "P000102/Processed": 2}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("emulator messages %v, want %v", counts, want)
	}
	var sinks string
	foemutest.WaitFor(t, 20*time.Second, "every send's outcome", func() bool {
		b, _ := json.Marshal(g.api("/api/v1/status", nil)["sinks"])
		sinks = string(b)
		return strings.Count(sinks, `"awaiting_outcome":0`) == 1
	})
	t.Logf("after %d starts of the gateway: %s", g.starts, outcomeCounts(t, sinks))

	// Bad input on the HTTPS endpoint: each refused or dead-lettered with
	// its reason, nothing counted twice.
	post := func(token, body string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/events/hook", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	var processed map[string]any
	for _, ev := range em.Events() {
		if ev.BusinessEventID == foemu.EventMessageProcessed && ev.Payload["MessageState"] == "Processed" {
			processed = ev.Payload
		}
	}
	dup, _ := json.Marshal(processed)
	unknown := map[string]any{}
	for k, v := range processed {
		unknown[k] = v
	}
	unknown["EventId"] = "never-sent-1"
	unknown["MessageContent"] = `{"ProductionOrderNumber":"P999999","StartedQuantity":1}`
	unk, _ := json.Marshal(unknown)
	if c := post("", string(dup)); c != http.StatusUnauthorized {
		t.Errorf("no token: %d", c)
	}
	if c := post("wrong-token", string(dup)); c != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", c)
	}
	for _, b := range []string{string(dup), string(unk), `{"EventId": "broken`} {
		if c := post("events-token", b); c != http.StatusOK {
			t.Errorf("post %.40s: %d", b, c)
		}
	}
	foemutest.WaitFor(t, 20*time.Second, "the unknown and the broken event dead-lettered", func() bool {
		var unknownDead, brokenDead bool
		for _, d := range g.list("/api/v1/admin/dead", "dead_letters") {
			r, _ := d["reason"].(string)
			unknownDead = unknownDead || (d["stream"] == "outcomes.outcomes" && strings.Contains(r, "no message sent by sink mes matches"))
			brokenDead = brokenDead || (d["stream"] == "_source.events" && strings.HasPrefix(r, "decode:") && strings.Contains(fmt.Sprint(d["raw"]), "broken"))
		}
		return unknownDead && brokenDead
	})
	// The copy of a processed event changed nothing: the same outcomes as
	// before it, in this process.
	after, _ := json.Marshal(g.api("/api/v1/status", nil)["sinks"])
	if a, b := outcomeCounts(t, sinks), outcomeCounts(t, string(after)); a != b {
		t.Errorf("outcome counts before the bad events %s, after %s", a, b)
	}
	if counts2 := len(em.Messages()); counts2 != 5 {
		t.Errorf("%d messages reached F&O, want 5", counts2)
	}
	g.stop()
}

// outcomeCounts returns the fo.mes sink's confirmed, failed and awaiting
// counts from the status JSON of the sinks.
func outcomeCounts(t *testing.T, sinksJSON string) string {
	t.Helper()
	var sinks []struct {
		Name    string `json:"name"`
		Details struct {
			Outcomes map[string]any `json:"outcomes"`
		} `json:"details"`
	}
	if err := json.Unmarshal([]byte(sinksJSON), &sinks); err != nil {
		t.Fatal(err)
	}
	for _, s := range sinks {
		if o := s.Details.Outcomes; o != nil {
			return fmt.Sprintf("confirmed %v failed %v awaiting %v", o["confirmed"], o["failed_in_fo"], o["awaiting_outcome"])
		}
	}
	t.Fatalf("no outcomes in %s", sinksJSON)
	return ""
}
