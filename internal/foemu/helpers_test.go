package foemu_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// api calls the emulator as an authenticated client.
type api struct {
	t     *testing.T
	em    *foemu.Emulator
	token string
	hc    *http.Client
}

func newAPI(t *testing.T, opts ...foemutest.Option) *api {
	t.Helper()
	em := foemutest.Start(t, opts...)
	return &api{t: t, em: em, token: foemutest.Token(t, em), hc: em.HTTPClient()}
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON (%v): %s", err, r.body)
	}
	return m
}

// innerMessage returns error.innererror.message of an F&O error body and
// checks the shape (empty code, generic message).
func (r reply) innerMessage(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	e, _ := m["error"].(map[string]any)
	if e == nil {
		t.Fatalf("no error object in %s", r.body)
	}
	if code, ok := e["code"].(string); !ok || code != "" {
		t.Errorf("error.code = %v, want empty string", e["code"])
	}
	if msg := e["message"]; msg != "An error has occurred." {
		t.Errorf("error.message = %v, want %q", msg, "An error has occurred.")
	}
	inner, _ := e["innererror"].(map[string]any)
	if inner == nil {
		t.Fatalf("no innererror in %s", r.body)
	}
	s, _ := inner["message"].(string)
	return s
}

// do sends a request; path is relative to the base URL. Header pairs
// follow the body.
func (a *api) do(method, path, body string, hdr ...string) reply {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.em.BaseURL()+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// action calls a DMF action and returns the value of a 200 answer.
func (a *api) action(name string, params map[string]any) (any, reply) {
	a.t.Helper()
	b, _ := json.Marshal(params)
	r := a.do(http.MethodPost, "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."+name, string(b))
	if r.status != http.StatusOK {
		return nil, r
	}
	return r.json(a.t)["value"], r
}

func values(t *testing.T, r reply) []map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	raw, _ := r.json(t)["value"].([]any)
	out := make([]map[string]any, len(raw))
	for i, v := range raw {
		out[i], _ = v.(map[string]any)
	}
	return out
}
