package certexpiry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func cert(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemOf(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }

// TestEarliestExpiryOfEachFile: the gauge holds the earliest NotAfter of a
// file's certificates, keys in the file are skipped, a DER file works, and
// every component of one registry shares the family.
func TestEarliestExpiryOfEachFile(t *testing.T) {
	dir := t.TempDir()
	soon, late := time.Unix(1_900_000_000, 0), time.Unix(2_000_000_000, 0)
	bundle := append(append(pemOf(cert(t, late)), []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")...), pemOf(cert(t, soon))...)
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.der"), cert(t, late), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := For(reg).SetFile("fo", "prod", UseCA, filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	if err := For(reg).SetFile("source", "press", UseApplication, filepath.Join(dir, "app.der")); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`
# HELP %[1]s Earliest expiry (NotAfter, Unix seconds) of the certificates in each configured certificate file, by component, name and use (ca, client_certificate, server_certificate, application_certificate).
# TYPE %[1]s gauge
%[1]s{component="fo",name="prod",use="ca"} 1.9e+09
%[1]s{component="source",name="press",use="application_certificate"} 2e+09
`, Name)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), Name); err != nil {
		t.Error(err)
	}
}

func TestNotACertificate(t *testing.T) {
	g := For(nil)
	if err := g.SetPEM("fo", "prod", UseCA, []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("a key file: %v, want ErrNoCertificate", err)
	}
	if err := g.SetFile("fo", "prod", UseCA, filepath.Join(t.TempDir(), "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	if n := testutil.CollectAndCount(g.v); n != 0 {
		t.Errorf("%d samples recorded from bad files", n)
	}
}
