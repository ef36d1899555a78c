package opcua

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nodeServer is a node-opcua server process (testdata/nodeopcua-server.js).
type nodeServer struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	// readyAt is when the server last said it listens.
	readyAt time.Time
}

func nodeModules(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against node-opcua; skipped under -short")
	}
	root, _ := filepath.Abs("../../../.tools/node_modules")
	if d := os.Getenv("PLANTGATE_TOOLS"); d != "" {
		root = filepath.Join(d, "node_modules")
	}
	if _, err := os.Stat(filepath.Join(root, "node-opcua")); err != nil {
		t.Fatalf("node-opcua is not installed in %s: run `make tools` (scripts/install-test-tools.sh)", root)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: run `make tools`")
	}
	return root
}

func startNodeServer(t testing.TB, shift, bump int) *nodeServer {
	t.Helper()
	n := &nodeServer{t: t, dir: t.TempDir(), port: freePort(t)}
	n.start(shift, bump)
	t.Cleanup(func() { n.kill() })
	return n
}

func (n *nodeServer) endpoint() string {
	return "opc.tcp://127.0.0.1:" + strconv.Itoa(n.port) + "/UA/Line"
}

func (n *nodeServer) start(shift, bump int) {
	n.t.Helper()
	mods := nodeModules(n.t)
	cmd := exec.Command("node", "testdata/nodeopcua-server.js", strconv.Itoa(n.port), n.dir, strconv.Itoa(shift), strconv.Itoa(bump))
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
	out, err := cmd.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	logf, _ := os.OpenFile(filepath.Join(n.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.cmd = cmd
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			b, _ := os.ReadFile(filepath.Join(n.dir, "server.log"))
			n.t.Fatalf("node-opcua server exited: %s", b)
		}
	case <-time.After(30 * time.Second):
		n.t.Fatal("node-opcua server not ready within 30s")
	}
	n.readyAt = time.Now()
}

func (n *nodeServer) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

func (n *nodeServer) pause() {
	if err := os.WriteFile(filepath.Join(n.dir, "pause"), nil, 0o600); err != nil {
		n.t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // an increment in progress lands
}

func (n *nodeServer) counter() int64 {
	b, err := os.ReadFile(filepath.Join(n.dir, "counter.txt"))
	if err != nil {
		n.t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		n.t.Fatal(err)
	}
	return v
}

const nodeLine = `security: {policy: Basic256Sha256, mode: SignAndEncrypt}
emit_values: true
nodes:
  good: {node: "nsu=urn:plantgate:line;s=Line3.GoodCount", sampling: 0s, queue_size: 1000}
  order: {node: "nsu=urn:plantgate:line;s=Line3.Order"}
rules:
  good-parts: {kind: counter, value: good}
`

// trustRejected trusts the one certificate the source filed as rejected.
func trustRejected(t testing.TB, g *gateway) {
	t.Helper()
	var files []string
	eventually(t, 15*time.Second, "the server certificate to be filed under rejected", func() bool {
		files, _ = filepath.Glob(filepath.Join(g.src.pki.Rejected(), "*.der"))
		return len(files) == 1
	})
	if _, err := g.src.pki.Trust(filepath.Base(files[0])); err != nil {
		t.Fatal(err)
	}
}

// goodValues returns the counter values the queue holds, in queue order.
func (g *gateway) goodValues() []int64 {
	var out []int64
	for _, r := range g.records(valueStream) {
		if r.Fields["name"] == "good" && r.Fields["good"] == true {
			out = append(out, toInt(r.Fields["value"]))
		}
	}
	return out
}

// TestNodeOPCUANetworkCutLosesNoNotification cuts the network between the
// gateway and node-opcua (Basic256Sha256 SignAndEncrypt) for 10 s while
// the server counts every 100 ms: the gateway reactivates its session on a
// new secure channel and Republishes, so every notification message
// (sequence numbers 1 .. next) is processed once, every counter value
// reaches the queue in order, no gap is recorded, and the parts counted
// equal the counter's increase.
func TestNodeOPCUANetworkCutLosesNoNotification(t *testing.T) {
	srv := startNodeServer(t, 0, 0)
	p := newProxy(t, "127.0.0.1:"+strconv.Itoa(srv.port))
	g := newGateway(t, t.TempDir(), "endpoint: "+endpointVia(p, "/UA/Line")+"\n"+fastTimers+"session_timeout: 60s\n"+nodeLine)
	g.start()
	trustRejected(t, g)
	eventually(t, 15*time.Second, "values", func() bool { return len(g.goodValues()) > 10 })
	p.setCut(true)
	cutAt := time.Now()
	eventually(t, 5*time.Second, "the source to notice the cut", func() bool { return !g.connected() })
	time.Sleep(10*time.Second - time.Since(cutAt))
	p.setCut(false)
	before := len(g.goodValues())
	eventually(t, 10*time.Second, "values after the cut", func() bool { return len(g.goodValues()) > before+20 })
	srv.pause()
	final := srv.counter()
	eventually(t, 5*time.Second, "the last value", func() bool {
		v := g.goodValues()
		return len(v) > 0 && v[len(v)-1] == final
	})
	vals := g.goodValues()
	// Every notification message of the subscription, 1 .. next_seq-1,
	// was processed exactly once: none is missing.
	sub := g.status()["subscription"].(map[string]any)
	if got, want := sub["messages"].(int64), int64(sub["next_seq"].(uint32))-1; got != want {
		t.Fatalf("%d notification messages processed, sequence numbers 1..%d were sent", got, want)
	}
	// The first value is the Read made before the monitored item existed;
	// from the item's first notification on, every value is there. (The
	// item samples at 0, on every change: a sampling interval lets the
	// server miss a value when its event loop stalls.)
	for i := 2; i < len(vals); i++ {
		if vals[i] != vals[i-1]+1 {
			t.Fatalf("value %d follows %d at position %d of %d: a notification is missing", vals[i], vals[i-1], i, len(vals))
		}
	}
	st := g.status()
	if st["sessions_reactivated"].(int64) < 1 {
		t.Fatalf("the session was not reactivated: %v", st)
	}
	if n := len(g.gaps()); n != 0 {
		t.Fatalf("%d gaps recorded: %v", n, g.gaps()[0].Fields)
	}
	if got, want := g.increase("good-parts"), final-vals[0]; got != want {
		t.Fatalf("counted %d parts, the counter rose by %d", got, want)
	}
	t.Logf("%d values, %d notification messages republished", len(vals), st["republished"])
}

// TestNodeOPCUAServerRestart kills node-opcua and starts it again with its
// namespaces renumbered and 25 parts made while it was down: values flow
// again within 5 s of its return, from the right node; the gap is
// recorded with its times and items; and the parts counted equal the
// counter's real increase.
func TestNodeOPCUAServerRestart(t *testing.T) {
	srv := startNodeServer(t, 0, 0)
	g := newGateway(t, t.TempDir(), "endpoint: "+srv.endpoint()+"\n"+fastTimers+nodeLine)
	g.start()
	trustRejected(t, g)
	eventually(t, 15*time.Second, "values", func() bool { return len(g.goodValues()) > 5 })
	first := g.goodValues()[0]
	resolved := func() string {
		return g.status()["nodes"].(map[string]any)["good"].(map[string]any)["resolved"].(string)
	}
	if r := resolved(); r != "ns=2;s=Line3.GoodCount" {
		t.Fatalf("resolved %s before the restart", r)
	}
	srv.kill()
	killedAt := time.Now()
	time.Sleep(300 * time.Millisecond)
	vals := g.goodValues()
	lastBefore := vals[len(vals)-1]
	time.Sleep(2 * time.Second)
	srv.start(3, 25)
	back := srv.readyAt
	eventually(t, 5*time.Second, "values in the queue within 5 s of the server's return", func() bool {
		v := g.goodValues()
		return v[len(v)-1] > lastBefore+25
	})
	t.Logf("values in the queue again %s after the server was ready", time.Since(back).Round(time.Millisecond))
	if r := resolved(); r != "ns=5;s=Line3.GoodCount" {
		t.Fatalf("resolved %s after the renumbering, want ns=5", r)
	}
	gaps := g.gaps()
	if len(gaps) != 1 {
		dead, _ := g.store.ListDead("_source.line", 0, 0)
		t.Fatalf("%d gaps recorded, want 1; status %v; dead %v", len(gaps), g.status()["gaps"], dead)
	}
	gf := gaps[0].Fields
	start, _ := time.Parse(time.RFC3339Nano, gf["start"].(string))
	end, _ := time.Parse(time.RFC3339Nano, gf["end"].(string))
	if start.After(killedAt) || end.Before(back) {
		t.Fatalf("gap %v does not cover the outage %s .. %s", gf, killedAt, back)
	}
	if items, _ := gf["items"].([]any); len(items) != 2 {
		t.Fatalf("gap items %v", gf["items"])
	}
	srv.pause()
	final := srv.counter()
	eventually(t, 5*time.Second, "the last value", func() bool {
		v := g.goodValues()
		return len(v) > 0 && v[len(v)-1] == final
	})
	if got, want := g.increase("good-parts"), final-first; got != want {
		vals := g.goodValues()
		sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
		t.Fatalf("counted %d parts, the counter rose by %d", got, want)
	}
	st := g.status()["gaps"].(map[string]any)
	if st["count"].(int64) != 1 {
		t.Fatalf("status gaps %v", st)
	}
	if g.metric("plantgate_opcua_gaps_total") != 1 || g.metric("plantgate_opcua_connected") != 1 || g.metric("plantgate_opcua_connects_total") < 2 {
		t.Fatalf("metrics: gaps %v connected %v connects %v", g.metric("plantgate_opcua_gaps_total"), g.metric("plantgate_opcua_connected"), g.metric("plantgate_opcua_connects_total"))
	}
}

// TestNodeOPCUADeadbandAndQueue monitors the counter twice: once with an
// absolute deadband of 5 (node-opcua reports a change of 5 or more only)
// and once with a queue of one value, newest kept, that the server can
// only fill between publishes: both reach the queue as configured.
func TestNodeOPCUADeadbandAndQueue(t *testing.T) {
	srv := startNodeServer(t, 0, 0)
	g := newGateway(t, t.TempDir(), "endpoint: "+srv.endpoint()+"\n"+strings.Replace(fastTimers, "publishing_interval: 100ms", "publishing_interval: 500ms", 1)+`security: {policy: None, mode: None}
emit_values: true
nodes:
  banded: {node: "nsu=urn:plantgate:line;s=Line3.GoodCount", sampling: 0s, deadband: {type: absolute, value: 5}}
  latest: {node: "nsu=urn:plantgate:line;s=Line3.GoodCount", sampling: 0s, queue_size: 1, discard_oldest: true}
`)
	g.start()
	values := func(name string) []int64 {
		var out []int64
		for _, r := range g.records(valueStream) {
			if r.Fields["name"] == name {
				out = append(out, toInt(r.Fields["value"]))
			}
		}
		return out
	}
	eventually(t, 20*time.Second, "deadband values", func() bool { return len(values("banded")) >= 5 })
	b := values("banded")
	for i := 2; i < len(b); i++ {
		if b[i]-b[i-1] < 5 {
			t.Fatalf("deadband 5: %d follows %d (%v)", b[i], b[i-1], b)
		}
	}
	l := values("latest")
	if len(l) < 3 {
		t.Fatalf("latest: %v", l)
	}
	// Five changes per 500 ms publishing interval, one value kept each:
	// far fewer values than changes.
	if span := l[len(l)-1] - l[1]; int64(len(l)-2) > span/2 {
		t.Fatalf("queue of one kept %d values over %d changes: %v", len(l)-2, span, l)
	}
}
