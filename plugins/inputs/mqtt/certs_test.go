package mqtt

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/certexpiry"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestTLSCertificateExpiryExported: a source records when its TLS files
// expire: the embedded broker's certificate and client CA, a client-mode
// source's CA and client certificate; a plain connection records nothing.
func TestTLSCertificateExpiryExported(t *testing.T) {
	pki := newTestPKI(t, t.TempDir())
	notAfter := func(path string) int64 {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := certexpiry.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return cs[0].NotAfter.Unix()
	}
	reg := prometheus.NewPedanticRegistry()
	emb := embeddedConfig()
	emb.Embedded.TLS = &ServerTLS{CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.ca}
	client := Config{Broker: "tls://127.0.0.1:8883", ClientID: "pg", Topics: []Topic{{Filter: "mes/#"}},
		TLS: ClientTLS{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}
	plain := Config{Broker: "tcp://127.0.0.1:1883", ClientID: "pg2", Topics: []Topic{{Filter: "mes/#"}}}
	for name, c := range map[string]*Config{"broker": &emb, "upstream": &client, "plain": &plain} {
		if _, err := New(c, pipeline.Env{Name: name, Log: testLogger(t), Metrics: reg}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	want := fmt.Sprintf(`
# HELP %[1]s Earliest expiry (NotAfter, Unix seconds) of the certificates in each configured certificate file, by component, name and use (ca, client_certificate, server_certificate, application_certificate).
# TYPE %[1]s gauge
%[1]s{component="source",name="broker",use="ca"} %[2]d
%[1]s{component="source",name="broker",use="server_certificate"} %[3]d
%[1]s{component="source",name="upstream",use="ca"} %[2]d
%[1]s{component="source",name="upstream",use="client_certificate"} %[4]d
`, certexpiry.Name, notAfter(pki.ca), notAfter(pki.serverCert), notAfter(pki.clientCert))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), certexpiry.Name); err != nil {
		t.Error(err)
	}
}
