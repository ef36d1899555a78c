package foemu

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Files the emulator keeps in its data directory.
const (
	CAFileName        = "ca.pem"
	caKeyFileName     = "ca-key.pem"
	serverCertName    = "server.pem"
	serverKeyFileName = "server-key.pem"
)

// loadOrCreateTLS returns the server TLS config. With cert and key files
// configured it uses them; otherwise it loads the CA and server certificate
// from the data directory, generating them on first start (or when the
// server certificate expires or misses a host). The CA stays the same
// across restarts so that clients keep trusting it.
func loadOrCreateTLS(dir string, cfg TLSConfig) (*tls.Config, string, *x509.CertPool, error) {
	pool := x509.NewCertPool()
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, "", nil, fmt.Errorf("%w: load certificate: %w", ErrConfig, err)
		}
		for _, der := range cert.Certificate {
			if c, err := x509.ParseCertificate(der); err == nil {
				pool.AddCert(c)
			}
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, "", pool, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, "", nil, fmt.Errorf("create data directory: %w", err)
	}
	caCert, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return nil, "", nil, err
	}
	hosts := append([]string{"127.0.0.1", "::1", "localhost"}, cfg.Hosts...)
	cert, err := loadServerCert(dir, caCert, hosts)
	if err != nil {
		if cert, err = createServerCert(dir, caCert, caKey, hosts); err != nil {
			return nil, "", nil, err
		}
	}
	pool.AddCert(caCert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, filepath.Join(dir, CAFileName), pool, nil
}

func loadOrCreateCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err1 := os.ReadFile(filepath.Join(dir, CAFileName))
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, caKeyFileName))
	if err1 == nil && err2 == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err == nil {
			c, err := x509.ParseCertificate(pair.Certificate[0])
			k, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
			if err == nil && ok && time.Now().Before(c.NotAfter) {
				return c, k, nil
			}
		}
		return nil, nil, fmt.Errorf("%w: %s or %s in the data directory is unusable; delete both to generate a new CA", ErrConfig, CAFileName, caKeyFileName)
	}
	if !errors.Is(err1, os.ErrNotExist) || !errors.Is(err2, os.ErrNotExist) {
		if err1 == nil || err2 == nil {
			return nil, nil, fmt.Errorf("%w: only one of %s and %s exists in the data directory", ErrConfig, CAFileName, caKeyFileName)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "fo-emulator local CA", Organization: []string{"plantgate fo-emulator"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(filepath.Join(dir, caKeyFileName), "EC PRIVATE KEY", mustMarshalEC(key), 0o600); err != nil {
		return nil, nil, err
	}
	if err := writePEM(filepath.Join(dir, CAFileName), "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// loadServerCert loads the server certificate if it was signed by the CA,
// is valid for another day and covers all hosts.
func loadServerCert(dir string, ca *x509.Certificate, hosts []string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, serverCertName), filepath.Join(dir, serverKeyFileName))
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := c.CheckSignatureFrom(ca); err != nil {
		return tls.Certificate{}, err
	}
	if time.Now().Add(24 * time.Hour).After(c.NotAfter) {
		return tls.Certificate{}, errors.New("server certificate expires soon")
	}
	for _, h := range hosts {
		if err := c.VerifyHostname(h); err != nil {
			return tls.Certificate{}, err
		}
	}
	return pair, nil
}

func createServerCert(dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "fo-emulator", Organization: []string{"plantgate fo-emulator"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range slices.Compact(hosts) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(filepath.Join(dir, serverKeyFileName), "EC PRIVATE KEY", mustMarshalEC(key), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(filepath.Join(dir, serverCertName), "CERTIFICATE", der, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(filepath.Join(dir, serverCertName), filepath.Join(dir, serverKeyFileName))
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func mustMarshalEC(k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err) // a freshly generated P-256 key always marshals
	}
	return b
}

// writePEM writes a PEM file atomically.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
