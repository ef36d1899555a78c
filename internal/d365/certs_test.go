package d365

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/plantgate/plantgate/internal/certexpiry"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/logging"
)

// TestEnvExportsCertificateExpiry: an environment records when its
// ca_file and its client certificate expire, so an alert can warn before
// the gateway stops reaching F&O.
func TestEnvExportsCertificateExpiry(t *testing.T) {
	em := foemutest.Start(t)
	caPEM, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cas, err := certexpiry.Parse(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	notAfter := time.Unix(1_950_000_000, 0)
	key, err := rsa.GenerateKey(rand.Reader, 2048) // MSAL takes RSA keys only
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "plantgate"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := emuConfig(em)
	c.ClientSecret = logging.NewSecret("")
	c.CertificateFile, c.PrivateKeyFile = certFile, keyFile
	reg := prometheus.NewPedanticRegistry()
	newEnv(t, c, Options{Metrics: NewMetrics(reg)})
	want := fmt.Sprintf(`
# HELP %[1]s Earliest expiry (NotAfter, Unix seconds) of the certificates in each configured certificate file, by component, name and use (ca, client_certificate, server_certificate, application_certificate).
# TYPE %[1]s gauge
%[1]s{component="fo",name="test",use="ca"} %[2]d
%[1]s{component="fo",name="test",use="client_certificate"} %[3]d
`, certexpiry.Name, cas[0].NotAfter.Unix(), notAfter.Unix())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), certexpiry.Name); err != nil {
		t.Error(err)
	}
}
