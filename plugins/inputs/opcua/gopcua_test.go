package opcua

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/opcuasim"
)

func startSim(t testing.TB, o opcuasim.Options) *opcuasim.Sim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sim, err := opcuasim.Start(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		// Close waits up to 10 s for connected clients; do not wait.
		go sim.Close()
	})
	return sim
}

func lineNodes(ns string) string {
	return `nodes:
  good: {node: "nsu=` + ns + `;s=Line3.GoodCount", sampling: 50ms}
  scrap: {node: "nsu=` + ns + `;s=Line3.ScrapCount", sampling: 50ms}
  order: {node: "nsu=` + ns + `;s=Line3.Order", sampling: 50ms}
  state: {node: "nsu=` + ns + `;s=Line3.State", sampling: 50ms}
rules:
  good-parts: {kind: counter, value: good}
  scrap-parts: {kind: counter, value: scrap}
  stopped: {kind: change, value: state, to: Stopped}
`
}

const fastTimers = `publishing_interval: 100ms
keep_alive_count: 5
reconnect_initial: 100ms
reconnect_max: 1s
request_timeout: 3s
`

// TestGopcuaSecuredSubscriptionCountsParts runs the source against the
// gopcua server in-process with Basic256Sha256 SignAndEncrypt: the
// server's unknown certificate is refused and filed under rejected, plant
// IT trusts it, the subscription delivers, and the counter's increase
// reaches the queue exactly, each event with the order at that moment.
func TestGopcuaSecuredSubscriptionCountsParts(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	sim := startSim(t, opcuasim.Options{Secure: true})
	sim.Set(opcuasim.Good, uint32(1000))
	sim.Set(opcuasim.Order, "P000123")
	g := newGateway(t, t.TempDir(), "endpoint: "+sim.Endpoint()+"\nsecurity: {policy: Basic256Sha256, mode: SignAndEncrypt}\n"+fastTimers+lineNodes(opcuasim.DefaultNamespace))
	g.start()
	eventually(t, 10*time.Second, "the untrusted server certificate to be refused", func() bool {
		e, _ := g.status()["last_error"].(string)
		return strings.Contains(e, "not in") && strings.Contains(e, "rejected")
	})
	rejected, _ := filepath.Glob(filepath.Join(g.src.pki.Rejected(), "*.der"))
	if len(rejected) != 1 {
		t.Fatalf("rejected folder holds %v", rejected)
	}
	if b, _ := os.ReadFile(rejected[0]); string(b) != string(sim.Certificate()) {
		t.Fatal("the rejected file is not the server's certificate")
	}
	if _, err := g.src.pki.Trust(Fingerprint(sim.Certificate())[:23]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the source to connect", g.connected)
	st := g.status()["security"].(map[string]any)
	if st["policy"] != "Basic256Sha256" || st["mode"] != "SignAndEncrypt" {
		t.Fatalf("security %v", st)
	}
	eventually(t, 5*time.Second, "the baseline", func() bool {
		n := g.status()["nodes"].(map[string]any)["good"].(map[string]any)
		return n["value"] == uint32(1000)
	})
	for i := 1; i <= 30; i++ {
		sim.Set(opcuasim.Good, uint32(1000+i))
		if i%10 == 0 {
			sim.Set(opcuasim.Scrap, uint32(i/10))
		}
		time.Sleep(15 * time.Millisecond)
	}
	eventually(t, 5*time.Second, "30 good parts in the queue", func() bool { return g.increase("good-parts") == 30 })
	eventually(t, 5*time.Second, "3 scrap parts in the queue", func() bool { return g.increase("scrap-parts") == 3 })
	for _, r := range g.records(eventStream) {
		vals, _ := r.Fields["values"].(map[string]any)
		if vals["order"] != "P000123" {
			t.Fatalf("event %v does not carry the order", r.Fields)
		}
	}
	sim.Set(opcuasim.State, "Running")
	time.Sleep(200 * time.Millisecond)
	sim.Set(opcuasim.State, "Stopped")
	defer func() { t.Logf("state: %v", g.status()["nodes"].(map[string]any)["state"]) }()
	eventually(t, 5*time.Second, "the stopped event", func() bool {
		for _, r := range g.records(eventStream) {
			if r.Fields["rule"] == "stopped" {
				return true
			}
		}
		return false
	})
	if n := len(g.gaps()); n != 0 {
		t.Fatalf("%d gaps recorded on a healthy connection", n)
	}
	own := g.status()["certificates"].(map[string]any)["own"].(map[string]any)
	if own["expires_in_days"].(int) < 365 {
		t.Fatalf("own certificate %v", own)
	}
}
