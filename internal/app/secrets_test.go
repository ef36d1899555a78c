package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretsStayOutOfLogsAndStatus runs a gateway that delivers to F&O
// (the emulator) at debug level, with a validation failure and a wrong
// admin token on the way, and checks that neither the client secret, the
// admin token nor any bearer token appears in the logs, the status JSON,
// the status page or /metrics.
func TestSecretsStayOutOfLogsAndStatus(t *testing.T) {
	em := foemutest.Start(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	appendLines(t, in,
		`{"order":"P000101","qty":3,"id":"a"}`,
		`{"order":"P000102","id":"b"}`, // no qty: dead-lettered before sending
	)
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	t.Setenv("PG_TEST_ADMIN_TOKEN", adminToken)
	cfgText := fmt.Sprintf(`
gateway: {id: secrets, data_dir: %[1]s}
log: {level: debug}
http: {listen: 127.0.0.1:0, admin_token: "${env:PG_TEST_ADMIN_TOKEN}"}
fo:
  emu:
    url: %[2]s
    authority_url: %[2]s
    tenant_id: t1
    client_id: %[3]s
    client_secret: ${env:PG_TEST_FO_SECRET}
    ca_file: %[4]s
    company: USMF
sources:
  in: {type: file, path: %[5]s, follow: true, poll_interval: 20ms}
flows:
  start:
    from: in
    key: payload.order
    id: payload.id
    to: mes
    map:
      ProductionOrderNumber: payload.order
      StartedQuantity: payload.qty
sinks:
  mes: {type: fo.mes, env: emu, message_type: ProdProductionOrderStart}
`, dir, em.EnvironmentURL(), foemu.DefaultClientID, em.CAFile(), in)
	p := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(p, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, flows, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	a := New(cfg, flows, zerolog.New(&logs).Level(zerolog.DebugLevel))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "the message in F&O", func() bool { return len(em.Messages()) == 1 })
	eventually(t, "the bad record dead-lettered", func() bool {
		st := a.Status()
		return strings.Contains(strings.Join(st.Problems, " "), "dead letter")
	})
	base := "http://" + a.HTTPAddr().String()
	get(t, base+"/api/v1/admin/dead?stream=_source.in", "wrong-token")
	_, status := get(t, base+"/api/v1/status", "")
	_, page := get(t, base+"/", "")
	_, metrics := get(t, base+"/metrics", "")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"logs": logs.String(), "status": status, "page": page, "metrics": metrics} {
		for _, secret := range []string{foemu.DefaultClientSecret, adminToken, "eyJ"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contain %q", name, secret)
			}
		}
	}
	if !strings.Contains(logs.String(), `"level":"debug"`) {
		t.Error("the test logged nothing at debug level, so it proved little")
	}
}
