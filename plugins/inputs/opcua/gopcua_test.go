package opcua

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
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

// counting increments the simulator's good counter every 10 ms until
// stopped, and returns the last value set.
type counting struct {
	sim  *opcuasim.Sim
	stop chan struct{}
	done chan uint32
}

func startCounting(sim *opcuasim.Sim, from uint32) *counting {
	c := &counting{sim: sim, stop: make(chan struct{}), done: make(chan uint32, 1)}
	go func() {
		v := from
		for {
			select {
			case <-c.stop:
				c.done <- v
				return
			case <-time.After(10 * time.Millisecond):
				v++
				sim.Set(opcuasim.Good, v)
			}
		}
	}()
	return c
}

func (c *counting) end() uint32 {
	close(c.stop)
	return <-c.done
}

func noneConfig(sim *opcuasim.Sim) string {
	return "endpoint: " + sim.Endpoint() + "\nsecurity: {policy: None, mode: None}\n" + fastTimers + lineNodes(opcuasim.DefaultNamespace)
}

func goodValue(g *gateway) any {
	return g.status()["nodes"].(map[string]any)["good"].(map[string]any)["value"]
}

// TestCounterAcrossGatewayRestart restarts the gateway (queue closed and
// reopened, a new source) twice while the counter runs, and once makes
// 7 parts while it is stopped: the parts counted equal the counter's
// real increase since the first baseline, and the 7 come as one increase
// at reconnect.
func TestCounterAcrossGatewayRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	sim := startSim(t, opcuasim.Options{})
	sim.Set(opcuasim.Good, uint32(500))
	g := newGateway(t, t.TempDir(), noneConfig(sim))
	g.start()
	eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(500) })
	cnt := startCounting(sim, 500)
	for i := 0; i < 2; i++ {
		time.Sleep(700 * time.Millisecond)
		g.restart()
		eventually(t, 10*time.Second, "the reconnect", g.connected)
	}
	last := cnt.end()
	eventually(t, 5*time.Second, "the last value", func() bool { return goodValue(g) == last })
	g.stop()
	sim.Set(opcuasim.Good, last+7)
	g.start()
	eventually(t, 10*time.Second, "the parts made while the gateway was down", func() bool { return g.increase("good-parts") == int64(last+7-500) })
	found := false
	for _, r := range g.records(eventStream) {
		if r.Fields["rule"] == "good-parts" && toInt(r.Fields["increase"]) == 7 && toInt(r.Fields["previous"]) == int64(last) {
			found = true
		}
	}
	if !found {
		t.Fatal("no single increase of 7 at the reconnect")
	}
	seqs := map[int64]bool{}
	for _, r := range g.records(eventStream) {
		if r.Fields["rule"] != "good-parts" {
			continue
		}
		n := toInt(r.Fields["seq"])
		if seqs[n] {
			t.Fatalf("event seq %d twice", n)
		}
		seqs[n] = true
	}
}

// TestBadNodesAndValuesKeepOthersRunning configures a node the server
// does not have, one in a namespace it does not have and a counter rule on
// a string: each is an error in status, and the good counter still counts.
func TestBadNodesAndValuesKeepOthersRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	sim := startSim(t, opcuasim.Options{})
	sim.Set(opcuasim.Good, uint32(10))
	sim.Set(opcuasim.Order, "P1")
	ns := opcuasim.DefaultNamespace
	g := newGateway(t, t.TempDir(), "endpoint: "+sim.Endpoint()+"\nsecurity: {policy: None, mode: None}\n"+fastTimers+"retry_nodes: 300ms\n"+`nodes:
  good: {node: "nsu=`+ns+`;s=Line3.GoodCount", sampling: 50ms}
  order: {node: "nsu=`+ns+`;s=Line3.Order", sampling: 50ms}
  ghost: {node: "nsu=`+ns+`;s=Line3.NoSuchNode"}
  elsewhere: {node: "nsu=urn:not-on-this-server;s=X"}
rules:
  good-parts: {kind: counter, value: good}
  order-count: {kind: counter, value: order}
`)
	g.start()
	eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(10) })
	sim.Set(opcuasim.Good, uint32(15))
	eventually(t, 5*time.Second, "5 parts", func() bool { return g.increase("good-parts") == 5 })
	sim.Set(opcuasim.Order, "P2")
	eventually(t, 5*time.Second, "the errors in status", func() bool {
		st := g.status()
		nodes := st["nodes"].(map[string]any)
		ghost, _ := nodes["ghost"].(map[string]any)["last_error"].(string)
		elsewhere, _ := nodes["elsewhere"].(map[string]any)["last_error"].(string)
		rule, _ := st["rules"].(map[string]any)["order-count"].(map[string]any)["last_error"].(string)
		return strings.Contains(ghost, "BadNodeIDUnknown") && strings.Contains(elsewhere, "urn:not-on-this-server") && strings.Contains(rule, "needs a number")
	})
	sim.Set(opcuasim.Good, uint32(17))
	eventually(t, 5*time.Second, "more parts after the errors", func() bool { return g.increase("good-parts") == 7 })
}

// TestNoAcceptableSecurityNamesWhatIsOffered asks a None-only server for
// Basic256Sha256: the error in status names what the server offers.
func TestNoAcceptableSecurityNamesWhatIsOffered(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	sim := startSim(t, opcuasim.Options{})
	g := newGateway(t, t.TempDir(), "endpoint: "+sim.Endpoint()+"\n"+fastTimers+lineNodes(opcuasim.DefaultNamespace))
	g.start()
	eventually(t, 10*time.Second, "the error", func() bool {
		e, _ := g.status()["last_error"].(string)
		return strings.Contains(e, "no acceptable endpoint for Basic256Sha256/SignAndEncrypt") && strings.Contains(e, "it offers: None/None")
	})
}

// TestGopcuaHangRebuildsSubscription freezes the connection (bytes held,
// nothing closed) longer than the watchdog: the source notices that the
// subscription sends neither data nor keep-alives, rebuilds it, counts
// the parts made meanwhile and records the gap.
func TestGopcuaHangRebuildsSubscription(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	port, err := opcuasim.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, "127.0.0.1:"+strconv.Itoa(port))
	// The gopcua server lists only endpoints of the URL asked for: it
	// must advertise the proxy's address too.
	sim := startSim(t, opcuasim.Options{Port: port, Advertise: []string{p.addr()}})
	sim.Set(opcuasim.Good, uint32(100))
	g := newGateway(t, t.TempDir(), "endpoint: "+endpointVia(p, "")+"\nsecurity: {policy: None, mode: None}\n"+fastTimers+lineNodes(opcuasim.DefaultNamespace))
	g.start()
	eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(100) })
	eventually(t, 10*time.Second, "a publish response", func() bool {
		at, _ := g.status()["subscription"].(map[string]any)["last_publish_at"].(time.Time)
		return !at.IsZero()
	})
	p.freeze(true)
	sim.Set(opcuasim.Good, uint32(120))
	eventually(t, 20*time.Second, "the watchdog", func() bool { return g.status()["watchdog_rebuilds"].(int64) >= 1 })
	p.setCut(true) // the hung connection is dropped
	p.freeze(false)
	p.setCut(false)
	eventually(t, 10*time.Second, "the parts made during the hang", func() bool { return g.increase("good-parts") == 20 })
	eventually(t, 5*time.Second, "the gap record", func() bool { return len(g.gaps()) == 1 })
	sim.Set(opcuasim.Good, uint32(121))
	eventually(t, 5*time.Second, "values after the rebuild", func() bool { return g.increase("good-parts") == 21 })
}

// TestGopcuaEveryPolicyAndMode connects with each security policy and mode
// plantgate supports, anonymously, with a username and with a user
// certificate, and reads a value. (The gopcua server accepts any password
// and user certificate: this shows the tokens are made and accepted.)
func TestGopcuaEveryPolicyAndMode(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	sim := startSim(t, opcuasim.Options{Secure: true, Username: "plantgate", Password: "pw", CertificateLogin: true})
	sim.Set(opcuasim.Good, uint32(7))
	pkiDir := t.TempDir()
	userDER, userKey, err := GenerateCertificate("urn:plantgate:test:user", "operator", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userCert, userKeyFile := filepath.Join(pkiDir, "user.der"), filepath.Join(pkiDir, "user.pem")
	if err := os.WriteFile(userCert, userDER, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(userKeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(userKey)}), 0o600); err != nil {
		t.Fatal(err)
	}
	p := PKI{Dir: pkiDir}
	if _, _, _, err := p.OwnCertificate("urn:plantgate:test:cli"); err != nil {
		t.Fatal(err)
	}
	for _, pol := range []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"} {
		for _, mode := range []string{"Sign", "SignAndEncrypt"} {
			for _, auth := range []Auth{{Type: "anonymous"}, {Type: "username", Username: "plantgate", Password: logging.NewSecret("pw")}, {Type: "certificate", CertFile: userCert, KeyFile: userKeyFile}} {
				cfg := &Config{Endpoint: sim.Endpoint(), Security: Security{Policy: pol, Mode: mode}, Auth: auth, ServerFingerprint: Fingerprint(sim.Certificate()), RequestTimeout: 5 * time.Second}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := Dial(ctx, cfg, pkiDir, "urn:plantgate:test:cli")
				if err != nil {
					cancel()
					t.Fatalf("%s/%s %s: %v", pol, mode, auth.Type, err)
				}
				dv, _, err := ReadNode(ctx, c, "nsu="+opcuasim.DefaultNamespace+";s=Line3.GoodCount")
				_ = c.Close(ctx)
				cancel()
				if err != nil {
					t.Fatalf("%s/%s %s: read: %v", pol, mode, auth.Type, err)
				}
				if v, _ := Value(dv); v != uint32(7) {
					t.Fatalf("%s/%s %s: read %v", pol, mode, auth.Type, v)
				}
			}
		}
	}
}

// TestGopcuaPollMode counts parts in poll mode (Read every poll_interval).
func TestGopcuaPollMode(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	sim := startSim(t, opcuasim.Options{})
	sim.Set(opcuasim.Good, uint32(10))
	g := newGateway(t, t.TempDir(), "endpoint: "+sim.Endpoint()+"\nsecurity: {policy: None, mode: None}\nmode: poll\npoll_interval: 50ms\n"+fastTimers+lineNodes(opcuasim.DefaultNamespace))
	g.start()
	eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(10) })
	for i := 11; i <= 15; i++ {
		sim.Set(opcuasim.Good, uint32(i))
		time.Sleep(120 * time.Millisecond)
	}
	eventually(t, 5*time.Second, "5 parts", func() bool { return g.increase("good-parts") == 5 })
}

// TestOPCUASimServerHelper is not a test: TestGopcuaServerRestart runs the
// test binary again with PLANTGATE_OPCUA_SIM set to "port,shift,pkidir,good"
// to serve the line simulator (Basic256Sha256, its certificate kept in
// pkidir) in a process it can kill.
func TestOPCUASimServerHelper(t *testing.T) {
	spec := os.Getenv("PLANTGATE_OPCUA_SIM")
	if spec == "" {
		t.Skip("helper process for TestGopcuaServerRestart")
	}
	f := strings.Split(spec, ",")
	port, _ := strconv.Atoi(f[0])
	shift, _ := strconv.Atoi(f[1])
	good, _ := strconv.Atoi(f[3])
	sim, err := opcuasim.Start(context.Background(), opcuasim.Options{Port: port, Shift: shift, PKIDir: f[2], Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	sim.Set(opcuasim.Good, uint32(good))
	sim.Set(opcuasim.Order, "P000900")
	_, _ = os.Stdout.WriteString("ready\n")
	select {}
}

// TestGopcuaServerRestart kills the gopcua server process and starts it
// again with its namespaces renumbered and 30 parts more on the counter:
// the source counts them within 5 s of the server's return, from the
// right node, and records the gap.
func TestGopcuaServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	port, err := opcuasim.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pkiDir := t.TempDir()
	start := func(shift, good int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOPCUASimServerHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("PLANTGATE_OPCUA_SIM=%d,%d,%s,%d", port, shift, pkiDir, good))
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "ready" {
		}
		go func() {
			for sc.Scan() {
			}
		}()
		return cmd
	}
	srv := start(0, 100)
	cert, err := os.ReadFile(filepath.Join(pkiDir, "cert.der"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, t.TempDir(), fmt.Sprintf("endpoint: opc.tcp://127.0.0.1:%d\nsecurity: {policy: Basic256Sha256, mode: SignAndEncrypt}\nserver_fingerprint: %q\n", port, Fingerprint(cert))+fastTimers+lineNodes(opcuasim.DefaultNamespace))
	g.start()
	eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(100) })
	resolved := func() string {
		return g.status()["nodes"].(map[string]any)["good"].(map[string]any)["resolved"].(string)
	}
	if r := resolved(); r != "ns=1;s=Line3.GoodCount" {
		t.Fatalf("resolved %s", r)
	}
	_ = srv.Process.Kill()
	_ = srv.Wait()
	killedAt := time.Now()
	time.Sleep(time.Second)
	start(2, 130)
	back := time.Now()
	eventually(t, 5*time.Second, "the 30 parts within 5 s of the server's return", func() bool { return g.increase("good-parts") == 30 })
	t.Logf("counted %s after the server was ready", time.Since(back).Round(time.Millisecond))
	if r := resolved(); r != "ns=3;s=Line3.GoodCount" {
		t.Fatalf("resolved %s after the renumbering, want ns=3", r)
	}
	gaps := g.gaps()
	if len(gaps) != 1 {
		t.Fatalf("%d gaps", len(gaps))
	}
	gs, _ := time.Parse(time.RFC3339Nano, gaps[0].Fields["start"].(string))
	ge, _ := time.Parse(time.RFC3339Nano, gaps[0].Fields["end"].(string))
	if gs.After(killedAt) || ge.Before(back) {
		t.Fatalf("gap %v does not cover %s .. %s", gaps[0].Fields, killedAt, back)
	}
}
