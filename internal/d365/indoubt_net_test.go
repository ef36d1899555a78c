package d365

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// Proxy modes: what the TCP proxy does with a connection.
const (
	proxyForward    = "forward"     // pass bytes both ways
	proxyCloseEarly = "close-early" // accept and close at once, before TLS
	proxyBadCert    = "bad-cert"    // answer the TLS handshake with an untrusted certificate
	proxyDropAnswer = "drop-answer" // forward the request, close instead of forwarding the answer
)

// netProxy is a TCP proxy between the client and the emulator, so a test
// can break the network at a precise point of an exchange.
type netProxy struct {
	t      testing.TB
	addr   string
	target atomic.Value // string: set once the upstream listens
	mode   atomic.Value // string
	cert   tls.Certificate

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup

	accepted atomic.Int64
}

func newNetProxy(t testing.TB) *netProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &netProxy{t: t, addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}, cert: untrustedCert(t)}
	p.mode.Store(proxyForward)
	p.serve(ln)
	t.Cleanup(p.shutdown)
	return p
}

func (p *netProxy) setMode(m string) { p.mode.Store(m) }

func (p *netProxy) serve(ln net.Listener) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(c)
			}()
		}
	}()
}

// refuse closes the listener: new connections are refused. Established
// ones stay.
func (p *netProxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
}

// listen reopens the listener on the same address.
func (p *netProxy) listen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil || p.closed {
		return
	}
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		p.t.Errorf("proxy: listen again on %s: %v", p.addr, err)
		return
	}
	p.ln = ln
	p.serve(ln)
}

// cut closes every established connection (both sides) and returns how
// many there were.
func (p *netProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c, client := range p.conns {
		if client {
			n++
		}
		_ = c.Close()
	}
	return n
}

func (p *netProxy) shutdown() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *netProxy) track(c net.Conn, client bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = client
	return true
}

func (p *netProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *netProxy) handle(c net.Conn) {
	if !p.track(c, true) {
		return
	}
	defer p.untrack(c)
	mode := p.mode.Load().(string)
	switch mode {
	case proxyCloseEarly:
		return
	case proxyBadCert:
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{p.cert}})
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tc.Handshake()
		return
	}
	target, _ := p.target.Load().(string)
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	if !p.track(up, false) {
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(up, c)
		done <- struct{}{}
	}()
	go func() {
		if mode == proxyDropAnswer {
			// Wait for the emulator's first answer bytes (the TLS
			// handshake's server flight comes first: pass it on), then
			// cut both sides instead of passing the HTTP answer on.
			p.dropAnswer(c, up)
		} else {
			_, _ = io.Copy(c, up)
		}
		done <- struct{}{}
	}()
	<-done
}

// dropAnswer forwards the TLS 1.2 handshake from up to c and closes both
// as soon as up sends application data, the HTTP answer: the request was
// delivered and processed, its answer never arrives. (TLS 1.3 encrypts
// the handshake as application data records too; the test pins TLS 1.2.)
func (p *netProxy) dropAnswer(c, up net.Conn) {
	hdr := make([]byte, 5)
	for {
		if _, err := io.ReadFull(up, hdr); err != nil {
			return
		}
		if hdr[0] == 23 { // application_data
			_ = c.Close()
			_ = up.Close()
			return
		}
		body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		if _, err := io.ReadFull(up, body); err != nil {
			return
		}
		if _, err := c.Write(append(hdr, body...)); err != nil {
			return
		}
	}
}

func untrustedCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// proxiedEmulator starts an emulator whose environment URL is the proxy's
// address, so tokens and requests all go through the proxy.
func proxiedEmulator(t *testing.T) (*foemu.Emulator, *netProxy) {
	t.Helper()
	p := newNetProxy(t)
	cfg := foemu.DefaultConfig()
	foemutest.Fast(&cfg)
	cfg.DataDir = t.TempDir()
	cfg.PublicURL = "https://" + p.addr
	em, err := foemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(ln.Addr().String())
	if err := em.Start(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = em.Shutdown(ctx)
	})
	return em, p
}

func linePost(journal string, line int) *Request {
	return &Request{Method: http.MethodPost, Path: "/data/InventoryCountingJournalLines", Op: "odata",
		Body: fmt.Appendf(nil, `{"dataAreaId":"USMF","JournalNumber":%q,"LineNumber":%d,"ItemNumber":"RM-2000","CountedQuantity":1}`, journal, line)}
}

func lineCount(t *testing.T, em *foemu.Emulator) int {
	t.Helper()
	recs, err := em.Records("InventoryCountingJournalLines")
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// warm obtains a token and leaves a kept-alive connection in the pool.
func warm(t *testing.T, e *Env) {
	t.Helper()
	if _, err := e.Do(context.Background(), &Request{Method: http.MethodGet, Path: "/data/InventoryCountingJournalLines?$top=1", Op: "probe"}); err != nil {
		t.Fatalf("warm-up request: %v", err)
	}
}

// TestNetworkFailuresBeforeTheRequestLeft: a request that provably never
// reached F&O is not in doubt (it is retried like any transient failure),
// whatever stopped it: connection refused, a connection closed before or
// during the TLS handshake, an untrusted certificate, a DNS failure.
func TestNetworkFailuresBeforeTheRequestLeft(t *testing.T) {
	em, p := proxiedEmulator(t)
	before := lineCount(t, em)
	for i, tc := range []struct {
		name  string
		setup func(c *config.FOEnv)
		mode  string
		want  string
	}{
		{name: "connection refused", mode: "refuse", want: "connection refused"},
		{name: "closed before TLS", mode: proxyCloseEarly, want: "EOF|connection reset"},
		{name: "untrusted certificate", mode: proxyBadCert, want: "certificate"},
		{name: "DNS failure", mode: proxyForward, setup: func(c *config.FOEnv) { c.URL = "https://fo-does-not-exist.invalid" }, want: "no such host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := emuConfig(em)
			if tc.setup != nil {
				tc.setup(c)
			}
			e := newEnv(t, c, Options{})
			defer e.CloseIdleConnections()
			// The token comes first, through the proxy while it forwards.
			if _, err := e.tokens.Token(context.Background()); err != nil {
				t.Fatalf("token: %v", err)
			}
			// The request under test must dial: no kept-alive connection.
			e.CloseIdleConnections()
			p.cut()
			switch tc.mode {
			case "refuse":
				p.refuse()
				defer p.listen()
			default:
				p.setMode(tc.mode)
				defer p.setMode(proxyForward)
			}
			_, err := e.Do(context.Background(), linePost(fmt.Sprintf("NS%d", i), 1))
			if err == nil {
				t.Fatal("the request succeeded")
			}
			if IsInDoubt(err) || pipeline.IsPermanent(err) {
				t.Errorf("%v; want a transient failure that is not in doubt", err)
			}
			named := false
			for _, w := range strings.Split(tc.want, "|") {
				named = named || strings.Contains(err.Error(), w)
			}
			if !named {
				t.Errorf("reason %q does not name %q", err, tc.want)
			}
		})
	}
	if n := lineCount(t, em); n != before {
		t.Errorf("%d lines reached the emulator", n-before)
	}
}

// TestStaleKeepAliveConnection: the proxy closes the client's kept-alive
// connections while they are idle, and a POST follows at once. The POST
// either succeeds (on a new connection) or fails without being in doubt:
// the server's close came before the request, which F&O never saw.
func TestStaleKeepAliveConnection(t *testing.T) {
	em, p := proxiedEmulator(t)
	e := newEnv(t, emuConfig(em), Options{Breaker: BreakerConfig{Failures: 1000}})
	defer e.CloseIdleConnections()
	before := lineCount(t, em)
	const n = 100
	ok, notSent, inDoubt := 0, 0, 0
	var reasons []string
	for i := range n {
		warm(t, e)
		p.cut()
		_, err := e.Do(context.Background(), linePost("KA", i+1))
		switch {
		case err == nil:
			ok++
		case IsInDoubt(err):
			inDoubt++
			reasons = append(reasons, err.Error())
		default:
			notSent++
			reasons = append(reasons, err.Error())
		}
	}
	got := lineCount(t, em) - before
	t.Logf("%d POSTs after idle connections were closed: %d delivered, %d failed unsent, %d in doubt; %d lines in F&O", n, ok, notSent, inDoubt, got)
	if inDoubt > 0 {
		t.Errorf("%d POSTs in doubt after the proxy closed an idle connection, first: %s", inDoubt, reasons[0])
	}
	if got != ok {
		t.Errorf("%d lines in F&O for %d delivered POSTs", got, ok)
	}
}

// TestAnswerLostAfterTheRequestLeft: the proxy forwards the request and
// drops the connection instead of the answer. F&O processed it: in doubt.
func TestAnswerLostAfterTheRequestLeft(t *testing.T) {
	em, p := proxiedEmulator(t)
	e := newEnv(t, emuConfig(em), Options{})
	defer e.CloseIdleConnections()
	// The proxy tells the answer from the handshake in TLS 1.2 only.
	e.hc.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS12
	if _, err := e.tokens.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.CloseIdleConnections() // the request under test dials anew
	before := lineCount(t, em)
	p.setMode(proxyDropAnswer)
	_, err := e.Do(context.Background(), linePost("DA", 1))
	p.setMode(proxyForward)
	if !IsInDoubt(err) || pipeline.IsPermanent(err) {
		t.Fatalf("answer lost: %v; want in doubt", err)
	}
	foemutest.WaitFor(t, 2*time.Second, "the line in F&O", func() bool { return lineCount(t, em) == before+1 })
}

// TestBadGatewayIsInDoubt: a proxy's 502 can follow a request that
// reached F&O, like a 504: both are in doubt, and transient.
func TestBadGatewayIsInDoubt(t *testing.T) {
	em := foemutest.Start(t)
	e := newEnv(t, emuConfig(em), Options{Breaker: BreakerConfig{Failures: 1000}})
	for _, status := range []int{http.StatusBadGateway, http.StatusGatewayTimeout} {
		if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteOData, ErrorRate: 1, ErrorStatus: status}}}); err != nil {
			t.Fatal(err)
		}
		_, err := e.Do(context.Background(), linePost("BG", status))
		if !IsInDoubt(err) || pipeline.IsPermanent(err) || StatusOf(err) != status {
			t.Errorf("%d: %v; want a transient error in doubt", status, err)
		}
		var te *pipeline.ThrottleError
		if errors.As(err, &te) {
			t.Errorf("%d: throttled: %v", status, err)
		}
	}
	// Statuses that say F&O did not take the request stay out of doubt.
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteOData, ErrorRate: 1, ErrorStatus: http.StatusServiceUnavailable}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Do(context.Background(), linePost("BG", 503)); err == nil || IsInDoubt(err) {
		t.Errorf("503: %v; want a failure not in doubt", err)
	}
}
