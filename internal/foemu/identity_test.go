package foemu_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

func postForm(t *testing.T, em *foemu.Emulator, path string, form url.Values) reply {
	t.Helper()
	resp, err := em.HTTPClient().Post(em.BaseURL()+path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func claimsOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDiscovery(t *testing.T) {
	em := foemutest.Start(t)
	r := getJSON(t, em, "/my-tenant/v2.0/.well-known/openid-configuration")
	base := em.BaseURL() + "/my-tenant"
	want := map[string]string{
		"issuer":                 base + "/v2.0",
		"token_endpoint":         base + "/oauth2/v2.0/token",
		"authorization_endpoint": base + "/oauth2/v2.0/authorize",
	}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("%s = %v, want %v", k, r[k], v)
		}
	}
}

func getJSON(t *testing.T, em *foemu.Emulator, path string) map[string]any {
	t.Helper()
	resp, err := em.HTTPClient().Get(em.BaseURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenEndpoint(t *testing.T) {
	em := foemutest.Start(t)
	env := em.EnvironmentURL()
	ok := url.Values{"grant_type": {"client_credentials"}, "client_id": {"plantgate-demo"}, "client_secret": {"demo-secret"}, "scope": {env + "/.default"}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for kk, vv := range ok {
			f[kk] = vv
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	tests := []struct {
		name     string
		path     string
		form     url.Values
		status   int
		errCode  string
		aadsts   float64
		audience string
	}{
		{"client secret", "/t1/oauth2/v2.0/token", ok, 200, "", 0, env},
		{"scope with trailing slash", "/t1/oauth2/v2.0/token", with("scope", env+"//.default"), 200, "", 0, env + "/"},
		{"v1 resource", "/t1/oauth2/token", with("resource", env), 200, "", 0, env},
		{"wrong secret", "/t1/oauth2/v2.0/token", with("client_secret", "nope"), 400, "invalid_client", 7000215, ""},
		{"unknown client", "/t1/oauth2/v2.0/token", with("client_id", "someone"), 400, "unauthorized_client", 700016, ""},
		{"no credential", "/t1/oauth2/v2.0/token", with("client_secret", ""), 400, "invalid_client", 7000218, ""},
		{"scope without .default", "/t1/oauth2/v2.0/token", with("scope", env), 400, "invalid_scope", 70011, ""},
		{"wrong grant", "/t1/oauth2/v2.0/token", with("grant_type", "password"), 400, "unsupported_grant_type", 70003, ""},
		{"no grant", "/t1/oauth2/v2.0/token", with("grant_type", ""), 400, "invalid_request", 900144, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := postForm(t, em, tt.path, tt.form)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.status, r.body)
			}
			m := r.json(t)
			if tt.status != 200 {
				if m["error"] != tt.errCode {
					t.Errorf("error = %v, want %v", m["error"], tt.errCode)
				}
				codes, _ := m["error_codes"].([]any)
				if len(codes) != 1 || codes[0] != tt.aadsts {
					t.Errorf("error_codes = %v, want [%v]", m["error_codes"], tt.aadsts)
				}
				for _, k := range []string{"error_description", "timestamp", "trace_id", "correlation_id"} {
					if s, _ := m[k].(string); s == "" {
						t.Errorf("%s missing", k)
					}
				}
				if d, _ := m["error_description"].(string); !strings.HasPrefix(d, "AADSTS") {
					t.Errorf("error_description = %q, want AADSTS prefix", d)
				}
				return
			}
			if m["token_type"] != "Bearer" {
				t.Errorf("token_type = %v", m["token_type"])
			}
			exp := m["expires_in"]
			if s, ok := exp.(string); ok { // v1 answers strings
				if s != "3599" {
					t.Errorf("expires_in = %q, want 3599", s)
				}
			} else if exp != float64(3599) {
				t.Errorf("expires_in = %v, want 3599", exp)
			}
			c := claimsOf(t, m["access_token"].(string))
			if c["aud"] != tt.audience || c["appid"] != "plantgate-demo" || c["azp"] != "plantgate-demo" || c["tid"] != "t1" || c["oid"] == "" {
				t.Errorf("claims = %v", c)
			}
			if e, _ := c["exp"].(float64); e < float64(time.Now().Add(59*time.Minute).Unix()) {
				t.Errorf("exp = %v, want about an hour from now", e)
			}
		})
	}
}

func TestTokenTenantRestriction(t *testing.T) {
	em := foemutest.Start(t, func(c *foemu.Config) { c.Identity.TenantID = "11111111-2222-3333-4444-555555555555" })
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"plantgate-demo"}, "client_secret": {"demo-secret"}, "scope": {em.EnvironmentURL() + "/.default"}}
	if r := postForm(t, em, "/other-tenant/oauth2/v2.0/token", form); r.status != 400 || !strings.Contains(string(r.body), "AADSTS90002") {
		t.Errorf("other tenant: %d %s", r.status, r.body)
	}
	if r := postForm(t, em, "/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token", form); r.status != 200 {
		t.Errorf("configured tenant: %d %s", r.status, r.body)
	}
}

func TestBearerChecks(t *testing.T) {
	em := foemutest.Start(t)
	env := em.EnvironmentURL()
	issue := func(aud string, life time.Duration) string {
		tok, err := em.IssueToken(foemu.DefaultClientID, "t1", aud, life)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := issue(env, time.Hour)
	tampered := good[:len(good)-4] + "AAAA"
	tests := []struct {
		name   string
		auth   string
		status int
	}{
		{"valid", "Bearer " + good, 200},
		{"missing", "", 401},
		{"not bearer", "Basic abc", 401},
		{"expired", "Bearer " + issue(env, -time.Minute), 401},
		{"audience with trailing slash", "Bearer " + issue(env+"/", time.Hour), 401},
		{"audience in upper case", "Bearer " + issue(strings.ToUpper(env), time.Hour), 401},
		{"other audience", "Bearer " + issue("https://contoso.operations.dynamics.com", time.Hour), 401},
		{"bad signature", "Bearer " + tampered, 401},
		{"garbage", "Bearer abc.def", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, env+"/data/ProductionOrderHeaders?$top=1", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := em.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// msalApp builds an MSAL confidential client that trusts the emulator only
// through the CA file in its data directory, as a gateway would.
func msalApp(t *testing.T, em *foemu.Emulator, cred confidential.Credential) confidential.Client {
	t.Helper()
	caPEM, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	app, err := confidential.New(em.AuthorityURL("00000000-0000-0000-0000-0000000000aa"), foemu.DefaultClientID, cred,
		confidential.WithHTTPClient(hc), confidential.WithInstanceDiscovery(false))
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func TestMSALConfidentialClient(t *testing.T) {
	em := foemutest.Start(t)
	cred, err := confidential.NewCredFromSecret(foemu.DefaultClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	app := msalApp(t, em, cred)
	ctx := context.Background()
	scope := []string{em.EnvironmentURL() + "/.default"}
	res, err := app.AcquireTokenByCredential(ctx, scope)
	if err != nil {
		t.Fatalf("AcquireTokenByCredential: %v", err)
	}
	if c := claimsOf(t, res.AccessToken); c["aud"] != em.EnvironmentURL() || c["tid"] != "00000000-0000-0000-0000-0000000000aa" {
		t.Errorf("claims = %v", c)
	}
	again, err := app.AcquireTokenByCredential(ctx, scope)
	if err != nil {
		t.Fatal(err)
	}
	if again.Metadata.TokenSource != confidential.TokenSourceCache {
		t.Errorf("second token came from %v, want the cache (expires_in must be >= 300)", again.Metadata.TokenSource)
	}
	a := &api{t: t, em: em, token: res.AccessToken, hc: em.HTTPClient()}
	if r := a.do(http.MethodGet, "/data/ProductionOrderHeaders?$top=1", ""); r.status != 200 {
		t.Errorf("OData with the MSAL token: %d %s", r.status, r.body)
	}
	if n := em.Stats().Count(foemu.RouteDiscovery, 200); n != 1 {
		t.Errorf("discovery requests = %d, want 1", n)
	}
}

func TestMSALWrongSecret(t *testing.T) {
	em := foemutest.Start(t)
	cred, err := confidential.NewCredFromSecret("wrong-secret")
	if err != nil {
		t.Fatal(err)
	}
	_, err = msalApp(t, em, cred).AcquireTokenByCredential(context.Background(), []string{em.EnvironmentURL() + "/.default"})
	if err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("err = %v, want invalid_client", err)
	}
}

func TestMSALCertificateAssertion(t *testing.T) {
	em := foemutest.Start(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "plantgate"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	cred, err := confidential.NewCredFromCert([]*x509.Certificate{cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	res, err := msalApp(t, em, cred).AcquireTokenByCredential(context.Background(), []string{em.EnvironmentURL() + "/.default"})
	if err != nil {
		t.Fatalf("certificate credential: %v", err)
	}
	if c := claimsOf(t, res.AccessToken); c["appid"] != foemu.DefaultClientID {
		t.Errorf("claims = %v", c)
	}
}
