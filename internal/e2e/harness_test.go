package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// repoRoot is the module root (the tests run in internal/e2e).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var bins struct {
	once          sync.Once
	dir           string
	gateway, femu string
	err           error
}

// binaries builds plantgate and fo-emulator once per run, outside the
// repository.
func binaries(t testing.TB) (gateway, emulator string) {
	t.Helper()
	bins.once.Do(func() {
		// make e2e builds them first (bin/); a run on its own builds here.
		if d := os.Getenv("PLANTGATE_E2E_BINDIR"); d != "" {
			bins.gateway, bins.femu = filepath.Join(d, "plantgate"), filepath.Join(d, "fo-emulator")
			return
		}
		if bins.dir, bins.err = os.MkdirTemp("", "plantgate-e2e-bin-"); bins.err != nil {
			return
		}
		for name, out := range map[string]*string{"plantgate": &bins.gateway, "fo-emulator": &bins.femu} {
			*out = filepath.Join(bins.dir, name)
			// Built as make build does: static and stripped.
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", *out, "./cmd/"+name)
			cmd.Dir = repoRoot(t)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %w\n%s", name, err, b)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.gateway, bins.femu
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a child process the suite starts, kills and restarts.
type proc struct {
	t    testing.TB
	name string
	bin  string
	args []string
	env  []string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(t testing.TB, name, bin string, args ...string) *proc {
	p := &proc{t: t, name: name, bin: bin, args: args, log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() { p.signal(syscall.SIGKILL); p.wait(10 * time.Second) })
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(s syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(s)
	}
}

// wait waits for the process to end and reports whether it did within d.
func (p *proc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	if !p.wait(10 * time.Second) {
		p.t.Fatalf("%s did not die on SIGKILL", p.name)
	}
}

func (p *proc) stop() {
	p.signal(syscall.SIGTERM)
	if !p.wait(20 * time.Second) {
		p.t.Fatalf("%s did not stop on SIGTERM:\n%s", p.name, p.tail())
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// --- mosquitto ---

type broker struct {
	*proc
	port int
}

// startMosquitto runs mosquitto with plantgate's shipped limits. The fault
// suite has it save after every change, so a SIGKILL of the broker keeps
// what it acknowledged; benchmarks keep the shipped autosave.
func startMosquitto(t testing.TB) *broker { return startMosquittoWith(t, true) }

func startMosquittoWith(t testing.TB, saveEachChange bool) *broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatal("mosquitto is not installed: run `make tools`")
	}
	dir := t.TempDir()
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "mosquitto", "plantgate.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	for line := range strings.Lines(string(shipped)) {
		if strings.HasPrefix(line, "persistence_location") || strings.HasPrefix(line, "autosave_interval") {
			continue
		}
		conf.WriteString(line)
	}
	b := &broker{port: freePort(t)}
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\nallow_anonymous true\nuser %s\npersistence_location %s/\nlog_dest stderr\nlog_type error\n", b.port, me, dir)
	if saveEachChange {
		// The page cache survives a SIGKILL of the broker.
		conf.WriteString("autosave_interval 1\nautosave_on_changes true\n")
	} else {
		conf.WriteString("autosave_interval 60\n")
	}
	cf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.proc = newProc(t, "mosquitto", bin, "-c", cf)
	b.start()
	return b
}

func (b *broker) start() {
	b.proc.start()
	waitFor(b.t, 10*time.Second, "mosquitto to listen", func() bool { return listening(b.addr()) })
}

func (b *broker) addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// publisher publishes MES messages with QoS 1, retrying until the broker
// acknowledges each.
type publisher struct {
	t testing.TB
	c mqtt.Client
}

func newPublisher(t testing.TB, b *broker) *publisher {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.addr()).SetClientID("e2e-mes").SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &publisher{t: t, c: c}
}

func (p *publisher) publish(topic string, payload []byte) {
	p.t.Helper()
	for i := 0; ; i++ {
		tok := p.c.Publish(topic, 1, false, payload)
		if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			return
		}
		if i > 200 {
			p.t.Fatalf("publish %s: broker never acknowledged: %v", topic, tok.Error())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- Azurite ---

type azurite struct {
	*proc
	port int
}

func startAzurite(t testing.TB) *azurite {
	t.Helper()
	bin := os.Getenv("PLANTGATE_AZURITE")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), ".tools", "node_modules", ".bin", "azurite-blob")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("azurite-blob not found at %s: run `make tools`", bin)
	}
	a := &azurite{port: freePort(t)}
	// On disk, so a restart keeps the container and its blobs.
	a.proc = newProc(t, "azurite", bin, "--location", t.TempDir(), "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(a.port), "--silent")
	a.start()
	return a
}

func (a *azurite) start() {
	a.proc.start()
	waitFor(a.t, 30*time.Second, "azurite to listen", func() bool { return listening("127.0.0.1:" + strconv.Itoa(a.port)) })
}

func (a *azurite) endpoint() string {
	return "http://127.0.0.1:" + strconv.Itoa(a.port) + "/devstoreaccount1"
}

// --- a TCP proxy that can cut the network ---

type netProxy struct {
	t      testing.TB
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	cutTil time.Time
}

func newNetProxy(t testing.TB, target string) *netProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &netProxy{t: t, l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = l.Close() })
	go p.serve()
	return p
}

func (p *netProxy) addr() string { return p.l.Addr().String() }

func (p *netProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := time.Now().Before(p.cutTil)
		p.mu.Unlock()
		if cut {
			_ = c.Close()
			continue
		}
		go p.pipe(c)
	}
}

func (p *netProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut drops every open connection (requests in flight lose their
// answers) and refuses new ones for d.
func (p *netProxy) cut(d time.Duration) {
	p.mu.Lock()
	p.cutTil = time.Now().Add(d)
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// --- the F&O emulator ---

type emulator struct {
	*proc
	port    int
	dataDir string
	ca      string
	proxy   *netProxy
	client  *http.Client
}

func startEmulator(t testing.TB, az *azurite) *emulator {
	t.Helper()
	_, bin := binaries(t)
	e := &emulator{port: freePort(t), dataDir: t.TempDir()}
	e.proxy = newNetProxy(t, "127.0.0.1:"+strconv.Itoa(e.port))
	cfg := fmt.Sprintf(`mes:
  processing_delay: 0s
  retry_delay: 0s
dmf:
  not_found_window: 200ms
  queued_time: 5ms
  execution_time: 5ms
  error_file_delay: 0s
  blob:
    mode: azurite
    endpoint: %s
    account: devstoreaccount1
    key: Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
    container: dmf-packages
`, az.endpoint())
	cf := filepath.Join(e.dataDir, "emulator.yaml")
	if err := os.WriteFile(cf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The gateway reaches F&O through the proxy, under that name.
	e.proc = newProc(t, "fo-emulator", bin, "--listen", "127.0.0.1:"+strconv.Itoa(e.port), "--data-dir", e.dataDir,
		"--config", cf, "--public-url", "https://"+e.proxy.addr(), "--log-level", "warn", "--log-format", "json")
	e.start()
	e.ca = filepath.Join(e.dataDir, "ca.pem")
	pem, err := os.ReadFile(e.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	e.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return e
}

func (e *emulator) start() {
	e.proc.start()
	waitFor(e.t, 15*time.Second, "the emulator to listen", func() bool {
		if !e.running() {
			e.t.Fatalf("the emulator exited:\n%s", e.tail())
		}
		_, err := os.Stat(filepath.Join(e.dataDir, "ca.pem"))
		return err == nil && listening("127.0.0.1:"+strconv.Itoa(e.port))
	})
}

// url is what the gateway uses: through the proxy.
func (e *emulator) url() string { return "https://" + e.proxy.addr() }

func (e *emulator) control(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://127.0.0.1:"+strconv.Itoa(e.port)+"/_emulator/"+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s /_emulator/%s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (e *emulator) faults(t testing.TB, rules ...map[string]any) {
	t.Helper()
	if len(rules) == 0 {
		if err := e.control(http.MethodDelete, "faults", nil, nil); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := e.control(http.MethodPost, "faults", map[string]any{"rules": rules}, nil); err != nil {
		t.Fatal(err)
	}
}

// emuMessage is a MES message as the emulator recorded it.
type emuMessage struct {
	ID              int    `json:"id"`
	Type            string `json:"type"`
	Content         string `json:"content"`
	ProductionOrder string `json:"production_order"`
	State           string `json:"state"`
}

func (e *emulator) messages(t testing.TB) []emuMessage {
	t.Helper()
	var res struct {
		Value []emuMessage `json:"value"`
	}
	if err := e.control(http.MethodGet, "messages", nil, &res); err != nil {
		t.Fatal(err)
	}
	return res.Value
}

func (e *emulator) records(t testing.TB, set string) []map[string]any {
	t.Helper()
	var res struct {
		Value []map[string]any `json:"value"`
	}
	if err := e.control(http.MethodGet, "records/"+set, nil, &res); err != nil {
		t.Fatal(err)
	}
	return res.Value
}

// --- node-opcua: the line's PLC ---

// plc is a node-opcua server process (the opcua source's test server,
// plugins/inputs/opcua/testdata/nodeopcua-server.js): a good-parts counter
// that rises every 100 ms unless paused, kept in counter.txt across
// restarts, and the current order P000777.
type plc struct {
	*proc
	dir  string
	port int
}

func startPLC(t testing.TB) *plc {
	t.Helper()
	mods := filepath.Join(repoRoot(t), ".tools", "node_modules")
	if d := os.Getenv("PLANTGATE_TOOLS"); d != "" {
		mods = filepath.Join(d, "node_modules")
	}
	if _, err := os.Stat(filepath.Join(mods, "node-opcua")); err != nil {
		t.Fatalf("node-opcua is not installed in %s: run `make tools`", mods)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: run `make tools`")
	}
	p := &plc{dir: t.TempDir(), port: freePort(t)}
	p.pause(true)
	script := filepath.Join(repoRoot(t), "plugins", "inputs", "opcua", "testdata", "nodeopcua-server.js")
	p.proc = newProc(t, "node-opcua", node, script, strconv.Itoa(p.port), p.dir, "0", "0")
	p.env = []string{"NODE_PATH=" + mods}
	p.start()
	return p
}

func (p *plc) start() {
	p.proc.start()
	waitFor(p.t, 30*time.Second, "node-opcua to listen", func() bool {
		if !p.running() {
			p.t.Fatalf("node-opcua exited:\n%s", p.tail())
		}
		return listening("127.0.0.1:" + strconv.Itoa(p.port))
	})
}

// restart starts the server again with bump parts made while it was down.
func (p *plc) restart(bump int) {
	p.args[len(p.args)-1] = strconv.Itoa(bump)
	p.start()
}

func (p *plc) endpoint() string { return "opc.tcp://127.0.0.1:" + strconv.Itoa(p.port) + "/UA/Line" }

func (p *plc) pause(on bool) {
	f := filepath.Join(p.dir, "pause")
	if on {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			p.t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // an increment in progress lands
		return
	}
	_ = os.Remove(f)
}

func (p *plc) counter() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "counter.txt"))
	if err != nil {
		p.t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		p.t.Fatal(err)
	}
	return v
}
