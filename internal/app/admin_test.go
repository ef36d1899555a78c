package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const readToken = "r3ad-only-token-value"

func withHTTP(body, extra string) string {
	return strings.Replace(body, "  admin_token: ${env:PG_TEST_ADMIN_TOKEN}\n", "  admin_token: ${env:PG_TEST_ADMIN_TOKEN}\n"+extra, 1)
}

func do(t *testing.T, method, url string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	_, _ = fmt.Fprint(b, readAll(resp))
	return resp.StatusCode, resp.Header, b.String()
}

func readAll(resp *http.Response) string {
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

// TestAdminAuth: admin calls need the admin token (401 without detail
// otherwise), the read token opens the status and metrics but not the
// admin API, probes stay open, and a browser's Basic credentials name the
// operator in the audit log.
func TestAdminAuth(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PG_TEST_READ_TOKEN", readToken)
	appendLines(t, filepath.Join(dir, "in.jsonl"), `not json`)
	a, cancel, done := startAppWith(t, dir, withHTTP(fmt.Sprintf(testConfig, dir), "  read_token: ${env:PG_TEST_READ_TOKEN}\n"))
	defer func() { cancel(); <-done }()
	base := "http://" + a.HTTPAddr().String()
	eventually(t, "the dead letter", func() bool { st, _ := a.store.Stats(); return st.Dead == 1 })
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	for _, p := range []string{"/healthz", "/readyz"} {
		if c, _, _ := do(t, "GET", base+p, nil, ""); c != 200 {
			t.Errorf("%s without a token = %d, want 200 (probes stay open)", p, c)
		}
	}
	for _, p := range []string{"/", "/api/v1/status", "/metrics"} {
		if c, h, b := do(t, "GET", base+p, nil, ""); c != 401 || strings.TrimSpace(b) != `{
  "error": "unauthorized"
}` || h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s without a token = %d %q, want 401 without detail", p, c, b)
		}
		if c, _, _ := do(t, "GET", base+p, bearer(readToken), ""); c != 200 {
			t.Errorf("%s with the read token = %d", p, c)
		}
		if c, _, _ := do(t, "GET", base+p, bearer(adminToken), ""); c != 200 {
			t.Errorf("%s with the admin token = %d", p, c)
		}
	}
	for _, tok := range []string{"", "wrong", readToken} {
		c, _, b := do(t, "GET", base+"/api/v1/admin/dead", bearer(tok), "")
		if c != 401 || strings.Contains(b, adminToken) || strings.Contains(b, "token") {
			t.Errorf("admin list with token %q = %d %s, want 401 without detail", tok, c, b)
		}
	}
	// A browser: Basic auth with the token as password, a form post from
	// the page itself.
	form := url.Values{"stream": {"_source.mes"}, "seq": {"1"}}.Encode()
	hdr := map[string]string{"Authorization": basicAuthHeader("maria", adminToken), "Content-Type": "application/x-www-form-urlencoded", "Origin": base}
	req, _ := http.NewRequest("POST", base+"/api/v1/admin/dead/drop", strings.NewReader(form))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 || !strings.Contains(resp.Header.Get("Location"), "confirm") {
		t.Errorf("form drop without confirm = %d %s, want a redirect saying confirm", resp.StatusCode, resp.Header.Get("Location"))
	}
	hdr["Origin"] = "https://evil.example"
	if c, _, _ := do(t, "POST", base+"/api/v1/admin/dead/drop", hdr, form+"&confirm=true"); c != 403 {
		t.Errorf("cross-site form post = %d, want 403", c)
	}
	hdr["Origin"] = base
	if c, _, _ := do(t, "POST", base+"/api/v1/admin/dead/drop", hdr, form+"&confirm=true"); c != 200 {
		t.Errorf("form drop with confirm = %d", c)
	}
	if st, _ := a.store.Stats(); st.Dead != 0 {
		t.Errorf("%d dead letters after the drop", st.Dead)
	}
	audit, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	if !strings.Contains(string(audit), `"who":"maria"`) || !strings.Contains(string(audit), `"action":"drop"`) {
		t.Errorf("audit log:\n%s", audit)
	}
	_, _, list := do(t, "GET", base+"/api/v1/admin/audit", bearer(adminToken), "")
	if !strings.Contains(list, "maria") {
		t.Errorf("audit API: %s", list)
	}
}

// TestAdminBadRequests: malformed admin requests get 400 with a reason.
func TestAdminBadRequests(t *testing.T) {
	dir := t.TempDir()
	a, cancel, done := startApp(t, dir)
	defer func() { cancel(); <-done }()
	base := "http://" + a.HTTPAddr().String()
	h := map[string]string{"Authorization": "Bearer " + adminToken, "Content-Type": "application/json"}
	for _, c := range []struct{ path, body, want string }{
		{"/api/v1/admin/dead/replay", `{"stream":`, "body must be JSON"},
		{"/api/v1/admin/dead/replay", `{"stream":"x","bogus":1}`, "unknown field"},
		{"/api/v1/admin/dead/replay", `{}`, "stream is required"},
		{"/api/v1/admin/purge", `{"stream":"finished.trace","all":true}`, "confirm"},
		{"/api/v1/admin/purge", `{"stream":"finished.trace","what":"everything","confirm":true}`, "what must be"},
		{"/api/v1/admin/in-doubt/release", `{}`, "name the held records"},
		{"/api/v1/admin/in-doubt/drop", `{"stream":"finished.trace","all":true}`, "confirm"},
		{"/api/v1/admin/dmf/close", `{"sink":"trace"}`, "does not batch"},
	} {
		code, _, body := do(t, "POST", base+c.path, h, c.body)
		if code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("POST %s %s = %d %s, want 400 with %q", c.path, c.body, code, body, c.want)
		}
	}
	if code, _, _ := do(t, "GET", base+"/api/v1/admin/dead/finished.trace/x", h, ""); code != 400 {
		t.Errorf("show with a bad seq = %d", code)
	}
	if code, _, _ := do(t, "POST", base+"/api/v1/admin/flows/nope/pause", h, ""); code != 404 {
		t.Errorf("pause of an unknown flow = %d", code)
	}
}

// TestPauseFlow: a paused flow's records are received and queued, not
// delivered, also after a restart; resumed, they are delivered in order.
func TestPauseFlow(t *testing.T) {
	dir := t.TempDir()
	in, trace := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "trace.jsonl")
	a, cancel, done := startApp(t, dir)
	base := "http://" + a.HTTPAddr().String()
	h := map[string]string{"Authorization": "Bearer " + adminToken}
	if c, _, b := do(t, "POST", base+"/api/v1/admin/flows/finished/pause", h, ""); c != 200 || !strings.Contains(b, `"paused": true`) {
		t.Fatalf("pause = %d %s", c, b)
	}
	appendLines(t, in, `{"type":"finished","order":"P1","good":1,"id":"a"}`, `{"type":"finished","order":"P1","good":2,"id":"b"}`)
	eventually(t, "two records queued", func() bool { st, _ := a.store.Stats(); return st.Records == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := len(traceLines(t, trace)); n != 0 {
		t.Fatalf("%d records delivered while paused", n)
	}
	if st := a.Status(); st.Health.State != StateDegraded || !strings.Contains(strings.Join(st.Problems, "\n"), "paused by an operator") {
		t.Errorf("status while paused: %s %q", st.Health.State, st.Problems)
	}
	cancel()
	<-done
	a, cancel, done = startApp(t, dir)
	defer func() { cancel(); <-done }()
	base = "http://" + a.HTTPAddr().String()
	time.Sleep(300 * time.Millisecond)
	if n := len(traceLines(t, trace)); n != 0 {
		t.Fatalf("%d records delivered after a restart of a paused flow", n)
	}
	if c, _, _ := do(t, "POST", base+"/api/v1/admin/flows/finished/resume", h, ""); c != 200 {
		t.Fatalf("resume = %d", c)
	}
	eventually(t, "delivered after resume", func() bool { return len(traceLines(t, trace)) == 2 })
}

// TestTLSListener: with http.tls the API is served over HTTPS only.
func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	body := withHTTP(fmt.Sprintf(testConfig, dir), fmt.Sprintf("  tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile))
	a, cancel, done := startAppWith(t, dir, body)
	defer func() { cancel(); <-done }()
	addr := a.HTTPAddr().String()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("https healthz = %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered on a TLS listener")
		}
	}
	if b, _ := os.ReadFile(AddrFile(a.cfg)); !strings.HasPrefix(string(b), "https://") {
		t.Errorf("api.url = %q, want https", b)
	}
}

func selfSigned(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, "http.crt"), filepath.Join(dir, "http.key")
	_ = os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return cf, kf, pool
}

// TestAdminShowAndRecords: one dead letter in full, and the pending
// records of a stream, through the admin API.
func TestAdminShowAndRecords(t *testing.T) {
	dir := t.TempDir()
	appendLines(t, filepath.Join(dir, "in.jsonl"), `not json`)
	a, cancel, done := startApp(t, dir)
	defer func() { cancel(); <-done }()
	base := "http://" + a.HTTPAddr().String()
	h := map[string]string{"Authorization": "Bearer " + adminToken}
	eventually(t, "the dead letter", func() bool { st, _ := a.store.Stats(); return st.Dead == 1 })
	if c, _, b := do(t, "GET", base+"/api/v1/admin/dead/_source.mes/1", h, ""); c != 200 || !strings.Contains(b, `"raw": "not json"`) {
		t.Errorf("show dead letter 1 = %d %s", c, b)
	}
	if c, _, _ := do(t, "GET", base+"/api/v1/admin/dead/_source.mes/2", h, ""); c != 404 {
		t.Errorf("show a missing dead letter = %d, want 404", c)
	}
	if c, _, _ := do(t, "GET", base+"/api/v1/admin/dead/nope/1", h, ""); c != 404 {
		t.Errorf("show in an unknown stream = %d, want 404", c)
	}
	if c, _, b := do(t, "GET", base+"/api/v1/admin/dead?q=NOT+JSON", h, ""); c != 200 || !strings.Contains(b, "not json") {
		t.Errorf("search across streams = %d %s", c, b)
	}
	if c, _, b := do(t, "GET", base+"/api/v1/admin/dead?q=P999", h, ""); c != 200 || strings.Contains(b, "not json") {
		t.Errorf("search that matches nothing = %d %s", c, b)
	}
	// A paused flow keeps its records queued: list them.
	if c, _, _ := do(t, "POST", base+"/api/v1/admin/flows/finished/pause", h, ""); c != 200 {
		t.Fatal("pause")
	}
	appendLines(t, filepath.Join(dir, "in.jsonl"), `{"type":"finished","order":"P7","good":3,"id":"r1"}`)
	eventually(t, "a queued record", func() bool { st, _ := a.store.Stats(); return st.Records == 1 })
	if c, _, b := do(t, "GET", base+"/api/v1/admin/records?stream=finished.trace", h, ""); c != 200 || !strings.Contains(b, `"key": "P7"`) || !strings.Contains(b, `"id": "r1"`) {
		t.Errorf("records = %d %s", c, b)
	}
	if c, _, _ := do(t, "GET", base+"/api/v1/admin/records?stream=nope", h, ""); c != 404 {
		t.Errorf("records of an unknown stream = %d, want 404", c)
	}
}
