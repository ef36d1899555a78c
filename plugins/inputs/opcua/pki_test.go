package opcua

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestOwnCertificateIsMadeOnce checks that the application certificate is
// generated on first use and then read back, never made again.
func TestOwnCertificateIsMadeOnce(t *testing.T) {
	p := PKI{Dir: t.TempDir()}
	der1, _, cert, err := p.OwnCertificate("urn:plantgate:test:line")
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:plantgate:test:line" {
		t.Fatalf("URI SAN %v", cert.URIs)
	}
	der2, _, _, err := p.OwnCertificate("urn:plantgate:test:line")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(der1, der2) {
		t.Fatal("the application certificate was made again")
	}
}

// TestServerCertificateChecks: unknown is refused and filed, trusted is
// accepted, expired is refused even when trusted, a pin accepts only its
// certificate.
func TestServerCertificateChecks(t *testing.T) {
	p := PKI{Dir: t.TempDir()}
	if _, _, _, err := p.OwnCertificate("urn:x"); err != nil {
		t.Fatal(err)
	}
	good, _, err := GenerateCertificate("urn:server", "server", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := GenerateCertificate("urn:other", "other", time.Hour)
	now := time.Now()
	_, err = p.CheckServer(good, "", now)
	var ue *UntrustedError
	if !errors.As(err, &ue) || ue.FiledAs == "" {
		t.Fatalf("unknown certificate: %v", err)
	}
	if b, _ := os.ReadFile(ue.FiledAs); !bytes.Equal(b, good) {
		t.Fatal("the rejected file is not the certificate")
	}
	if _, err := p.Trust("nope"); err == nil {
		t.Fatal("trusted a certificate that is not there")
	}
	if _, err := p.Trust(filepath.Base(ue.FiledAs)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckServer(good, "", now); err != nil {
		t.Fatalf("trusted certificate refused: %v", err)
	}
	if _, err := p.CheckServer(good, "", now.Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired certificate: %v", err)
	}
	if _, err := p.CheckServer(other, Fingerprint(good), now); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("pin mismatch: %v", err)
	}
	if _, err := p.CheckServer(good, strings.ToLower(strings.ReplaceAll(Fingerprint(good), ":", "")), now); err != nil {
		t.Fatalf("pinned certificate refused: %v", err)
	}
}

// TestConfigErrorsNameTheField loads configs with a bad node id, a rule on
// an unknown node, and a policy without a mode: each is a problem at its
// field.
func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"endpoint: opc.tcp://h:4840\nnodes: {good: {node: \"nsu=urn:x\"}}", "nodes.good.node"},
		{"endpoint: opc.tcp://h:4840\nnodes: {good: {node: \"nsu=urn:x;s=G\"}}\nrules: {r: {kind: counter, value: nope}}", "rules.r.value: no node named \"nope\""},
		{"endpoint: opc.tcp://h:4840\nsecurity: {policy: Basic256Sha256, mode: None}\nnodes: {good: {node: \"i=1\"}}", "needs mode Sign or SignAndEncrypt"},
		{"endpoint: http://h\nnodes: {good: {node: \"i=1\"}}", "want opc.tcp://"},
		{"endpoint: opc.tcp://h:4840\nauth: {type: username}\nnodes: {good: {node: \"i=1\"}}", "needs username and password"},
	} {
		err := configError(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.body, err, tc.want)
		}
	}
}

// TestStatusWarnsBeforeCertificateExpiry: a server certificate that ends
// within cert_warning is a warning in status, with its date.
func TestStatusWarnsBeforeCertificateExpiry(t *testing.T) {
	cfg, _ := parseConfig(t, "endpoint: opc.tcp://h:4840\nnodes: {good: {node: \"i=1\"}}\n")
	s, err := New(cfg, pipeline.Env{Name: "line", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	soon, _, _ := GenerateCertificate("urn:server", "server", 10*24*time.Hour)
	later, _, _ := GenerateCertificate("urn:own", "own", 300*24*time.Hour)
	c1, _ := x509.ParseCertificate(soon)
	c2, _ := x509.ParseCertificate(later)
	s.st.serverCert, s.st.ownCert = c1, c2
	st := s.Status()
	w, _ := st["warnings"].([]string)
	if len(w) != 1 || !strings.Contains(w[0], "server certificate expires on "+c1.NotAfter.UTC().Format(time.DateOnly)) {
		t.Fatalf("warnings %v", st["warnings"])
	}
	certs := st["certificates"].(map[string]any)
	if certs["server"].(map[string]any)["warning"] != "expires soon" || certs["own"].(map[string]any)["warning"] != nil {
		t.Fatalf("certificates %v", certs)
	}
}
