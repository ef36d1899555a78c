package foevents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// PollEndpoint reads production orders through OData where F&O's
// business events are not configured: ProductionOrderHeaders by status,
// every interval, at low priority in the environment's limiter.
// ProductionOrderHeaders has no change-time field in F&O's metadata, so a
// change is an order whose status or @odata.etag differs from the one
// last committed (kept in the source's queue state, in the same
// transaction as the order's message).
type PollEndpoint struct {
	// Env names the F&O environment (a key of the fo: section).
	Env string `yaml:"env" required:"true" ref:"fo"`
	// Statuses are the ProductionOrderStatus values read (default
	// Released).
	Statuses []string `yaml:"statuses"`
	// Company limits the read to one legal entity; empty: every company
	// (cross-company).
	Company string `yaml:"company"`
	// Interval is the wait between reads.
	Interval time.Duration `yaml:"interval" default:"1m" min:"1s"`
	// BusinessEventID is given to the messages, as a business event's, so
	// that the same flows serve both (default
	// ProductionOrderStatusChangedBusinessEvent).
	BusinessEventID string `yaml:"business_event_id" default:"ProductionOrderStatusChangedBusinessEvent"`
}

const polledPrefix = "p/"

// runPoll reads the orders every interval until ctx ends.
func (s *Source) runPoll(ctx context.Context, se pipeline.StateEmitter, env *d365.Env) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.pollOrders(ctx, se, env); err != nil && ctx.Err() == nil {
			s.pollStat.fail(err, s.now())
			s.m.errors.WithLabelValues(s.name, "odata_poll").Inc()
			s.log.Warn().Str(logging.FieldReason, logging.RedactText(err.Error())).Msg("production orders: OData read")
		}
		t.Reset(s.cfg.Poll.Interval)
	}
}

func (s *Source) ordersPath() string {
	p := s.cfg.Poll
	sts := p.Statuses
	if len(sts) == 0 {
		sts = []string{"Released"}
	}
	var or []string
	for _, st := range sts {
		or = append(or, "ProductionOrderStatus eq Microsoft.Dynamics.DataEntities.ProdStatus'"+st+"'")
	}
	filter := strings.Join(or, " or ")
	q := url.Values{}
	if p.Company != "" {
		filter = "dataAreaId eq '" + strings.ReplaceAll(p.Company, "'", "''") + "' and (" + filter + ")"
	}
	q.Set("cross-company", "true")
	q.Set("$filter", filter)
	return "/data/ProductionOrderHeaders?" + strings.ReplaceAll(q.Encode(), "+", "%20")
}

// pollOrders reads the orders once and commits a message per changed one.
func (s *Source) pollOrders(ctx context.Context, se pipeline.StateEmitter, env *d365.Env) error {
	path := s.ordersPath()
	var rows []map[string]any
	for page := 0; path != "" && page < 100; page++ {
		resp, err := env.Do(ctx, &d365.Request{Method: "GET", Path: path, Op: "odata", Priority: d365.PriorityLow})
		if err != nil {
			return fmt.Errorf("read ProductionOrderHeaders: %w", err)
		}
		var body struct {
			Value    []map[string]any `json:"value"`
			NextLink string           `json:"@odata.nextLink"`
		}
		dec := json.NewDecoder(strings.NewReader(string(resp.Body)))
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			return fmt.Errorf("read ProductionOrderHeaders: the answer is not an OData collection: %w", err)
		}
		rows = append(rows, body.Value...)
		path = ""
		if body.NextLink != "" {
			if u, err := url.Parse(body.NextLink); err == nil {
				path = u.RequestURI()
				if i := strings.Index(path, "/data/"); i > 0 {
					path = path[i:]
				}
			}
		}
	}
	now := s.now().UTC()
	var msgs []pipeline.Message
	var states []pipeline.StateWrite
	for _, r := range rows {
		co := strings.ToUpper(fmt.Sprint(r["dataAreaId"]))
		num := fmt.Sprint(r["ProductionOrderNumber"])
		status := fmt.Sprint(r["ProductionOrderStatus"])
		sig := status + "|" + fmt.Sprint(r["@odata.etag"])
		name := polledPrefix + co + "/" + num
		old, _, err := s.state.Get(name)
		if err != nil {
			return err
		}
		if string(old) == sig {
			continue
		}
		h := sha256.Sum256([]byte(name + "|" + sig))
		p := map[string]any{}
		for k, v := range r {
			if !strings.HasPrefix(k, "@") {
				p[k] = v
			}
		}
		p["BusinessEventId"] = s.cfg.Poll.BusinessEventID
		p["EventId"] = "odata-" + hex.EncodeToString(h[:12])
		p["EventTime"] = "/Date(" + strconv.FormatInt(now.UnixMilli(), 10) + ")/"
		p["LegalEntity"] = co
		if prev, _, _ := strings.Cut(string(old), "|"); prev != "" {
			p["PreviousProductionOrderStatus"] = prev
		}
		raw, _ := json.Marshal(p)
		payload := d365.Normalize(p)
		msgs = append(msgs, pipeline.Message{Raw: raw, Payload: payload, Time: now,
			Meta: map[string]any{"endpoint": "odata_poll", "business_event_id": s.cfg.Poll.BusinessEventID, "received_at": now}})
		states = append(states, pipeline.StateWrite{Name: name, Value: []byte(sig)})
	}
	s.pollStat.mu.Lock()
	s.pollStat.lastAt = now
	s.pollStat.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	if err := se.EmitWithState(ctx, states, msgs...); err != nil {
		return fmt.Errorf("queue %d production orders: %w", len(msgs), err)
	}
	s.counted(&s.pollStat, "odata_poll", msgs, now)
	return nil
}
