package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/procmem"
	"github.com/plantgate/plantgate/internal/testutil/lazyfs"
)

const (
	adminToken = "e2e-admin-token-0123456789"
	foSecret   = "demo-secret"
)

// gatewayConfig: MES start messages from MQTT go one by one to the MES
// message service; consumption lines go to F&O in DMF packages.
const gatewayConfig = `gateway:
  id: e2e-line
  data_dir: %[1]s
  drain_timeout: 2s
  queue: {%[6]s}
http: {listen: "%[2]s", admin_token: "${env:E2E_ADMIN_TOKEN}"}
fo:
  emu:
    url: %[3]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:E2E_FO_SECRET}
    authority_url: %[3]s
    ca_file: %[4]s
    company: USMF
    timeout: 2s
    max_requests_per_second: 300
sources:
  mes:
    type: mqtt
    broker: tcp://%[5]s
    client_id: plantgate-e2e
    topics: [mes/#]
  line:
    type: opcua
    endpoint: %[7]s
    security: {policy: Basic256Sha256, mode: SignAndEncrypt}
    reconnect_initial: 100ms
    reconnect_max: 1s
    publishing_interval: 100ms
    nodes:
      good: {node: "nsu=urn:plantgate:line;s=Line3.GoodCount", sampling: 0s, queue_size: 1000}
      order: {node: "nsu=urn:plantgate:line;s=Line3.Order"}
    rules:
      good-parts: {kind: counter, value: good}
flows:
  machine-good:
    from: line
    when: meta.kind == "event" && meta.rule == "good-parts"
    key: payload.values.order
    id: '"line-" + payload.event_id'
    to: mes
    map:
      _messageType: '"ProdProductionOrderReportFinished"'
      ProductionOrderNumber: payload.values.order
      ReportFinishedLines: '[{"ItemNumber": "FG-1000", "ReportedGoodQuantity": payload.increase}]'

  start:
    from: mes
    when: topic startsWith "mes/start/"
    key: payload.order
    id: payload.id
    to: mes
    map:
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.n
  consumption:
    from: mes
    when: topic startsWith "mes/consumption/"
    key: payload.order
    id: payload.id
    to: dmf
    map:
      PRODUCTIONORDERNUMBER: payload.order
      ITEMNUMBER: payload.item
      CONSUMPTIONBOMQUANTITY: payload.n
sinks:
  mes:
    type: fo.mes
    env: emu
    message_type: ProdProductionOrderStart
    retry: {initial: 50ms, max: 1s}
  dmf:
    type: fo.dmf
    env: emu
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
    poll_initial: 20ms
    poll_max: 200ms
    batch: {max_records: 40, max_age: 1s}
    # An import cut off by the network may never have reached F&O: ask
    # again after 3 s instead of the default 5 minutes.
    not_found_grace: 3s
`

type gateway struct {
	*proc
	t        testing.TB
	dir      string
	cfgPath  string
	httpAddr string
	fs       *lazyfs.FS
	em       *emulator
	broker   *broker
	plc      *plc
	kills    int
	cuts     int
}

// startGateway runs plantgate on a data dir under LazyFS (power cuts).
func startGateway(t testing.TB, em *emulator, b *broker, p *plc) *gateway {
	t.Helper()
	bin, _ := binaries(t)
	fs := lazyfs.MountWith(t, lazyfs.Config{CacheSize: "512mb"})
	g := &gateway{t: t, fs: fs, dir: filepath.Join(fs.Dir(), "data"), cfgPath: filepath.Join(t.TempDir(), "plantgate.yaml"),
		httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), em: em, broker: b, plc: p}
	g.writeConfig("max_bytes: 2GiB")
	g.proc = newProc(t, "plantgate", bin, "run", "-c", g.cfgPath, "--log-format", "json", "--log-level", "warn")
	g.env = []string{"E2E_ADMIN_TOKEN=" + adminToken, "E2E_FO_SECRET=" + foSecret, "PLANTGATE_ADMIN_TOKEN=" + adminToken}
	g.start()
	return g
}

func (g *gateway) writeConfig(maxBytes string) {
	body := fmt.Sprintf(gatewayConfig, g.dir, g.httpAddr, g.em.url(), g.em.ca, g.broker.addr(), maxBytes, g.plc.endpoint())
	if err := os.WriteFile(g.cfgPath, []byte(body), 0o600); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gateway) start() {
	g.t.Helper()
	g.proc.start()
	waitFor(g.t, 20*time.Second, "the gateway to serve", func() bool {
		if !g.running() {
			g.t.Fatalf("the gateway exited:\n%s", g.tail())
		}
		c, _ := g.get("/healthz")
		return c == 200
	})
}

// trustPLC trusts the PLC's certificate the way plant IT does: the source
// files it under rejected, plantgate opcua trust moves it.
func (g *gateway) trustPLC() {
	g.t.Helper()
	bin, _ := binaries(g.t)
	rejected := filepath.Join(g.dir, "sources", "line", "pki", "rejected")
	var file string
	waitFor(g.t, 20*time.Second, "the PLC's certificate filed under rejected", func() bool {
		// Only a whole file: the gateway writes it as <name>.tmp first
		// and renames it.
		fs, _ := filepath.Glob(filepath.Join(rejected, "*.der"))
		if len(fs) > 0 {
			file = filepath.Base(fs[0])
		}
		return file != ""
	})
	cmd := exec.Command(bin, "opcua", "trust", "-c", g.cfgPath, "--source", "line", file)
	cmd.Env = append(os.Environ(), g.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		g.t.Fatalf("plantgate opcua trust: %v\n%s", err, out)
	}
}

// kill is a SIGKILL and a restart.
func (g *gateway) killAndRestart() {
	g.kill()
	g.kills++
	g.start()
}

// powerCut kills the gateway, drops every unsynced byte of its data dir,
// and starts it again.
func (g *gateway) powerCut() {
	g.kill()
	g.fs.Cut()
	g.fs.Remount()
	g.cuts++
	g.start()
}

func (g *gateway) get(path string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+g.httpAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (g *gateway) post(path, body string) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+g.httpAddr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Plantgate-Operator", "e2e")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type status struct {
	Ready bool `json:"ready"`
	Queue struct {
		Records int64 `json:"records"`
		Dead    int64 `json:"dead"`
		Full    bool  `json:"full"`
	} `json:"queue"`
	InDoubt []struct {
		Sink  string `json:"sink"`
		Seq   uint64 `json:"seq"`
		State string `json:"state"`
	} `json:"in_doubt"`
}

func (g *gateway) status() (status, bool) {
	var st status
	c, b := g.get("/api/v1/status")
	if c != 200 {
		return st, false
	}
	return st, json.Unmarshal([]byte(b), &st) == nil
}

// inDoubtEntry is one line of the admin API's in-doubt list.
type inDoubtEntry struct {
	Stream string         `json:"stream"`
	Seq    uint64         `json:"seq"`
	Key    string         `json:"key"`
	State  string         `json:"state"`
	Behind uint64         `json:"behind"`
	Fields map[string]any `json:"fields"`
}

func (g *gateway) inDoubt() []inDoubtEntry {
	g.t.Helper()
	c, b := g.get("/api/v1/admin/in-doubt")
	if c != 200 {
		g.t.Fatalf("in-doubt: %d %s", c, b)
	}
	var res struct {
		InDoubt []inDoubtEntry `json:"in_doubt"`
	}
	if err := json.Unmarshal([]byte(b), &res); err != nil {
		g.t.Fatal(err)
	}
	return res.InDoubt
}

// cliInDoubt is what `plantgate queue in-doubt --json` says (through the
// running gateway's API).
func (g *gateway) cliInDoubt() int {
	g.t.Helper()
	bin, _ := binaries(g.t)
	cmd := exec.Command(bin, "queue", "in-doubt", "-c", g.cfgPath, "--json")
	cmd.Env = append(os.Environ(), g.env...)
	out, err := cmd.Output()
	if err != nil {
		g.t.Fatalf("plantgate queue in-doubt: %v", err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(out, &list); err != nil {
		g.t.Fatalf("queue in-doubt --json: %v\n%s", err, out)
	}
	return len(list)
}

// metricInDoubt sums plantgate_fo_in_doubt_records and
// plantgate_fo_parked_records.
func (g *gateway) metricInDoubt() int {
	_, b := g.get("/metrics")
	n := 0.0
	sc := bufio.NewScanner(strings.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "plantgate_fo_in_doubt_records{") || strings.HasPrefix(l, "plantgate_fo_parked_records{") {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += v
		}
	}
	return int(n)
}

// checkStartupPagesGivenBack checks that once serving, less than half of
// the gateway's code is resident: start-up maps nearly all of it (about
// 85% of the code mapping stays resident without procmem's release), and
// the gateway gives back what it no longer runs.
func (g *gateway) checkStartupPagesGivenBack() {
	g.t.Helper()
	var rss, size int
	waitFor(g.t, 5*time.Second, "the gateway to give back its start-up pages", func() bool {
		rss, size = codeResidentKiB(g.t, g.cmd.Process.Pid)
		return size > 0 && rss*2 < size
	})
	g.t.Logf("the gateway's code: %d of %d KiB resident once serving", rss, size)
}

// codeResidentKiB reads the resident and whole size of a process's
// executable code mapping (r-xp of its binary) from its smaps.
func codeResidentKiB(t testing.TB, pid int) (rss, size int) {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := procmem.Smaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Perms == "r-xp" && m.Path == exe {
			rss += m.RssKiB
			size += m.SizeKiB
		}
	}
	return rss, size
}
