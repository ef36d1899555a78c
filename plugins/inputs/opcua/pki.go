package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PKI is a source's certificate store, the folder layout OPC UA tools
// share:
//
//	pki/own/cert.der          the gateway's application instance certificate
//	pki/own/private/key.pem   its RSA key (PKCS#1)
//	pki/trusted/*.der         server certificates plant IT trusts
//	pki/rejected/*.der        server certificates seen and not trusted
//
// The own certificate is generated once, on first use, and never
// regenerated while it is there: a server that trusted the gateway keeps
// trusting it across restarts.
type PKI struct {
	Dir string
}

// Own, Trusted and Rejected are the store's folders.
func (p PKI) Own() string      { return filepath.Join(p.Dir, "own") }
func (p PKI) Trusted() string  { return filepath.Join(p.Dir, "trusted") }
func (p PKI) Rejected() string { return filepath.Join(p.Dir, "rejected") }

func (p PKI) certPath() string { return filepath.Join(p.Own(), "cert.der") }
func (p PKI) keyPath() string  { return filepath.Join(p.Own(), "private", "key.pem") }

// OwnCertificate returns the application instance certificate and key,
// generating them with appURI the first time.
func (p PKI) OwnCertificate(appURI string) ([]byte, *rsa.PrivateKey, *x509.Certificate, error) {
	for _, d := range []string{p.Own(), filepath.Join(p.Own(), "private"), p.Trusted(), p.Rejected()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, nil, err
		}
	}
	der, err := os.ReadFile(p.certPath())
	if err == nil {
		keyPEM, err := os.ReadFile(p.keyPath())
		if err != nil {
			return nil, nil, nil, fmt.Errorf("application certificate %s has no key: %w", p.certPath(), err)
		}
		blk, _ := pem.Decode(keyPEM)
		if blk == nil {
			return nil, nil, nil, fmt.Errorf("%s: not PEM", p.keyPath())
		}
		key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", p.keyPath(), err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", p.certPath(), err)
		}
		return der, key, cert, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, err
	}
	der, key, err := GenerateCertificate(appURI, "plantgate", 5*365*24*time.Hour)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// The key first: a certificate without its key is never left behind.
	if err := writeFileSync(p.keyPath(), keyPEM, 0o600); err != nil {
		return nil, nil, nil, err
	}
	if err := writeFileSync(p.certPath(), der, 0o644); err != nil {
		return nil, nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return der, key, cert, nil
}

// GenerateCertificate makes a self-signed RSA-2048 application instance
// certificate with appURI as its URI SAN (OPC UA Part 6, 6.2.2).
func GenerateCertificate(appURI, name string, valid time.Duration) ([]byte, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(appURI)
	if err != nil {
		return nil, nil, fmt.Errorf("application uri %q: %w", appURI, err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"plantgate"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(valid),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageContentCommitment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if host != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return der, key, err
}

// Fingerprint is the SHA-256 of a certificate, hex with colons.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

func parseFingerprint(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(s), ":", ""), " ", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q: want the certificate's SHA-256 fingerprint, 64 hex digits (colons allowed)", s)
	}
	return b, nil
}

// UntrustedError is a server certificate the gateway does not trust.
type UntrustedError struct {
	Subject, Fingerprint, Reason string
	// FiledAs is where the certificate was filed for plant IT to trust.
	FiledAs string
}

func (e *UntrustedError) Error() string {
	s := fmt.Sprintf("server certificate %q (SHA-256 %s) %s", e.Subject, e.Fingerprint, e.Reason)
	if e.FiledAs != "" {
		s += "; filed as " + e.FiledAs + "; to trust it: plantgate opcua trust (-c CONFIG --source NAME | --pki DIR) " + filepath.Base(e.FiledAs)
	}
	return s
}

// CheckServer decides whether the server certificate der may be used: it
// must be within its validity, and either match pin (when set) or be in the
// trusted folder. An unknown certificate is filed under rejected.
func (p PKI) CheckServer(der []byte, pin string, now time.Time) (*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, errors.New("the server sent no certificate for a secured endpoint")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("server certificate does not parse: %w", err)
	}
	fp := Fingerprint(der)
	ue := &UntrustedError{Subject: cert.Subject.String(), Fingerprint: fp}
	if now.After(cert.NotAfter) {
		ue.Reason = "expired on " + cert.NotAfter.UTC().Format(time.DateOnly)
		return cert, ue
	}
	if now.Before(cert.NotBefore) {
		ue.Reason = "is not valid before " + cert.NotBefore.UTC().Format(time.RFC3339)
		return cert, ue
	}
	if pin != "" {
		want, err := parseFingerprint(pin)
		if err != nil {
			return cert, err
		}
		sum := sha256.Sum256(der)
		if !bytes.Equal(sum[:], want) {
			ue.Reason = "does not match server_fingerprint " + pin
			return cert, ue
		}
		return cert, nil
	}
	entries, err := os.ReadDir(p.Trusted())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return cert, err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(p.Trusted(), e.Name()))
		if err != nil {
			continue
		}
		if blk, _ := pem.Decode(b); blk != nil {
			b = blk.Bytes
		}
		if bytes.Equal(b, der) {
			return cert, nil
		}
	}
	ue.Reason = "is not in " + p.Trusted()
	name := filepath.Join(p.Rejected(), certFileName(cert, der))
	if err := os.MkdirAll(p.Rejected(), 0o700); err == nil {
		if _, err := os.Stat(name); err != nil {
			if err := writeFileSync(name, der, 0o644); err == nil {
				ue.FiledAs = name
			}
		} else {
			ue.FiledAs = name
		}
	}
	return cert, ue
}

func certFileName(cert *x509.Certificate, der []byte) string {
	cn := cert.Subject.CommonName
	if cn == "" {
		cn = "server"
	}
	cn = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, cn)
	sum := sha256.Sum256(der)
	return cn + "_" + hex.EncodeToString(sum[:8]) + ".der"
}

// Trust moves a rejected certificate to trusted. which is the file name
// under rejected, or a fingerprint (a prefix of at least 8 hex digits
// will do when it is unique).
func (p PKI) Trust(which string) (string, error) {
	entries, err := os.ReadDir(p.Rejected())
	if err != nil {
		return "", fmt.Errorf("no rejected certificates in %s: %w", p.Rejected(), err)
	}
	want := strings.ToUpper(strings.ReplaceAll(which, ":", ""))
	var match []string
	for _, e := range entries {
		if e.Name() == which || e.Name() == filepath.Base(which) {
			match = []string{e.Name()}
			break
		}
		b, err := os.ReadFile(filepath.Join(p.Rejected(), e.Name()))
		if err != nil {
			continue
		}
		if len(want) >= 8 && strings.HasPrefix(strings.ReplaceAll(Fingerprint(b), ":", ""), want) {
			match = append(match, e.Name())
		}
	}
	switch len(match) {
	case 0:
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return "", fmt.Errorf("no rejected certificate matches %q (rejected: %s)", which, strings.Join(names, ", "))
	case 1:
	default:
		return "", fmt.Errorf("%q matches %d certificates: %s", which, len(match), strings.Join(match, ", "))
	}
	if err := os.MkdirAll(p.Trusted(), 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(p.Trusted(), match[0])
	if err := os.Rename(filepath.Join(p.Rejected(), match[0]), dst); err != nil {
		return "", err
	}
	// The move must survive a power cut: without the directories synced
	// the certificate can be back under rejected after one, and the
	// source refuses the server again.
	for _, d := range []string{p.Trusted(), p.Rejected(), filepath.Dir(p.Trusted())} {
		if err := syncDir(d); err != nil {
			return "", fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return dst, nil
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}

func writeFileSync(name string, b []byte, mode os.FileMode) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(filepath.Dir(name))
}
