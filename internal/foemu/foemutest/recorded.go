package foemutest

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
)

// Request is one request the emulator served, as a client sent it.
type Request struct {
	Method string
	// Path is the path below the base URL, with the query.
	Path   string
	Header http.Header
	Body   []byte
}

// Recorded is an emulator whose every request is recorded on the way in:
// its HTTPS front (the base URL clients use) keeps the method, path,
// headers and body, then hands the request to the emulator unchanged.
type Recorded struct {
	*foemu.Emulator

	mu   sync.Mutex
	reqs []Request
}

// StartRecorded starts an emulator like Start, behind a recording front
// that serves with the emulator's own certificate (so its CAFile works).
func StartRecorded(t testing.TB, opts ...Option) *Recorded {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	dir := t.TempDir()
	r := &Recorded{}
	opts = append(opts, func(c *foemu.Config) {
		c.DataDir = dir
		c.PublicURL = "https://" + ln.Addr().String()
	})
	r.Emulator = Start(t, opts...)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		_ = ln.Close()
		t.Fatalf("load the emulator's certificate: %v", err)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		_ = srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return r
}

// ServeHTTP records req and passes it to the emulator.
func (r *Recorded) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	_ = req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.reqs = append(r.reqs, Request{Method: req.Method, Path: req.URL.RequestURI(), Header: req.Header.Clone(), Body: body})
	r.mu.Unlock()
	r.Emulator.ServeHTTP(w, req)
}

// Requests returns the requests served so far whose path starts with
// prefix, in order.
func (r *Recorded) Requests(prefix string) []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Request
	for _, q := range r.reqs {
		if strings.HasPrefix(q.Path, prefix) {
			out = append(out, q)
		}
	}
	return out
}
