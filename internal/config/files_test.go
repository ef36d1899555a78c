package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
)

// writePEM writes a certificate and its key, valid from notBefore for a
// day, into dir as name.crt and name.key, and returns their paths.
func writePEM(t *testing.T, dir, name string, notBefore time.Time) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt, kf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return crt, kf
}

// tlsPlugin is a fake sink whose settings name files and an address, as
// the mqtt source's do.
type tlsPlugin struct {
	CAFile   string `yaml:"ca_file" file:"ca"`
	CertFile string `yaml:"cert_file" file:"cert"`
	KeyFile  string `yaml:"key_file" file:"key"`
	Template string `yaml:"template" file:"read"`
	Input    string `yaml:"input" file:"read,stdin"`
	Later    string `yaml:"later" file:"read,later"`
	Out      string `yaml:"out" file:"write"`
	Listen   string `yaml:"listen" listen:"true"`
}

func fileOptions() config.Options {
	o := testOptions()
	o.SkipFiles = false
	prev := o.SinkConfig
	o.SinkConfig = func(typ string) (any, bool) {
		if typ == "tls" {
			return &tlsPlugin{}, true
		}
		return prev(typ)
	}
	return o
}

// TestFileAndListenChecks: every file a config names must be what the
// gateway needs at start, and every address to listen on must parse; each
// problem names the line, column and field of the value.
func TestFileAndListenChecks(t *testing.T) {
	dir := t.TempDir()
	crt, key := writePEM(t, dir, "a", time.Now().Add(-time.Hour))
	crtB, _ := writePEM(t, dir, "b", time.Now().Add(-time.Hour))
	oldCrt, oldKey := writePEM(t, dir, "old", time.Now().Add(-48*time.Hour))
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	encKey := filepath.Join(dir, "enc.key")
	if err := os.WriteFile(encKey, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600); err != nil {
		t.Fatal(err)
	}
	aFile := filepath.Join(dir, "a-file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, settings string
		dataDir        string
		want           string // "" for no problem
		warn           string
	}{
		{"good pair and ca", "ca_file: " + crt + ", cert_file: " + crt + ", key_file: " + key, "", "", ""},
		{"missing certificate", "cert_file: " + missing + ", key_file: " + key, "", "sinks.s.cert_file: file " + missing + " does not exist", ""},
		{"certificate not PEM", "cert_file: " + garbage + ", key_file: " + key, "", "sinks.s.cert_file: " + garbage + " holds no PEM certificate", ""},
		{"key not PEM", "cert_file: " + crt + ", key_file: " + garbage, "", "sinks.s.key_file: " + garbage + " holds no PEM private key", ""},
		{"encrypted key", "cert_file: " + crt + ", key_file: " + encKey, "", "sinks.s.key_file: the private key in " + encKey + " is encrypted", ""},
		{"key of another certificate", "cert_file: " + crtB + ", key_file: " + key, "", "sinks.s.key_file: the key in " + key + " does not belong to the certificate in " + crtB, ""},
		{"ca not PEM", "ca_file: " + garbage, "", "sinks.s.ca_file: " + garbage + " holds no PEM certificate", ""},
		{"ca is a directory", "ca_file: " + dir, "", "sinks.s.ca_file: " + dir + " is a directory; want a file", ""},
		{"expired certificate warns", "cert_file: " + oldCrt + ", key_file: " + oldKey, "", "", "the certificate in " + oldCrt + " expired on"},
		{"read file missing", "template: " + missing, "", "sinks.s.template: file " + missing + " does not exist", ""},
		{"stdin", "input: '-'", "", "", ""},
		{"not stdin", "input: " + missing, "", "sinks.s.input: file " + missing + " does not exist", ""},
		{"may appear later", "later: " + missing, "", "", "file " + missing + " does not exist yet; the source reads it once it does"},
		{"later but unreadable", "later: " + dir, "", "sinks.s.later: " + dir + " is a directory; want a file", ""},
		{"write into a missing dir that can be created", "out: " + filepath.Join(dir, "new", "out.jsonl"), "", "", ""},
		{"write below a file", "out: " + filepath.Join(aFile, "out.jsonl"), "", "sinks.s.out: file " + filepath.Join(aFile, "out.jsonl") + " cannot be created: " + aFile + " is not a directory", ""},
		{"data dir is a file", "", aFile, "gateway.data_dir: " + aFile + " is not a directory", ""},
		{"data dir below a file", "", filepath.Join(aFile, "data"), "gateway.data_dir: directory " + filepath.Join(aFile, "data") + " cannot be created: " + aFile + " is not a directory", ""},
		{"listen port too large", "listen: 127.0.0.1:99999", "", `sinks.s.listen: port "99999" in "127.0.0.1:99999": want a number from 1 to 65535`, ""},
		{"listen without port", "listen: localhost", "", `sinks.s.listen: want an address host:port such as 127.0.0.1:9464 or :9464, got "localhost"`, ""},
		{"listen named port", "listen: 127.0.0.1:mqtt", "", `sinks.s.listen: port "mqtt" in "127.0.0.1:mqtt": want a number`, ""},
		{"listen bad host", "listen: 'a b:1883'", "", `sinks.s.listen: host "a b" in "a b:1883": want an IP address or a host name`, ""},
		{"listen every interface", "listen: ':1883'", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dd := tc.dataDir
			if dd == "" {
				dd = filepath.Join(dir, "data")
			}
			src := "gateway: {id: g, data_dir: " + dd + "}\nsources: {in: {type: file, path: x}}\nflows: {f: {from: in, to: s}}\nsinks:\n  s: {type: tls"
			if tc.settings != "" {
				src += ", " + tc.settings
			}
			src += "}\n"
			c, err := config.Parse("f.yaml", []byte(src), fileOptions())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no problem", err)
				}
				var warns []string
				for _, w := range c.Warnings {
					warns = append(warns, w.String())
				}
				if got := strings.Join(warns, "\n"); tc.warn != "" && !strings.Contains(got, tc.warn) {
					t.Errorf("warnings %q lack %q", got, tc.warn)
				}
				return
			}
			ps := config.AsProblems(err)
			if len(ps) != 1 {
				t.Fatalf("got %v, want one problem %q", err, tc.want)
			}
			line := 5
			if strings.HasPrefix(tc.want, "gateway.") {
				line = 1
			}
			if ps[0].Pos.Line != line || ps[0].Pos.Column == 0 || !strings.Contains(ps[0].String(), tc.want) {
				t.Errorf("got %q, want line %d with %q", ps[0].String(), line, tc.want)
			}
			// A config for another machine: no file is opened.
			o := fileOptions()
			o.SkipFiles = true
			if _, err := config.Parse("f.yaml", []byte(src), o); err != nil && !strings.Contains(tc.want, "listen") {
				t.Errorf("with SkipFiles: %v", err)
			}
		})
	}
}

// TestShellStyleVariable: ${NAME} where ${env:NAME} was meant is an
// error that spells out the fix, in plain strings and in a secret that is
// nothing else; inside a longer literal secret it may be part of the
// secret, and no part of it reaches the message.
func TestShellStyleVariable(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"plain string", "gateway: {id: g, data_dir: '${DATA}/x'}\n", "f.yaml:1:28: gateway.data_dir: ${DATA} is not expanded: write ${env:DATA} for the environment variable"},
		{"secret", "gateway: {id: g}\nhttp: {admin_token: '${ADMIN_TOKEN}'}\n", "f.yaml:2:21: http.admin_token: ${ADMIN_TOKEN} is not expanded: write ${env:ADMIN_TOKEN} for the environment variable"},
		{"secret without braces", "gateway: {id: g}\nhttp: {admin_token: $ADMIN_TOKEN}\n", "f.yaml:2:21: http.admin_token: $ADMIN_TOKEN is not expanded: write ${env:ADMIN_TOKEN} for the environment variable"},
		{"literal secret", "gateway: {id: g}\nhttp: {admin_token: 'ab${cd}ef'}\n", ""},
		{"literal secret with a dollar", "gateway: {id: g}\nhttp: {admin_token: '$ecret-Pa55'}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.yaml + "sources: {in: {type: file, path: x}}\nflows: {f: {from: in, to: s}}\nsinks: {s: {type: recorder}}\n"
			c, err := config.Parse("f.yaml", []byte(src), testOptions())
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range c.Warnings {
					if strings.Contains(w.String(), "cd") {
						t.Errorf("warning quotes the secret: %s", w)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
