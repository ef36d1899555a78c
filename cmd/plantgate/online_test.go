package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// startBroker runs a mochi MQTT broker on loopback that lets user mes in
// with password pw, and returns its address.
func startBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	srv := mochi.New(&mochi.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(passwordHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return addr
}

// passwordHook lets in user mes with password pw.
type passwordHook struct{ mochi.HookBase }

func (h *passwordHook) ID() string { return "password" }

func (h *passwordHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *passwordHook) OnConnectAuthenticate(_ *mochi.Client, pk packets.Packet) bool {
	return string(pk.Connect.Username) == "mes" && string(pk.Connect.Password) == "pw"
}

func (h *passwordHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

const onlineConfig = `gateway: {id: t, data_dir: %q}
fo:
  prod:
    url: %s
    authority_url: %s
    tenant_id: plant-tenant
    client_id: %s
    client_secret: ${env:PG_TEST_FO_SECRET}
    ca_file: %s
    company: USMF
sources:
  mes:
    type: mqtt
    broker: tcp://%s
    client_id: plantgate-1
    username: mes
    password: ${env:PG_TEST_MQTT_PASSWORD}
    topics: [mes/#]
flows: {f: {from: mes, id: payload.id, to: out}}
sinks: {out: {type: fo.mes, env: prod, message_type: ProdProductionOrderStart}}
`

// TestCheckConfigOnline: --online gets a token from fo-emulator's
// identity platform and connects to and disconnects from the broker,
// printing each result; a refused secret or password fails its check
// alone, with the peer's reason, and the exit code is 1.
func TestCheckConfigOnline(t *testing.T) {
	if testing.Short() {
		t.Skip("against fo-emulator and an MQTT broker")
	}
	em := foemutest.Start(t)
	broker := startBroker(t)
	cfg := writeConfig(t, fmt.Sprintf(onlineConfig, t.TempDir(), em.BaseURL(), em.BaseURL(), foemu.DefaultClientID, em.CAFile(), broker))

	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	t.Setenv("PG_TEST_MQTT_PASSWORD", "pw")
	code, out, errOut := runCLI("check-config", "-c", cfg, "--online", "--timeout", "10s")
	if code != exitOK {
		t.Fatalf("exit %d, want 0\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"online: fo prod: ok: token for " + em.BaseURL() + "/.default from the identity platform",
		"online: source mes: ok: connected to tcp://" + broker + " as user mes (client id plantgate-1-check, clean session) and disconnected",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}

	t.Setenv("PG_TEST_FO_SECRET", "wrong-secret")
	t.Setenv("PG_TEST_MQTT_PASSWORD", "wrong")
	code, out, errOut = runCLI("check-config", "-c", cfg, "--online", "--timeout", "10s")
	if code != exitFailure || !strings.Contains(errOut, "2 of 2 online checks failed") {
		t.Fatalf("exit %d, want 1 with both checks failed\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"online: fo prod: FAILED: ", "online: source mes: FAILED: connect to tcp://" + broker + " as plantgate-1-check: not Authorized"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"wrong-secret", foemu.DefaultClientSecret} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("output holds the secret %q:\n%s%s", secret, out, errOut)
		}
	}
	// Without --online nothing is contacted and the config is fine.
	if code, out, errOut := runCLI("check-config", "-c", cfg); code != exitOK || strings.Contains(out, "online:") {
		t.Errorf("without --online: exit %d\n%s%s", code, out, errOut)
	}
}
