// Package certexpiry exports when the certificates plantgate is configured
// with expire, as one gauge family shared by every component:
//
//	plantgate_certificate_expiry_timestamp_seconds{component, name, use}
//
// component is source, sink, fo or http; name its name in the config (not
// "instance", which Prometheus sets to the scraped target);
// use what the file is for: ca (the certificates that sign a peer's),
// client_certificate, server_certificate or application_certificate. The
// value is the earliest NotAfter (Unix seconds) among the certificates of
// that file, so `(... - time()) < 14 * 86400` is an alert on the first to
// expire, whichever it is. Components record their files when they are
// built (and again when they reload them); a file that cannot be read or
// holds no certificate is the component's error to report, not recorded.
package certexpiry

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// Name is the family's name.
const Name = "plantgate_certificate_expiry_timestamp_seconds"

// Uses of a certificate file (the use label).
const (
	UseCA          = "ca"
	UseClient      = "client_certificate"
	UseServer      = "server_certificate"
	UseApplication = "application_certificate"
)

// ErrNoCertificate is returned for a file that holds no PEM or DER
// certificate.
var ErrNoCertificate = errors.New("no certificate")

// Gauge is the family on one registry.
type Gauge struct{ v *prometheus.GaugeVec }

func newVec() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: Name,
		Help: "Earliest expiry (NotAfter, Unix seconds) of the certificates in each configured certificate file, by component, name and use (ca, client_certificate, server_certificate, application_certificate).",
	}, []string{"component", "name", "use"})
}

// For returns the family registered on reg, registering it on first use;
// every component of a gateway gets the same one. A nil reg gives an
// unregistered family.
func For(reg prometheus.Registerer) *Gauge {
	return &Gauge{pipeline.Register(reg, newVec())}
}

// Set records the earliest expiry of certs.
func (g *Gauge) Set(component, name, use string, certs ...*x509.Certificate) {
	var first time.Time
	for _, c := range certs {
		if c != nil && (first.IsZero() || c.NotAfter.Before(first)) {
			first = c.NotAfter
		}
	}
	if first.IsZero() {
		return
	}
	g.v.WithLabelValues(component, name, use).Set(float64(first.Unix()))
}

// SetPEM records the earliest expiry of the certificates in data (PEM
// CERTIFICATE blocks, or one DER certificate).
func (g *Gauge) SetPEM(component, name, use string, data []byte) error {
	certs, err := Parse(data)
	if err != nil {
		return err
	}
	g.Set(component, name, use, certs...)
	return nil
}

// SetFile records the earliest expiry of the certificates in the file at
// path.
func (g *Gauge) SetFile(component, name, use, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := g.SetPEM(component, name, use, b); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Delete removes a file's sample, for a component that no longer uses it.
func (g *Gauge) Delete(component, name, use string) {
	g.v.DeleteLabelValues(component, name, use)
}

// Parse returns the certificates of PEM data (CERTIFICATE blocks; other
// blocks such as keys are skipped) or of one DER certificate.
func Parse(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		if c, err := x509.ParseCertificate(data); err == nil {
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, ErrNoCertificate
	}
	return certs, nil
}
