package foemutest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// SamePreview fails the test unless req, a request the emulator served,
// is the request p previews: the same method, path and body byte for
// byte, and every previewed header with the value sent (the access token
// aside, which the preview leaves out and the request carries).
func SamePreview(t testing.TB, what string, p pipeline.RequestPreview, req Request) {
	t.Helper()
	if p.Method != req.Method || p.Path != req.Path {
		t.Errorf("%s: previewed %s %s, sent %s %s", what, p.Method, p.Path, req.Method, req.Path)
	}
	if !bytes.Equal(p.Body, req.Body) {
		t.Errorf("%s: previewed body\n%s\nsent body\n%s", what, p.Body, req.Body)
	}
	for k, v := range p.Header {
		got := req.Header.Get(k)
		if k == "Authorization" {
			if !strings.HasPrefix(got, "Bearer ") || strings.Contains(v, got[len("Bearer "):]) {
				t.Errorf("%s: Authorization previewed %q, sent a bearer token %v", what, v, strings.HasPrefix(got, "Bearer "))
			}
			continue
		}
		if got != v {
			t.Errorf("%s: header %s previewed %q, sent %q", what, k, v, got)
		}
	}
}
