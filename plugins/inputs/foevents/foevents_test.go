package foevents

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// stateEmitter commits the states to a real queue file and keeps the
// messages (the router's part is tested with the gateway).
type stateEmitter struct {
	q     *queue.Store
	mu    sync.Mutex
	msgs  []pipeline.Message
	fail  error
	calls int
}

func (e *stateEmitter) Emit(ctx context.Context, msgs ...pipeline.Message) error {
	return e.EmitWithState(ctx, nil, msgs...)
}

func (e *stateEmitter) EmitWithState(ctx context.Context, states []pipeline.StateWrite, msgs ...pipeline.Message) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.fail != nil {
		return e.fail
	}
	ws := make([]queue.StateWrite, len(states))
	for i, s := range states {
		ws[i] = queue.StateWrite{Scope: "source.ev", Name: s.Name, Value: s.Value, Delete: s.Delete}
	}
	if len(ws) > 0 {
		if err := e.q.PutState(ctx, ws...); err != nil {
			return err
		}
	}
	e.msgs = append(e.msgs, msgs...)
	return nil
}

func (e *stateEmitter) taken() []pipeline.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]pipeline.Message(nil), e.msgs...)
}

func openQueue(t *testing.T) *queue.Store {
	t.Helper()
	q, err := queue.Open(filepath.Join(t.TempDir(), "queue.db"), queue.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func blobNames(t *testing.T, cl *azblob.Client, container string) []string {
	t.Helper()
	var names []string
	p := cl.NewListBlobsFlatPager(container, nil)
	for p.More() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	return names
}

// Blobs are read once: their events (and a blob that does not decode, as
// one undecodable message with its bytes) are committed with their names;
// delete removes them, keep leaves them and reads them no more.
func TestBlobEndpoint(t *testing.T) {
	azurite := foemutest.StartAzurite(t)
	cred, _ := azblob.NewSharedKeyCredential(foemu.AzuriteAccount, foemu.AzuriteKey)
	cl, err := azblob.NewClientWithSharedKeyCredential(azurite+"/", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, mode := range []string{"delete", "keep"} {
		t.Run(mode, func(t *testing.T) {
			container := "ev-" + mode
			if _, err := cl.CreateContainer(ctx, container, nil); err != nil {
				t.Fatal(err)
			}
			for name, body := range map[string]string{
				"a/1.json": `{"BusinessEventId":"X","EventId":"1","EventTime":"/Date(1764240678000)/"}`,
				"a/2.json": `[{"BusinessEventId":"X","EventId":"2"},{"BusinessEventId":"Y","EventId":"3"}]`,
				"a/3.json": `not json`,
				"b/4.json": `{"BusinessEventId":"X","EventId":"4"}`, // outside the prefix
			} {
				if _, err := cl.UploadBuffer(ctx, container, name, []byte(body), nil); err != nil {
					t.Fatal(err)
				}
			}
			q := openQueue(t)
			s, err := New(&Config{Blob: &BlobEndpoint{URL: azurite, Account: foemu.AzuriteAccount, Key: logging.NewSecret(foemu.AzuriteKey),
				Container: container, Prefix: "a/", AfterRead: mode, PollInterval: time.Second, MaxPerPoll: 10}},
				pipeline.Env{Name: "ev", Log: zerolog.Nop(), State: q.Scope("source.ev"), Now: time.Now})
			if err != nil {
				t.Fatal(err)
			}
			em := &stateEmitter{q: q}
			for range 3 {
				if err := s.pollBlobs(ctx, em); err != nil {
					t.Fatal(err)
				}
			}
			msgs := em.taken()
			if len(msgs) != 4 {
				t.Fatalf("%d messages, want 4 (three events and one undecodable blob)", len(msgs))
			}
			bad := 0
			for _, m := range msgs {
				if m.DecodeErr != nil {
					bad++
					if string(m.Raw) != "not json" || m.Meta["blob"] != "a/3.json" {
						t.Errorf("undecodable message %q %v", m.Raw, m.Meta)
					}
				}
			}
			if bad != 1 {
				t.Errorf("%d undecodable messages", bad)
			}
			names := blobNames(t, cl, container)
			state, _ := q.ListState("source.ev")
			switch mode {
			case "delete":
				if len(names) != 1 || names[0] != "b/4.json" {
					t.Errorf("blobs left: %v", names)
				}
				if len(state) != 0 {
					t.Errorf("names kept after the delete: %v", state)
				}
			case "keep":
				if len(names) != 4 || len(state) != 3 {
					t.Errorf("blobs %v, names %v", names, state)
				}
				// A blob that goes away is forgotten.
				if _, err := cl.DeleteBlob(ctx, container, "a/1.json", nil); err != nil {
					t.Fatal(err)
				}
				if err := s.pollBlobs(ctx, em); err != nil {
					t.Fatal(err)
				}
				if state, _ := q.ListState("source.ev"); len(state) != 2 {
					t.Errorf("names after a blob went: %v", state)
				}
			}
			if st := s.Status()["endpoints"].([]map[string]any)[0]; st["events_read"] != int64(3) {
				t.Errorf("status %v", st)
			}
		})
	}
}

// A commit that fails leaves the blob unread (read again at the next
// poll); a storage account that refuses or is gone is an error with its
// status, never the key.
func TestBlobEndpointFailures(t *testing.T) {
	azurite := foemutest.StartAzurite(t)
	cred, _ := azblob.NewSharedKeyCredential(foemu.AzuriteAccount, foemu.AzuriteKey)
	cl, _ := azblob.NewClientWithSharedKeyCredential(azurite+"/", cred, nil)
	ctx := context.Background()
	if _, err := cl.CreateContainer(ctx, "evf", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UploadBuffer(ctx, "evf", "1.json", []byte(`{"EventId":"1"}`), nil); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t)
	mk := func(url, key string) *Source {
		s, err := New(&Config{Blob: &BlobEndpoint{URL: url, Account: foemu.AzuriteAccount, Key: logging.NewSecret(key),
			Container: "evf", AfterRead: "delete", PollInterval: time.Second, MaxPerPoll: 10}},
			pipeline.Env{Name: "ev", Log: zerolog.Nop(), State: q.Scope("source.ev"), Now: time.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := mk(azurite, foemu.AzuriteKey)
	em := &stateEmitter{q: q, fail: errors.New("queue full")}
	if err := s.pollBlobs(ctx, em); err == nil {
		t.Fatal("a failed commit was not an error")
	}
	if n := blobNames(t, cl, "evf"); len(n) != 1 {
		t.Fatalf("blob deleted after a failed commit: %v", n)
	}
	em.fail = nil
	if err := s.pollBlobs(ctx, em); err != nil || len(em.taken()) != 1 {
		t.Fatalf("second poll: %v, %d messages", err, len(em.taken()))
	}
	wrongKey := "AAAA" + foemu.AzuriteKey[4:]
	for _, bad := range []*Source{mk(azurite, wrongKey), mk("http://127.0.0.1:1/"+foemu.AzuriteAccount, foemu.AzuriteKey)} {
		err := bad.pollBlobs(ctx, em)
		if err == nil {
			t.Fatal("no error")
		}
		if strings.Contains(err.Error(), wrongKey) || strings.Contains(err.Error(), foemu.AzuriteKey) {
			t.Fatalf("the key in the error: %v", err)
		}
		bad.blobStat.fail(err, time.Now())
		if st := bad.Status()["endpoints"].([]map[string]any)[0]; st["last_error"] == nil {
			t.Errorf("status without last_error: %v", st)
		}
	}
}

// The HTTPS route: 401 without the token, 200 once emitted, 503 when the
// queue refuses or the source is not running.
func TestHTTPSEndpoint(t *testing.T) {
	q := openQueue(t)
	s, err := New(&Config{HTTPS: &HTTPSEndpoint{Token: logging.NewSecret("tok"), Header: "Authorization"}},
		pipeline.Env{Name: "ev", Log: zerolog.Nop(), State: q.Scope("source.ev"), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Routes()["ev"]
	post := func(tok, body string) int {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/events/ev", strings.NewReader(body))
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if c := post("tok", `{"EventId":"1"}`); c != http.StatusServiceUnavailable {
		t.Errorf("not running: %d", c)
	}
	em := &stateEmitter{q: q}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx, em); close(done) }()
	defer func() { cancel(); <-done }()
	foemutest.WaitFor(t, time.Second, "the source to run", func() bool { return post("tok", `{"EventId":"0"}`) == http.StatusOK })
	for tok, want := range map[string]int{"": 401, "tok2": 401, "to": 401, "tok": 200} {
		if c := post(tok, `{"EventId":"1"}`); c != want {
			t.Errorf("token %q: %d, want %d", tok, c, want)
		}
	}
	if c := post("tok", `[{"EventId":"2"},{"EventId":"3"}]`); c != 200 {
		t.Errorf("array: %d", c)
	}
	if c := post("tok", `{oops`); c != 200 { // dead-lettered by the router, with its bytes
		t.Errorf("undecodable: %d", c)
	}
	em.mu.Lock()
	em.fail = errors.New("queue full")
	em.mu.Unlock()
	if c := post("tok", `{"EventId":"4"}`); c != http.StatusServiceUnavailable {
		t.Errorf("queue refused: %d", c)
	}
	msgs := em.taken()
	if len(msgs) != 5 || msgs[4].DecodeErr == nil {
		t.Fatalf("%d messages: %+v", len(msgs), msgs)
	}
	if st := s.Status()["endpoints"].([]map[string]any)[0]; st["events_read"] != int64(4) || st["errors"] != int64(4) {
		t.Errorf("status %v", st)
	}
}

// The fo-emulator's builtin blob store serves the event blobs to the
// source with a container SAS: listed, read, deleted.
func TestBuiltinEmulatorBlobStore(t *testing.T) {
	em := foemutest.Start(t, func(c *foemu.Config) {
		c.Events = foemu.EventsConfig{Endpoints: []foemu.EventEndpoint{{Name: "blob", Type: foemu.EndpointBlob, Container: "businessevents"}}}
	})
	svc, tok, err := em.ContainerSAS("businessevents", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q := openQueue(t)
	s, err := New(&Config{Blob: &BlobEndpoint{URL: svc, SAS: logging.NewSecret(tok), Container: "businessevents", AfterRead: "delete",
		PollInterval: time.Second, MaxPerPoll: 10, CAFile: em.CAFile()}},
		pipeline.Env{Name: "ev", Log: zerolog.Nop(), State: q.Scope("source.ev"), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	// Release an order: two events (released, status changed).
	tokFO := foemutest.Token(t, em)
	req, _ := http.NewRequest(http.MethodPatch, em.BaseURL()+"/data/ProductionOrderHeaders(dataAreaId='USMF',ProductionOrderNumber='P000104')",
		strings.NewReader(`{"ProductionOrderStatus":"Released"}`))
	req.Header.Set("Authorization", "Bearer "+tokFO)
	req.Header.Set("Content-Type", "application/json")
	resp, err := em.HTTPClient().Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("release: %v %v", err, resp)
	}
	_ = resp.Body.Close()
	em2 := &stateEmitter{q: q}
	foemutest.WaitFor(t, 10*time.Second, "two events read from the builtin store", func() bool {
		if err := s.pollBlobs(context.Background(), em2); err != nil {
			t.Fatal(err)
		}
		return len(em2.taken()) == 2
	})
	for _, m := range em2.taken() {
		if p, _ := m.Payload.(map[string]any); p["ProductionOrderNumber"] != "P000104" {
			t.Errorf("event %v", m.Payload)
		}
	}
	if err := s.pollBlobs(context.Background(), em2); err != nil || len(em2.taken()) != 2 {
		t.Fatalf("read again: %v %d", err, len(em2.taken()))
	}
	if left, _ := q.ListState("source.ev"); len(left) != 0 {
		t.Errorf("names left after the deletes: %v", left)
	}
	// A blob SAS (as DMF gets) cannot list; a wrong signature is refused.
	bad, _ := New(&Config{Blob: &BlobEndpoint{URL: svc, SAS: logging.NewSecret(strings.Replace(tok, "sig=", "sig=A", 1)), Container: "businessevents",
		AfterRead: "delete", PollInterval: time.Second, MaxPerPoll: 10, CAFile: em.CAFile()}},
		pipeline.Env{Name: "ev", Log: zerolog.Nop(), State: q.Scope("source.ev"), Now: time.Now})
	if err := bad.pollBlobs(context.Background(), em2); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong signature: %v", err)
	}
}

func TestCheckOnline(t *testing.T) {
	azurite := foemutest.StartAzurite(t)
	cred, _ := azblob.NewSharedKeyCredential(foemu.AzuriteAccount, foemu.AzuriteKey)
	cl, _ := azblob.NewClientWithSharedKeyCredential(azurite+"/", cred, nil)
	if _, err := cl.CreateContainer(context.Background(), "online", nil); err != nil {
		t.Fatal(err)
	}
	c := &Config{Blob: &BlobEndpoint{URL: azurite, Account: foemu.AzuriteAccount, Key: logging.NewSecret(foemu.AzuriteKey), Container: "online",
		AfterRead: "delete", PollInterval: time.Second, MaxPerPoll: 1}}
	if _, err := c.CheckOnline(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Blob.Container = "missing"
	if _, err := c.CheckOnline(context.Background()); err == nil || !strings.Contains(err.Error(), "ContainerNotFound") {
		t.Fatalf("a missing container: %v", err)
	}
}
