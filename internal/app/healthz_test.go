package app

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/queue"
)

// TestHealthzDoesNotWrite: /healthz is unauthenticated and polled, so it
// must not write (and fsync) the queue on every request; it still answers
// 503 once the queue is closed.
func TestHealthzDoesNotWrite(t *testing.T) {
	s, err := queue.Open(filepath.Join(t.TempDir(), "queue.db"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	a := &App{store: s}
	for range 20 {
		rec := httptest.NewRecorder()
		a.healthz(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ok"`) {
			t.Fatalf("/healthz = %d %s", rec.Code, rec.Body.String())
		}
	}
	if _, found, err := s.GetState("gateway", "healthz"); err != nil || found {
		t.Errorf("/healthz wrote to the queue (state gateway/healthz found=%v, err=%v)", found, err)
	}
	if st, err := s.ListState("gateway"); err != nil || len(st) != 0 {
		t.Errorf("/healthz left state %v (%v)", st, err)
	}
	_ = s.Close()
	rec := httptest.NewRecorder()
	a.healthz(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/healthz on a closed queue = %d %s, want 503", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	(&App{}).healthz(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/healthz without a queue = %d, want 503", rec.Code)
	}
}
