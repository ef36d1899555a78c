package foemu

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
)

// Business events. F&O sends a business event to every endpoint activated
// for it; the emulator does the same for the events a plant gateway needs:
// a MES message's processing result ("Message processor message
// processed") and a production order's status change (released, and any
// other change). Microsoft documents the event names and most payload
// fields but not the exact schema, the blob names of the Azure Blob
// Storage endpoint nor the HTTPS request; the emulator's choices are
// configurable (EventsConfig) and listed in the README.

// Business event ids the emulator emits by default.
const (
	EventMessageProcessed   = "SysMessageProcessorMessageProcessedBusinessEvent"
	EventOrderReleased      = "ProductionOrderReleasedBusinessEvent"
	EventOrderStatusChanged = "ProductionOrderStatusChangedBusinessEvent"
)

// Endpoint types.
const (
	EndpointBlob  = "blob"
	EndpointHTTPS = "https"
)

// EventsConfig configures the business events the emulator emits.
type EventsConfig struct {
	// Endpoints receive every event; none: events are only recorded
	// (GET /_emulator/events).
	Endpoints []EventEndpoint `yaml:"endpoints" json:"endpoints"`
	// Delay is how long after the change an event is delivered.
	Delay Duration `yaml:"delay" json:"delay"`
	// Loss is the fraction (0 to 1) of events lost: recorded as lost and
	// delivered to no endpoint.
	Loss float64 `yaml:"loss" json:"loss"`
	// Attempts per endpoint before an event is given up (default 5), RetryDelay
	// between them (default 1s).
	Attempts   int      `yaml:"attempts" json:"attempts"`
	RetryDelay Duration `yaml:"retry_delay" json:"retry_delay"`
	// MessageProcessedID, ReleasedID and StatusChangedID override the
	// BusinessEventId values.
	MessageProcessedID string `yaml:"message_processed_id" json:"message_processed_id,omitempty"`
	ReleasedID         string `yaml:"released_id" json:"released_id,omitempty"`
	StatusChangedID    string `yaml:"status_changed_id" json:"status_changed_id,omitempty"`
	// Disabled lists BusinessEventIds that are not emitted.
	Disabled []string `yaml:"disabled" json:"disabled,omitempty"`
}

// EventEndpoint is one business event endpoint.
type EventEndpoint struct {
	// Name identifies the endpoint in the event records (default its type
	// and position).
	Name string `yaml:"name" json:"name"`
	// Type is blob (Azure Blob Storage) or https.
	Type string `yaml:"type" json:"type"`
	// Container holds the event blobs (blob; default businessevents).
	Container string `yaml:"container" json:"container,omitempty"`
	// BlobName is the blob name template (blob): {Field} is replaced by the
	// event's field (default {BusinessEventId}/{EventId}.json).
	BlobName string `yaml:"blob_name" json:"blob_name,omitempty"`
	// Blob is the storage account (blob; default the dmf.blob store:
	// Azurite, or the builtin store under /_blob/).
	Blob *BlobConfig `yaml:"blob" json:"blob,omitempty"`
	// URL receives one POST per event, the event as a JSON object (https).
	URL string `yaml:"url" json:"url,omitempty"`
	// Header carries Secret (default Authorization, as "Bearer <secret>";
	// any other header carries the secret as it is).
	Header string `yaml:"header" json:"header,omitempty"`
	Secret string `yaml:"secret" json:"secret,omitempty"` // shown redacted by GET
	// CAFile is the PEM CA of the URL's server certificate (https).
	CAFile string `yaml:"ca_file" json:"ca_file,omitempty"`
}

func (c *EventsConfig) applyDefaults() {
	if c.Attempts == 0 {
		c.Attempts = 5
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = Duration(time.Second)
	}
	if c.MessageProcessedID == "" {
		c.MessageProcessedID = EventMessageProcessed
	}
	if c.ReleasedID == "" {
		c.ReleasedID = EventOrderReleased
	}
	if c.StatusChangedID == "" {
		c.StatusChangedID = EventOrderStatusChanged
	}
	for i := range c.Endpoints {
		ep := &c.Endpoints[i]
		if ep.Name == "" {
			ep.Name = ep.Type + "-" + strconv.Itoa(i+1)
		}
		if ep.Type == EndpointBlob {
			if ep.Container == "" {
				ep.Container = "businessevents"
			}
			if ep.BlobName == "" {
				ep.BlobName = "{BusinessEventId}/{EventId}.json"
			}
		}
		if ep.Type == EndpointHTTPS && ep.Header == "" {
			ep.Header = "Authorization"
		}
	}
}

// validate checks the events config; at is its path in the YAML document.
func (c *EventsConfig) validate(d *yamlDoc, at []string) error {
	if c.Loss < 0 || c.Loss > 1 {
		return d.errorf(append(at, "loss"), "loss must be between 0 and 1")
	}
	if c.Delay < 0 || c.RetryDelay < 0 || c.Attempts < 1 {
		return d.errorf(at, "delay and retry_delay must not be negative and attempts must be at least 1")
	}
	seen := map[string]bool{}
	for i, ep := range c.Endpoints {
		if seen[ep.Name] {
			return d.errorf(append(at, "endpoints", strconv.Itoa(i), "name"), "endpoint %s defined twice", ep.Name)
		}
		seen[ep.Name] = true
		switch ep.Type {
		case EndpointBlob:
			if ep.Blob != nil && ep.Blob.Mode == BlobAzurite && !strings.HasPrefix(ep.Blob.Endpoint, "http") {
				return d.errorf(append(at, "endpoints", strconv.Itoa(i), "blob", "endpoint"), "azurite mode needs an endpoint such as http://127.0.0.1:10000/devstoreaccount1")
			}
		case EndpointHTTPS:
			if !strings.HasPrefix(ep.URL, "https://") && !strings.HasPrefix(ep.URL, "http://") {
				return d.errorf(append(at, "endpoints", strconv.Itoa(i), "url"), "an https endpoint needs a url")
			}
		default:
			return d.errorf(append(at, "endpoints", strconv.Itoa(i), "type"), "endpoint type %q is not blob or https", ep.Type)
		}
	}
	return nil
}

// EventDelivery is the delivery of one event to one endpoint.
type EventDelivery struct {
	State     string    `json:"state"` // pending, delivered, failed
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	At        time.Time `json:"at,omitzero"`
	// Where is the blob name or URL the event went to.
	Where string `json:"where,omitempty"`
}

// EmittedEvent is a business event the emulator raised.
type EmittedEvent struct {
	Seq             int64                     `json:"seq"`
	BusinessEventID string                    `json:"business_event_id"`
	EventID         string                    `json:"event_id"`
	CreatedAt       time.Time                 `json:"created_at"`
	Lost            bool                      `json:"lost,omitempty"`
	Payload         map[string]any            `json:"payload"`
	Deliveries      map[string]*EventDelivery `json:"deliveries"`
}

// eventHub holds the events config, the emitted events and their
// deliveries; its mutex is its own (never held with e.mu).
type eventHub struct {
	mu      sync.Mutex
	cfg     EventsConfig
	events  []*EmittedEvent
	seq     int64
	control int64
	wg      sync.WaitGroup
	blobs   map[string]blobStore // per endpoint with its own account
}

func eventTime(t time.Time) string { return "/Date(" + strconv.FormatInt(t.UnixMilli(), 10) + ")/" }

// messageEventLocked builds the message-processed event of m. The caller
// holds e.mu.
func (e *Emulator) messageEvent(m *Message, cfg EventsConfig) map[string]any {
	result := "Success"
	if m.State == MessageFailed {
		result = "Error"
	}
	return map[string]any{
		"BusinessEventId": cfg.MessageProcessedID, "MajorVersion": 0, "MinorVersion": 0,
		"LegalEntity": m.Company, "MessageQueue": m.Queue, "MessageQueueLabel": "Manufacturing Execution 3rd Party",
		"MessageType": m.Type, "MessageTypeLabel": m.Type, "MessageContent": m.Content,
		"MessageState": string(m.State), "MessageStateLabel": string(m.State),
		"MessageProcessingResult": result, "MessageProcessingResultLabel": result,
		"MessageInfolog": m.Infolog, "MessageSourceCompanyId": m.Company, "MessageDestinationCompanyId": m.Company,
		"MessageId":                      m.ID,
		"MessageProcessorMessagePageUrl": e.baseURL + "/?mi=SysMessageProcessorMessage&MessageId=" + strconv.FormatInt(m.ID, 10),
	}
}

// orderEvent builds a production order event from a header record.
func orderEvent(id string, vals map[string]any, oldStatus string) map[string]any {
	s := func(k string) any {
		if v, ok := vals[k]; ok && v != nil {
			if t, ok := v.(time.Time); ok {
				return t.UTC().Format(time.DateOnly)
			}
			return v
		}
		return ""
	}
	return map[string]any{
		"BusinessEventId": id, "MajorVersion": 0, "MinorVersion": 0,
		"LegalEntity":           strings.ToUpper(fmt.Sprint(vals[dataAreaID])),
		"ProductionOrderNumber": s("ProductionOrderNumber"), "ProductionOrderType": "Standard",
		"ItemNumber": s("ItemNumber"), "ProductionSiteId": s("ProductionSiteId"), "ProductionWarehouseId": s("ProductionWarehouseId"),
		"ScheduledStartDate": s("ScheduledStartDate"), "ScheduledEndDate": s("ScheduledEndDate"),
		"ScheduledQuantity": s("ScheduledQuantity"), "ProductionOrderStatus": s("ProductionOrderStatus"),
		"PreviousProductionOrderStatus": oldStatus,
	}
}

// orderStatuses returns the status of every production order by key.
// The caller holds e.mu.
func (e *Emulator) orderStatuses() map[string]string {
	out := map[string]string{}
	hdrs, ok := e.schema.Entity("ProductionOrderHeaders")
	if !ok {
		return out
	}
	for _, r := range e.store.rows(hdrs) {
		out[orderKey(r.vals)] = fmt.Sprint(r.vals["ProductionOrderStatus"])
	}
	return out
}

func orderKey(vals map[string]any) string {
	return strings.ToLower(fmt.Sprint(vals[dataAreaID]) + "|" + fmt.Sprint(vals["ProductionOrderNumber"]))
}

// orderChangesLocked compares the production orders with the statuses
// seen last and returns an event per change. The caller holds e.mu.
func (e *Emulator) orderChangesLocked(cfg EventsConfig) []map[string]any {
	hdrs, ok := e.schema.Entity("ProductionOrderHeaders")
	if !ok {
		return nil
	}
	if e.orderSeen == nil {
		e.orderSeen = e.orderStatuses()
		return nil
	}
	var out []map[string]any
	for _, r := range e.store.rows(hdrs) {
		k := orderKey(r.vals)
		st := fmt.Sprint(r.vals["ProductionOrderStatus"])
		old, known := e.orderSeen[k]
		if known && old == st {
			continue
		}
		e.orderSeen[k] = st
		out = append(out, orderEvent(cfg.StatusChangedID, r.vals, old))
		if st == "Released" {
			out = append(out, orderEvent(cfg.ReleasedID, r.vals, old))
		}
	}
	return out
}

// EventsConfig returns the business events config in force.
func (e *Emulator) EventsConfig() EventsConfig {
	e.ev.mu.Lock()
	defer e.ev.mu.Unlock()
	c := e.ev.cfg
	c.Endpoints = append([]EventEndpoint(nil), c.Endpoints...)
	for i := range c.Endpoints {
		if c.Endpoints[i].Secret != "" {
			c.Endpoints[i].Secret = "(set)"
		}
		if b := c.Endpoints[i].Blob; b != nil {
			bc := *b
			bc.Key = ""
			c.Endpoints[i].Blob = &bc
		}
	}
	return c
}

// SetEventsConfig replaces the business events config (endpoints, delay,
// loss). Events already raised keep their delivery.
func (e *Emulator) SetEventsConfig(c EventsConfig) error {
	c.applyDefaults()
	if err := c.validate(&yamlDoc{}, []string{"events"}); err != nil {
		return err
	}
	blobs := map[string]blobStore{}
	for _, ep := range c.Endpoints {
		if ep.Type == EndpointBlob && ep.Blob != nil && ep.Blob.Mode == BlobAzurite {
			bc := *ep.Blob
			if bc.Account == "" {
				bc.Account, bc.Key = AzuriteAccount, AzuriteKey
			}
			st, err := newAzuriteStore(bc, e.httpClient())
			if err != nil {
				return err
			}
			blobs[ep.Name] = st
		}
	}
	e.ev.mu.Lock()
	e.ev.cfg, e.ev.blobs = c, blobs
	e.ev.mu.Unlock()
	return nil
}

// Events returns copies of the events raised so far, oldest first.
func (e *Emulator) Events() []EmittedEvent {
	e.ev.mu.Lock()
	defer e.ev.mu.Unlock()
	out := make([]EmittedEvent, len(e.ev.events))
	for i, ev := range e.ev.events {
		out[i] = *ev
		out[i].Deliveries = map[string]*EventDelivery{}
		for k, d := range ev.Deliveries {
			dc := *d
			out[i].Deliveries[k] = &dc
		}
	}
	return out
}

// raise records events and schedules their delivery. The caller must not
// hold e.mu.
func (e *Emulator) raise(payloads []map[string]any) {
	if len(payloads) == 0 {
		return
	}
	e.ev.mu.Lock()
	cfg := e.ev.cfg
	disabled := map[string]bool{}
	for _, d := range cfg.Disabled {
		disabled[d] = true
	}
	var sched []*EmittedEvent
	now := time.Now().UTC()
	for _, p := range payloads {
		id, _ := p["BusinessEventId"].(string)
		if disabled[id] {
			continue
		}
		e.ev.seq++
		e.ev.control++
		ev := &EmittedEvent{Seq: e.ev.seq, BusinessEventID: id, EventID: randomGUID(), CreatedAt: now, Payload: p,
			Deliveries: map[string]*EventDelivery{}}
		p["EventId"] = ev.EventID
		p["EventTime"] = eventTime(now)
		p["EventTimeIso"] = now.Format(time.RFC3339Nano)
		p["ControlNumber"] = e.ev.control
		ev.Lost = cfg.Loss > 0 && rand.Float64() < cfg.Loss
		if !ev.Lost {
			for _, ep := range cfg.Endpoints {
				ev.Deliveries[ep.Name] = &EventDelivery{State: "pending"}
			}
			sched = append(sched, ev)
		}
		e.ev.events = append(e.ev.events, ev)
	}
	e.ev.mu.Unlock()
	for _, ev := range sched {
		e.ev.wg.Add(1)
		go e.deliverEvent(ev, cfg)
	}
}

// deliverEvent sends ev to every endpoint of cfg after cfg.Delay.
func (e *Emulator) deliverEvent(ev *EmittedEvent, cfg EventsConfig) {
	defer e.ev.wg.Done()
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(cfg.Delay.D()):
	}
	e.ev.mu.Lock()
	body, err := json.Marshal(ev.Payload)
	e.ev.mu.Unlock()
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, ep := range cfg.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 1; attempt <= cfg.Attempts; attempt++ {
				where, err := e.sendEvent(ctx, ep, ev, body)
				e.ev.mu.Lock()
				d := ev.Deliveries[ep.Name]
				d.Attempts, d.At, d.Where = attempt, time.Now().UTC(), where
				if err == nil {
					d.State, d.LastError = "delivered", ""
				} else {
					d.LastError = err.Error()
					if attempt == cfg.Attempts {
						d.State = "failed"
					}
				}
				e.ev.mu.Unlock()
				if err == nil {
					return
				}
				e.log.Debug().Str(logging.FieldReason, err.Error()).Str("endpoint", ep.Name).Msg("business event not delivered")
				select {
				case <-ctx.Done():
					return
				case <-time.After(cfg.RetryDelay.D()):
				}
			}
		}()
	}
	wg.Wait()
}

// sendEvent delivers one event to one endpoint and returns where it went.
func (e *Emulator) sendEvent(ctx context.Context, ep EventEndpoint, ev *EmittedEvent, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch ep.Type {
	case EndpointBlob:
		name := ep.BlobName
		for k, v := range ev.Payload {
			name = strings.ReplaceAll(name, "{"+k+"}", fmt.Sprint(v))
		}
		e.ev.mu.Lock()
		st := e.ev.blobs[ep.Name]
		e.ev.mu.Unlock()
		if st == nil {
			st = e.blobs
		}
		if st == nil {
			return name, errors.New("no blob store")
		}
		return name, st.put(ctx, ep.Container, name, body)
	case EndpointHTTPS:
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
		if err != nil {
			return ep.URL, err
		}
		req.Header.Set("Content-Type", "application/json")
		if ep.Secret != "" {
			v := ep.Secret
			if strings.EqualFold(ep.Header, "Authorization") {
				v = "Bearer " + ep.Secret
			}
			req.Header.Set(ep.Header, v)
		}
		hc, err := eventClient(ep)
		if err != nil {
			return ep.URL, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return ep.URL, err
		}
		defer func() { _ = resp.Body.Close() }()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode/100 != 2 {
			return ep.URL, fmt.Errorf("endpoint answered %d", resp.StatusCode)
		}
		return ep.URL, nil
	}
	return "", fmt.Errorf("endpoint type %q", ep.Type)
}

func eventClient(ep EventEndpoint) (*http.Client, error) {
	tr := &http.Transport{}
	if ep.CAFile != "" {
		pem, err := os.ReadFile(ep.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", ep.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// serveEvents answers /_emulator/events: GET lists the events raised,
// GET|POST|DELETE .../config reads, replaces or clears the events config.
func (e *Emulator) serveEvents(w http.ResponseWriter, r *http.Request, rest string) {
	switch {
	case rest == "" && r.Method == http.MethodGet:
		evs := e.Events()
		if id := r.URL.Query().Get("business_event_id"); id != "" {
			kept := evs[:0]
			for _, ev := range evs {
				if ev.BusinessEventID == id {
					kept = append(kept, ev)
				}
			}
			evs = kept
		}
		writeJSON(w, http.StatusOK, map[string]any{"count": len(evs), "value": evs})
	case rest == "sas" && r.Method == http.MethodGet:
		c := r.URL.Query().Get("container")
		if c == "" {
			c = "businessevents"
		}
		u, tok, err := e.ContainerSAS(c, 24*time.Hour)
		if err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"url": u, "container": c, "sas": tok})
	case rest == "config" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, e.EventsConfig())
	case rest == "config" && r.Method == http.MethodDelete:
		_ = e.SetEventsConfig(EventsConfig{}) // the empty config always validates
		writeJSON(w, http.StatusOK, e.EventsConfig())
	case rest == "config" && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large"})
			return
		}
		var c EventsConfig
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid events config: " + err.Error()})
			return
		}
		// The secret is not shown by GET; a POST names it again.
		if err := e.SetEventsConfig(c); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": strings.TrimPrefix(err.Error(), ErrConfig.Error()+": ")})
			return
		}
		writeJSON(w, http.StatusOK, e.EventsConfig())
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no control endpoint " + r.Method + " " + r.URL.Path})
	}
}
