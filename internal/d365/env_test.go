package d365

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

const testTenant = "00000000-0000-0000-0000-0000000000aa"

func emuConfig(em *foemu.Emulator) *config.FOEnv {
	return &config.FOEnv{
		URL: em.EnvironmentURL(), TenantID: testTenant, ClientID: foemu.DefaultClientID,
		ClientSecret: logging.NewSecret(foemu.DefaultClientSecret), AuthorityURL: em.BaseURL(),
		Company: "USMF", CAFile: em.CAFile(), Timeout: config.Duration(5 * time.Second),
		MaxRequestsPerSecond: 1000, MaxConcurrent: 8,
	}
}

func newEnv(t *testing.T, c *config.FOEnv, o Options) *Env {
	t.Helper()
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	o.Log = zerolog.Nop()
	e, err := NewEnv("test", c, o)
	if err != nil {
		t.Fatalf("NewEnv: %v", err)
	}
	return e
}

func TestTokenCachedAndRenewedAfter401(t *testing.T) {
	em := foemutest.Start(t)
	e := newEnv(t, emuConfig(em), Options{})
	ctx := context.Background()
	for range 3 {
		if _, err := e.Do(ctx, &Request{Method: "GET", Path: "/data/ProductionOrderHeaders?$top=1", Op: "probe"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := em.Stats().Total(foemu.RouteToken); n != 1 {
		t.Fatalf("3 calls made %d token requests, want 1 (cached)", n)
	}
	// F&O rejects the cached token (as after a key rollover): one refresh,
	// and the call succeeds.
	e.tokens.fast.Lock()
	e.tokens.tok = e.tokens.tok + "x"
	e.tokens.fast.Unlock()
	if _, err := e.Do(ctx, &Request{Method: "GET", Path: "/data/ProductionOrderHeaders?$top=1", Op: "probe"}); err != nil {
		t.Fatalf("after a rejected token: %v", err)
	}
	if n := em.Stats().Total(foemu.RouteToken); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
	if v := testutil.ToFloat64(e.m.TokenRefreshes.WithLabelValues("test", "unauthorized", "requested")); v != 1 {
		t.Errorf("unauthorized refreshes = %v, want 1", v)
	}
	// A 401 that a fresh token does not cure: transient, with advice.
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteOData, ErrorRate: 1, ErrorStatus: 401}}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.Do(ctx, &Request{Method: "GET", Path: "/data/ProductionOrderHeaders?$top=1", Op: "probe"})
	if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "Microsoft Entra applications") {
		t.Fatalf("persistent 401: %v; want a transient error naming the F&O registration", err)
	}
}

func TestCertificateCredentials(t *testing.T) {
	em := foemutest.Start(t)
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plantgate"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "fo.crt"), filepath.Join(dir, "fo.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	c := emuConfig(em)
	c.ClientSecret, c.CertificateFile, c.PrivateKeyFile = logging.Secret{}, certFile, keyFile
	e := newEnv(t, c, Options{})
	if err := e.Probe(context.Background()); err != nil {
		t.Fatalf("probe with a certificate: %v", err)
	}
	c.PrivateKeyFile = filepath.Join(dir, "missing.key")
	if _, err := NewEnv("test", c, Options{}); err == nil || !strings.Contains(err.Error(), "private_key_file") {
		t.Errorf("missing key file: %v", err)
	}
}

func TestWrongSecret(t *testing.T) {
	em := foemutest.Start(t)
	c := emuConfig(em)
	c.ClientSecret = logging.NewSecret("not-the-secret-value")
	e := newEnv(t, c, Options{})
	_, err := e.Do(context.Background(), &Request{Method: "GET", Path: "/data/ProductionOrderHeaders", Op: "probe"})
	if err == nil || pipeline.IsPermanent(err) || !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong secret: %v; want a transient ErrToken naming invalid_client", err)
	}
	if strings.Contains(err.Error(), "not-the-secret-value") {
		t.Fatal("the error shows the secret")
	}
	if e.breaker.State() != BreakerClosed {
		t.Error("a clear refusal from the identity platform opened the breaker")
	}
	if err := e.Probe(context.Background()); !errors.Is(err, pipeline.ErrNotReady) {
		t.Errorf("Probe = %v, want ErrNotReady", err)
	}
}

// tlsServer starts an httptest TLS server and writes a PEM file trusting
// it and the emulator, for an environment that talks to both.
func tlsServer(t *testing.T, em *foemu.Emulator, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	ca = append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, p
}

func TestProxyHTMLPage(t *testing.T) {
	em := foemutest.Start(t)
	srv, ca := tlsServer(t, em, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"))
	}))
	c := emuConfig(em)
	c.URL, c.CAFile = srv.URL, ca
	e := newEnv(t, c, Options{})
	_, err := e.Do(context.Background(), &Request{Method: "POST", Path: "/data/ProductionOrderHeaders", Body: []byte(`{}`), Op: "odata"})
	// A proxy's 502 may follow a request that reached F&O: in doubt.
	if err == nil || pipeline.IsPermanent(err) || !IsInDoubt(err) {
		t.Fatalf("HTML 502: %v; want transient and in doubt", err)
	}
	if !strings.Contains(err.Error(), "HTML page instead of JSON") || !strings.Contains(err.Error(), "502 Bad Gateway") || !strings.Contains(err.Error(), "nginx") {
		t.Errorf("reason %q does not describe the proxy page", err)
	}
}

func TestTokenEndpointGarbage(t *testing.T) {
	em := foemutest.Start(t)
	var mode atomic.Value
	mode.Store("garbage")
	var srv *httptest.Server
	srv, ca := tlsServer(t, em, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "openid-configuration") {
			base := srv.URL + "/" + testTenant
			_ = json.NewEncoder(w).Encode(map[string]any{"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize", "issuer": base + "/v2.0"})
			return
		}
		switch mode.Load() {
		case "garbage":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"token_type":"Bearer","expires_in":{"x":1},"access_token":"eyJsecret.token.value"`))
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("<html><title>Service Unavailable</title><body>maintenance</body></html>"))
		case "empty":
			_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 3599})
		}
	}))
	c := emuConfig(em)
	c.AuthorityURL, c.CAFile = srv.URL, ca
	e := newEnv(t, c, Options{})
	for _, m := range []struct{ mode, want string }{
		{"garbage", "not a token response"},
		{"html", "Service Unavailable"},
		{"empty", "access_token"},
	} {
		mode.Store(m.mode)
		_, err := e.Do(context.Background(), &Request{Method: "GET", Path: "/data/X", Op: "probe"})
		if err == nil || pipeline.IsPermanent(err) || !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), m.want) {
			t.Errorf("%s: %v; want a transient ErrToken with %q", m.mode, err, m.want)
		}
		if err != nil && strings.Contains(err.Error(), "eyJsecret") {
			t.Errorf("%s: the error shows the token: %v", m.mode, err)
		}
	}
}

func TestInDoubtAndUnreachable(t *testing.T) {
	em := foemutest.Start(t)
	release := make(chan struct{})
	srv, ca := tlsServer(t, em, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	c := emuConfig(em)
	c.URL, c.CAFile, c.Timeout = srv.URL, ca, config.Duration(200*time.Millisecond)
	e := newEnv(t, c, Options{Breaker: BreakerConfig{Failures: 2, Delay: time.Hour}})
	_, err := e.Do(context.Background(), &Request{Method: "POST", Path: "/api/x", Body: []byte(`{}`), Op: "mes"})
	if !IsInDoubt(err) || pipeline.IsPermanent(err) {
		t.Fatalf("timeout after the request left: %v; want in doubt", err)
	}
	// Nothing listens: the request never left.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close()
	c.URL = "https://" + addr
	e2 := newEnv(t, c, Options{Breaker: BreakerConfig{Failures: 2, Delay: time.Hour}})
	for i := range 2 {
		_, err = e2.Do(context.Background(), &Request{Method: "POST", Path: "/api/x", Body: []byte(`{}`), Op: "mes"})
		if err == nil || IsInDoubt(err) {
			t.Fatalf("attempt %d, connection refused: %v; want a failure that is not in doubt", i, err)
		}
	}
	_, err = e2.Do(context.Background(), &Request{Method: "POST", Path: "/api/x", Body: []byte(`{}`), Op: "mes"})
	var te *pipeline.ThrottleError
	if !errors.Is(err, ErrCircuitOpen) || !errors.As(err, &te) || te.After <= 0 {
		t.Fatalf("after 2 failures: %v; want a throttle with ErrCircuitOpen", err)
	}
	if !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("reason %q", err)
	}
	if err := e2.Probe(context.Background()); !errors.Is(err, pipeline.ErrNotReady) {
		t.Errorf("Probe with the circuit open = %v", err)
	}
}

func TestIdentityPlatformDownOpensTheCircuit(t *testing.T) {
	em := foemutest.Start(t)
	if err := em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteToken, ErrorRate: 1, ErrorStatus: 503}}}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, emuConfig(em), Options{Breaker: BreakerConfig{Failures: 2, Delay: time.Hour}})
	for i := range 2 {
		_, err := e.Do(context.Background(), &Request{Method: "GET", Path: "/data/X", Op: "probe"})
		if !errors.Is(err, ErrToken) || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("attempt %d: %v; want a transient token error naming the 503", i, err)
		}
	}
	_, err := e.Do(context.Background(), &Request{Method: "GET", Path: "/data/X", Op: "probe"})
	if !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("after 2 token failures: %v; want the circuit open", err)
	}
	if n := em.Stats().Total(foemu.RouteOData); n != 0 {
		t.Errorf("%d OData requests without a token", n)
	}
}
