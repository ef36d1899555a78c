package foemutest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/foemu"
)

// Option adjusts the configuration before the emulator starts.
type Option func(*foemu.Config)

// FastNotFoundWindow is the dmf.not_found_window Fast keeps, so that every
// test that polls a DMF execution also goes through F&O's transient
// 400 "... were not found" right after ImportFromPackage.
const FastNotFoundWindow = 200 * time.Millisecond

// Fast are the timings Start uses: messages and DMF executions move on
// within milliseconds; the transient not-found window after
// ImportFromPackage stays on but short (FastNotFoundWindow).
func Fast(c *foemu.Config) {
	c.MES.ProcessingDelay = 0
	c.MES.RetryDelay = 0
	c.DMF.NotFoundWindow = foemu.Duration(FastNotFoundWindow)
	c.DMF.QueuedTime = foemu.Duration(5 * time.Millisecond)
	c.DMF.ExecutionTime = foemu.Duration(5 * time.Millisecond)
	c.DMF.ErrorFileDelay = 0
}

// Start starts an emulator on 127.0.0.1:0 over HTTPS with the default
// configuration (client plantgate-demo, secret demo-secret, built-in seed),
// Fast timings and then opts, and shuts it down at the end of the test.
// Set FOEMU_TEST_LOG=1 to see the emulator's logs in the test output.
func Start(t testing.TB, opts ...Option) *foemu.Emulator {
	t.Helper()
	cfg := foemu.DefaultConfig()
	Fast(&cfg)
	cfg.DataDir = t.TempDir()
	if os.Getenv("FOEMU_TEST_LOG") != "" {
		l := zerolog.New(zerolog.ConsoleWriter{Out: testWriter{t}, NoColor: true}).Level(zerolog.DebugLevel)
		cfg.Logger = &l
	}
	for _, o := range opts {
		o(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig starts an emulator with exactly cfg (DataDir defaults to a
// temporary directory) and shuts it down at the end of the test.
func StartConfig(t testing.TB, cfg foemu.Config) *foemu.Emulator {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	em, err := foemu.New(cfg)
	if err != nil {
		t.Fatalf("foemu.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if err := em.Start(ln); err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := em.Shutdown(ctx); err != nil {
			t.Errorf("emulator shutdown: %v", err)
		}
	})
	return em
}

// Token returns an access token for the default client, obtained from the
// emulator's token endpoint with scope <environment URL>/.default.
func Token(t testing.TB, em *foemu.Emulator) string {
	t.Helper()
	return ClientToken(t, em, foemu.DefaultClientID, foemu.DefaultClientSecret, em.EnvironmentURL()+"/.default")
}

// ClientToken requests a token with the client credentials grant and fails
// the test unless the emulator answers 200.
func ClientToken(t testing.TB, em *foemu.Emulator, clientID, secret, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}, "scope": {scope}}
	resp, err := em.HTTPClient().Post(em.AuthorityURL("test-tenant")+"/oauth2/v2.0/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("token response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token request answered %d: %s", resp.StatusCode, body.Error)
	}
	return body.AccessToken
}

// WaitFor polls cond every 5 ms until it returns true, failing the test
// after timeout. Tests use it instead of sleeping.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

type testWriter struct{ t testing.TB }

// Write logs through the test.
func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
