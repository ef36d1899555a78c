package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate as dir/certName and, when
// keyName is set, its key as dir/keyName.
func writeCert(t *testing.T, dir, certName, keyName string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	writeCertKey(t, dir, certName, keyName, key, &key.PublicKey)
}

// writeECCert is writeCert with an ECDSA key, which TLS takes and F&O's
// identity platform does not.
func writeECCert(t *testing.T, dir, certName, keyName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writeCertKey(t, dir, certName, keyName, key, &key.PublicKey)
}

func writeCertKey(t *testing.T, dir, certName, keyName string, key crypto.Signer, pub any) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: certName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		DNSNames: []string{"localhost"}, IPAddresses: nil}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if keyName == "" {
		return
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkFixtures makes the files the testdata configs name, in a directory
// named by PG_TEST_DIR: a certificate and its key, another certificate,
// a file that is not PEM, and a plain file.
func checkFixtures(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeCert(t, dir, "good.crt", "good.key")
	writeCert(t, dir, "other.crt", "other.key")
	writeECCert(t, dir, "ec.crt", "ec.key")
	for name, body := range map[string]string{"garbage.pem": "not PEM\n", "a-file": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PG_TEST_DIR", dir)
	t.Setenv("PG_TEST_SECRET", "not-a-real-secret")
	return dir
}

// TestCheckConfigRefusesWhatRunNeeds: each config in testdata/checkconfig
// holds one mistake that would make run fail at start; check-config
// exits 78 and names the file, line, column and field of each.
func TestCheckConfigRefusesWhatRunNeeds(t *testing.T) {
	dir := checkFixtures(t)
	for _, tc := range []struct{ file, want string }{
		{"missing-cert.yaml", ":7:23: fo.prod.certificate_file: file " + dir + "/missing.crt does not exist"},
		{"key-not-pem.yaml", ":8:23: fo.prod.private_key_file: " + dir + "/garbage.pem holds no PEM private key"},
		{"key-of-other-cert.yaml", ":8:23: fo.prod.private_key_file: the key in " + dir + "/good.key does not belong to the certificate in " + dir + "/other.crt"},
		{"fo-ec-key.yaml", ":3:3: fo.prod: fo environment prod: load certificate_file and private_key_file: key must be an RSA key"},
		{"missing-ca.yaml", ":8:14: fo.prod.ca_file: file " + dir + "/missing-ca.pem does not exist"},
		{"shell-variable-secret.yaml", ":7:20: fo.prod.client_secret: ${FO_CLIENT_SECRET} is not expanded: write ${env:FO_CLIENT_SECRET} for the environment variable"},
		{"shell-variable-path.yaml", ":3:13: gateway.data_dir: ${STATE_DIRECTORY} is not expanded: write ${env:STATE_DIRECTORY}"},
		{"http-port.yaml", `:3:11: http.listen: port "99999" in "127.0.0.1:99999": want a number from 1 to 65535`},
		{"embedded-listen.yaml", `:6:15: sources.mes.embedded.listen: want an address host:port such as 127.0.0.1:9464 or :9464, got "0.0.0.0"`},
		{"embedded-tls-key.yaml", ":10:19: sources.mes.embedded.tls.key_file: file " + dir + "/missing.key does not exist"},
		{"mqtt-client-ca.yaml", ":9:16: sources.mes.tls.ca_file: " + dir + "/garbage.pem holds no PEM certificate"},
		{"when-not-boolean.yaml", `:6:11: flows.f.when: expression "topic" gives string, not true or false`},
		{"data-dir-is-a-file.yaml", ":3:13: gateway.data_dir: " + dir + "/a-file is not a directory"},
		{"recorder-path.yaml", ":7:11: sinks.out.path: file " + dir + "/a-file/trace.jsonl cannot be created: " + dir + "/a-file is not a directory"},
		{"dmf-manifest-template.yaml", ":13:24: sinks.dmf.manifest_template: file " + dir + "/missing-manifest.xml does not exist"},
		{"dmf-no-legal-entity.yaml", ":7:3: sinks.dmf: sink dmf cannot start: no legal entity: set legal_entity on the sink or company on the fo environment"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", "checkconfig", tc.file)
			code, _, errOut := runCLI("check-config", "-c", path)
			if code != exitConfig {
				t.Fatalf("exit %d, want 78\n%s", code, errOut)
			}
			if want := path + tc.want; !strings.Contains(errOut, want) {
				t.Errorf("stderr:\n%s\nwant the line\n%s", errOut, want)
			}
			// fo.dmf's own check reads the manifest template too.
			if n := strings.Count(errOut, path+":"); n != 1 && tc.file != "dmf-manifest-template.yaml" {
				t.Errorf("stderr:\n%s\nwant exactly one problem", errOut)
			}
		})
	}
}

// TestCheckConfigAsServiceUser: files are checked for the user that runs
// check-config, as the unit's ExecStartPre does with the service's user.
// Run as nobody (setpriv), a key readable only by root and a data dir
// below a directory nobody cannot write are refused, with the uid.
func TestCheckConfigAsServiceUser(t *testing.T) {
	bin := plantgateBinary(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to run check-config as another user (setpriv)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeCert(t, dir, "fo.crt", "fo.key")
	if err := os.Chmod(filepath.Join(dir, "fo.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "plantgate.yaml")
	body := fmt.Sprintf(`gateway: {id: t, data_dir: %[1]s/state/data}
fo:
  prod: {url: "https://contoso.operations.dynamics.com", tenant_id: t, client_id: c, certificate_file: %[1]s/fo.crt, private_key_file: %[1]s/fo.key, company: USMF}
sources: {in: {type: file, path: "-"}}
flows: {f: {from: in, id: payload.id, to: mes}}
sinks: {mes: {type: fo.mes, env: prod, message_type: ProdProductionOrderStart}}
`, dir)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// As root both are fine.
	if code, errOut := runBinary(t, bin, "check-config", "-c", cfg); code != exitOK {
		t.Fatalf("as root: exit %d\n%s", code, errOut)
	}
	code, errOut := runBinary(t, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "check-config", "-c", cfg)
	if code != exitConfig {
		t.Fatalf("as nobody: exit %d, want 78\n%s", code, errOut)
	}
	for _, want := range []string{
		cfg + ":1:28: gateway.data_dir: directory " + dir + "/state/data does not exist and cannot be created: " + dir + " is not writable by this user (uid 65534)",
		cfg + ":3:", "fo.prod.private_key_file: file " + dir + "/fo.key cannot be read by this user (uid 65534): permission denied",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}
