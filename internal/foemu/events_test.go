package foemu_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// eventSink is an HTTPS endpoint that records the events it is sent.
type eventSink struct {
	mu     sync.Mutex
	events []map[string]any
	auth   []string
	refuse bool
}

func (s *eventSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	if s.refuse {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	s.events = append(s.events, m)
}

func (s *eventSink) byID(id string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, e := range s.events {
		if e["BusinessEventId"] == id {
			out = append(out, e)
		}
	}
	return out
}

// The message-processed event carries the message's exact content, type,
// company, state and infolog; releasing an order raises its released and
// status-changed events; both reach the HTTPS endpoint with the secret and
// Azurite as one blob per event.
func TestBusinessEventsToHTTPSAndBlob(t *testing.T) {
	sink := &eventSink{}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	azurite := foemutest.StartAzurite(t)
	a := newAPI(t, func(c *foemu.Config) {
		c.Events = foemu.EventsConfig{Endpoints: []foemu.EventEndpoint{
			{Name: "hook", Type: foemu.EndpointHTTPS, URL: srv.URL, Secret: "s3cret"},
			{Name: "blob", Type: foemu.EndpointBlob, Container: "events", Blob: &foemu.BlobConfig{Mode: foemu.BlobAzurite, Endpoint: azurite}},
		}}
	})
	content := `{"ProductionOrderNumber":"P000104","StartedQuantity":5}`
	if r := a.send("usmf", "ProdProductionOrderStart", content); r.status != http.StatusOK {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	foemutest.WaitFor(t, 5*time.Second, "the message processed event", func() bool {
		return len(sink.byID(foemu.EventMessageProcessed)) == 1
	})
	ev := sink.byID(foemu.EventMessageProcessed)[0]
	if ev["MessageContent"] != content || ev["MessageType"] != "ProdProductionOrderStart" || ev["LegalEntity"] != "USMF" ||
		ev["MessageState"] != "Failed" || !strings.Contains(ev["MessageInfolog"].(string), "Release the production order first") {
		t.Fatalf("event = %v", ev)
	}
	if !strings.HasPrefix(ev["EventTime"].(string), "/Date(") || ev["EventId"] == "" {
		t.Fatalf("event time and id: %v", ev)
	}
	if got := sink.auth[0]; got != "Bearer s3cret" {
		t.Fatalf("Authorization = %q", got)
	}
	// Release the order through OData.
	r := a.do(http.MethodPatch, "/data/ProductionOrderHeaders(dataAreaId='USMF',ProductionOrderNumber='P000104')", `{"ProductionOrderStatus":"Released"}`)
	if r.status/100 != 2 {
		t.Fatalf("release: %d %s", r.status, r.body)
	}
	foemutest.WaitFor(t, 5*time.Second, "the released event", func() bool {
		return len(sink.byID(foemu.EventOrderReleased)) == 1 && len(sink.byID(foemu.EventOrderStatusChanged)) == 1
	})
	rel := sink.byID(foemu.EventOrderReleased)[0]
	if rel["ProductionOrderNumber"] != "P000104" || rel["ProductionOrderStatus"] != "Released" || rel["PreviousProductionOrderStatus"] != "Created" {
		t.Fatalf("released event = %v", rel)
	}
	// The same three events are blobs in Azurite.
	cred, _ := azblob.NewSharedKeyCredential(foemu.AzuriteAccount, foemu.AzuriteKey)
	cl, err := azblob.NewClientWithSharedKeyCredential(azurite+"/", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	foemutest.WaitFor(t, 5*time.Second, "three event blobs", func() bool {
		names = nil
		p := cl.NewListBlobsFlatPager("events", nil)
		for p.More() {
			page, err := p.NextPage(context.Background())
			if err != nil {
				return false
			}
			for _, b := range page.Segment.BlobItems {
				names = append(names, *b.Name)
			}
		}
		return len(names) == 3
	})
	for _, n := range names {
		if !strings.HasSuffix(n, ".json") {
			t.Errorf("blob name %s", n)
		}
	}
	evs := a.em.Events()
	if len(evs) != 3 {
		t.Fatalf("emulator recorded %d events", len(evs))
	}
	for _, e := range evs {
		if e.Deliveries["hook"].State != "delivered" || e.Deliveries["blob"].State != "delivered" {
			t.Errorf("event %s deliveries %+v %+v", e.BusinessEventID, e.Deliveries["hook"], e.Deliveries["blob"])
		}
	}
}

// Loss drops events before any endpoint; a refusing endpoint is retried
// and then recorded as failed.
func TestBusinessEventsLossAndRefusal(t *testing.T) {
	sink := &eventSink{refuse: true}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	a := newAPI(t, func(c *foemu.Config) {
		c.Events = foemu.EventsConfig{Attempts: 2, RetryDelay: foemu.Duration(10 * time.Millisecond),
			Endpoints: []foemu.EventEndpoint{{Name: "hook", Type: foemu.EndpointHTTPS, URL: srv.URL}}}
	})
	a.send("USMF", "ProdProductionOrderStart", `{"ProductionOrderNumber":"P000101"}`)
	foemutest.WaitFor(t, 5*time.Second, "the delivery to fail", func() bool {
		evs := a.em.Events()
		return len(evs) > 0 && evs[0].Deliveries["hook"].State == "failed"
	})
	if ev := a.em.Events()[0]; ev.Deliveries["hook"].Attempts != 2 {
		t.Fatalf("attempts = %d", ev.Deliveries["hook"].Attempts)
	}
	cfg := a.em.EventsConfig()
	cfg.Loss = 1
	cfg.Endpoints[0].Secret = ""
	if err := a.em.SetEventsConfig(cfg); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	sink.refuse = false
	sink.mu.Unlock()
	a.send("USMF", "ProdProductionOrderStart", `{"ProductionOrderNumber":"P000102"}`)
	foemutest.WaitFor(t, 5*time.Second, "a lost event", func() bool {
		evs := a.em.Events()
		return len(evs) >= 2 && evs[len(evs)-1].Lost
	})
	time.Sleep(100 * time.Millisecond)
	if n := len(sink.byID(foemu.EventMessageProcessed)); n != 0 {
		t.Fatalf("a lost event reached the endpoint %d times", n)
	}
}
