package fomes

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Type is the sink type name.
const Type = "fo.mes"

// SendMessagePath is the message service operation, below the environment URL.
const SendMessagePath = "/api/services/SysMessageServices/SysMessageService/SendMessage"

// In-doubt policies.
const (
	InDoubtHold   = "hold"
	InDoubtResend = "resend"
)

// Config is the sink's settings.
type Config struct {
	// Env names the F&O environment (a key of the fo: section).
	Env string `yaml:"env" required:"true" ref:"fo"`
	// MessageType is the message type of records that do not name one in
	// MessageTypeField. Leave it empty when every flow maps the field: one
	// sink then carries all message types of an environment and company,
	// and the production order's messages keep their order across types.
	MessageType string `yaml:"message_type" enum:"ProdProductionOrderStart,ProdProductionOrderReportFinished,ProdProductionOrderPickingList,ProdProductionOrderRouteCard,ProdProductionOrderEnd"`
	// MessageTypeField is the record field that names a record's message
	// type (it is not part of the message content).
	MessageTypeField string `yaml:"message_type_field" default:"_messageType"`
	// Queue is the message processor queue.
	Queue string `yaml:"queue" default:"JmgMES3P"`
	// Company is the _companyId; default: the environment's company.
	Company string `yaml:"company"`
	// CompanyField is the record field that overrides the company per
	// record; it is not part of the message content.
	CompanyField string `yaml:"company_field" default:"dataAreaId"`
	// InDoubt is what happens to a message sent without a known outcome
	// (a crash or a timeout after the request left): hold (park it for an
	// operator; never sent twice) or resend (send it again; F&O may then
	// hold it twice).
	InDoubt string `yaml:"in_doubt" default:"hold" enum:"hold,resend"`
	// Priority orders this sink's requests in the environment's limiter:
	// high, normal or low. Empty: high for urgent flows, else normal.
	Priority string `yaml:"priority" enum:"high,normal,low"`
	// AllowUnknownFields passes fields that are not documented for the
	// message type (customisations) instead of dead-lettering the record.
	AllowUnknownFields bool `yaml:"allow_unknown_fields"`
	// TrackOutcomes keeps a send entry per message so that F&O's "message
	// processed" business events (through a fo.outcomes sink) confirm it,
	// or make it a dead letter with F&O's infolog when F&O failed it.
	TrackOutcomes bool `yaml:"track_outcomes"`
	// OutcomeTimeout is how long after its send a message without an
	// outcome is reported (log, status, plantgate_fo_mes_outcome_overdue).
	OutcomeTimeout time.Duration `yaml:"outcome_timeout" default:"30m" min:"1s"`
	// OutcomeRetention is how long send entries are kept (to recognise
	// an event F&O sends again).
	OutcomeRetention time.Duration `yaml:"outcome_retention" default:"168h" min:"1m"`
	// ClockSkew is how much earlier than the send an event's EventTime may
	// be (F&O's clock against the gateway's) and still match it.
	ClockSkew time.Duration `yaml:"clock_skew" default:"5m"`
}

func init() {
	outputs.Add(pipeline.SinkFactory{
		Type: Type,
		NewConfig: func() any {
			return &Config{Queue: "JmgMES3P", CompanyField: "dataAreaId", MessageTypeField: "_messageType", InDoubt: InDoubtHold,
				OutcomeTimeout: 30 * time.Minute, OutcomeRetention: 168 * time.Hour, ClockSkew: 5 * time.Minute}
		},
		New: func(cfg any, env pipeline.Env) (pipeline.Sink, error) {
			return New(cfg.(*Config), env)
		},
		// A MES message carries no idempotency key: F&O processes every
		// copy it is sent.
		Dedups: func(any) bool { return false },
		// F&O processes one production order's messages in the order it
		// receives them, whatever their type: all flows to one fo.mes sink
		// share its stream, so the order key spans them all.
		SharedStream: true,
		OrderScope: func(cfg any) string {
			c := cfg.(*Config)
			if c.Company == "" {
				return "environment " + c.Env
			}
			return "environment " + c.Env + ", company " + c.Company
		},
		CheckFlow: func(cfg any, f pipeline.FlowInfo) error {
			c := cfg.(*Config)
			if c.MessageType != "" || c.MessageTypeField == "" {
				return nil
			}
			for _, n := range f.Fields {
				if n == c.MessageTypeField {
					return nil
				}
			}
			return fmt.Errorf("the sink has no message_type and the flow maps no %s: map it to the message type "+
				"(e.g. %s: '\"ProdProductionOrderReportFinished\"'), or set message_type on the sink", c.MessageTypeField, c.MessageTypeField)
		},
	})
}

// Sink sends MES messages.
type Sink struct {
	cfg     Config
	name    string
	env     *d365.Env
	prio    d365.Priority
	urgent  map[string]bool   // names of urgent flows
	prios   map[string]string // priority per flow, for status
	tracker *d365.Tracker
	log     zerolog.Logger

	sent, held, rejected atomic.Int64

	health d365.Health

	out       *outcomes // nil unless track_outcomes
	stopSweep chan struct{}
	closeOnce sync.Once
}

// New builds the sink. It resolves the F&O environment and loads the
// held index from the sink's state; it does no network I/O.
func New(cfg *Config, env pipeline.Env) (*Sink, error) {
	if _, ok := messageTypes[cfg.MessageType]; !ok && cfg.MessageType != "" {
		return nil, fmt.Errorf("message_type %q: want one of %s", cfg.MessageType, strings.Join(MessageTypes(), ", "))
	}
	if cfg.InDoubt != InDoubtHold && cfg.InDoubt != InDoubtResend {
		return nil, fmt.Errorf("in_doubt %q: want hold or resend", cfg.InDoubt)
	}
	prio, err := d365.ParsePriority(cfg.Priority)
	if err != nil {
		return nil, err
	}
	fe, err := d365.Resolve(env, cfg.Env)
	if err != nil {
		return nil, err
	}
	tr := d365.NewTracker(env.Records, env.Name, d365.TrackerOptions{
		Log: env.Log, Held: fe.Metrics().InDoubt.WithLabelValues(env.Name), Parked: fe.Metrics().Parked.WithLabelValues(env.Name),
		Now: env.Now, Streams: streamsOf(env.Flows),
	})
	s := &Sink{cfg: *cfg, name: env.Name, env: fe, prio: prio, urgent: pipeline.UrgentFlows(env.Flows), tracker: tr, log: env.Log}
	s.prios = map[string]string{}
	for _, f := range env.Flows {
		s.prios[f.Name] = s.priority(pipeline.Record{Flow: f.Name, Stream: f.Stream}).String()
	}
	if cfg.TrackOutcomes && env.State != nil {
		if s.out, err = newOutcomes(s, env, cfg); err != nil {
			return nil, err
		}
		s.stopSweep = make(chan struct{})
		go s.runSweeps(s.stopSweep)
	}
	return s, nil
}

// Tracker returns the sink's in-doubt bookkeeping.
func (s *Sink) Tracker() *d365.Tracker { return s.tracker }

func (s *Sink) priority(r pipeline.Record) d365.Priority {
	// The flow, not the stream: all flows to the sink share its stream.
	if s.cfg.Priority == "" && s.urgent[r.Flow] {
		return d365.PriorityHigh
	}
	return s.prio
}

// Write sends the batch one message at a time with pipeline.ForEach: a
// message that fails transiently stops the later messages of its key (the
// production order) in this batch, so they stay in order.
func (s *Sink) Write(ctx context.Context, batch []pipeline.Record) error {
	return pipeline.ForEach(ctx, batch, func(_ int, r pipeline.Record) error { return s.send(ctx, r) })
}

// Envelope builds the SendMessage body of a record, or says why the record
// is not a valid message.
func (s *Sink) Envelope(r pipeline.Record) ([]byte, error) {
	company, typ, content, err := s.message(r)
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"_companyId": company, "_messageQueue": s.cfg.Queue, "_messageType": typ, "_messageContent": content,
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode SendMessage envelope: %w", err)
	}
	return b, nil
}

// message returns the company, message type and content of r's message.
func (s *Sink) message(r pipeline.Record) (company, typ, content string, err error) {
	company = s.cfg.Company
	if company == "" {
		company = s.env.Company()
	}
	typ = s.cfg.MessageType
	fields := make(map[string]any, len(r.Fields))
	for k, v := range r.Fields {
		if k == s.cfg.MessageTypeField && s.cfg.MessageTypeField != "" {
			if t, ok := v.(string); ok && t != "" {
				typ = t
			}
			continue
		}
		if k == s.cfg.CompanyField && s.cfg.CompanyField != "" {
			if c, ok := v.(string); ok && c != "" {
				company = c
			}
			continue
		}
		fields[k] = v
	}
	if company == "" {
		return "", "", "", fmt.Errorf("no company for the message: set company on the sink or the fo environment, or map %s in the flow", s.cfg.CompanyField)
	}
	mt, ok := messageTypes[typ]
	switch {
	case typ == "":
		return "", "", "", fmt.Errorf("no message type: map %s in the flow (one of %s), or set message_type on the sink", s.cfg.MessageTypeField, strings.Join(MessageTypes(), ", "))
	case !ok:
		return "", "", "", fmt.Errorf("%s %q is not a MES message type: want one of %s", s.cfg.MessageTypeField, typ, strings.Join(MessageTypes(), ", "))
	}
	c, err := buildContent(mt, fields, s.cfg.AllowUnknownFields)
	if err != nil {
		return "", "", "", fmt.Errorf("invalid %s message: %w", typ, err)
	}
	cb, err := json.Marshal(c)
	if err != nil {
		return "", "", "", fmt.Errorf("encode %s message: %w", typ, err)
	}
	return company, typ, string(cb), nil
}

func (s *Sink) send(ctx context.Context, r pipeline.Record) error {
	verdict, holder, err := s.tracker.Check(r)
	if err != nil {
		return err
	}
	switch verdict {
	case d365.VerdictHeld:
		if holder.State == d365.HeldParked {
			return pipeline.Permanent(errors.New(d365.ParkedReason(r.Stream, pipeline.Hold{Seq: holder.Behind, Key: holder.Key})))
		}
		return pipeline.Permanent(errors.New(d365.HeldReason(r.Stream, holder.Seq, holder.Reason)))
	case d365.VerdictBlocked:
		if _, err := s.tracker.Park(ctx, r, holder); err != nil {
			return err
		}
		return pipeline.Permanent(errors.New(d365.ParkedReason(r.Stream, holder)))
	case d365.VerdictDelivered:
		// F&O accepted it before the gateway stopped; ack it without a
		// resend (the ack deletes the mark in the same transaction).
		_, err := s.out.resolveInFlight(ctx, r, false)
		return err
	case d365.VerdictInDoubt:
		if handled, err := s.out.resolveInFlight(ctx, r, true); handled {
			return err // F&O's event told the outcome
		}
		if s.cfg.InDoubt == InDoubtHold {
			return s.hold(ctx, r, "the gateway stopped after the message was sent, before F&O answered")
		}
		s.log.Warn().Str(logging.FieldStream, r.Stream).Uint64(logging.FieldSeq, r.Seq).Str(logging.FieldKey, r.Key).
			Msg("message in doubt, sending it again (in_doubt: resend)")
	}
	body, err := s.Envelope(r)
	if err != nil {
		s.rejected.Add(1)
		return pipeline.Permanent(err)
	}
	marked := false
	req := s.request(r, body)
	req.BeforeSend = func() error {
		if err := s.tracker.Sending(ctx, r); err != nil {
			return err
		}
		marked = true
		if s.out != nil {
			company, typ, content, _ := s.message(r) // Envelope succeeded with the same record
			if err := s.out.sending(ctx, r, company, typ, content); err != nil {
				return err
			}
		}
		return nil
	}
	_, err = s.env.Do(ctx, req)
	if err == nil {
		s.sent.Add(1)
		s.health.Succeeded()
		if err := s.tracker.Delivered(ctx, r); err != nil {
			// F&O has the message; the marker still says "sending", so a
			// restart before the ack holds it rather than resend it.
			s.log.Warn().Err(err).Uint64(logging.FieldSeq, r.Seq).Msg("record delivery in state")
		}
		if _, err := s.out.resolveInFlight(ctx, r, false); err != nil {
			s.log.Warn().Err(err).Uint64(logging.FieldSeq, r.Seq).Msg("apply the message's outcome; retried by the outcome sweep")
		}
		return nil
	}
	switch {
	case marked && d365.IsInDoubt(err):
		if handled, herr := s.out.resolveInFlight(ctx, r, true); handled {
			return herr // F&O's event came before the answer
		}
		if s.cfg.InDoubt == InDoubtHold {
			return s.hold(ctx, r, err.Error())
		}
		return err // the marker stays: the next attempt resends it
	case pipeline.IsPermanent(err):
		s.rejected.Add(1)
		s.health.Failed(err)
		if marked {
			// F&O refused it: a restart must not take it for one in doubt.
			if nerr := s.tracker.NotSent(ctx, r); nerr != nil {
				s.log.Warn().Err(nerr).Uint64(logging.FieldSeq, r.Seq).Msg("clear in-flight marker")
			}
			s.out.notSent(ctx, r)
		}
		return err
	case marked:
		if nerr := s.tracker.NotSent(ctx, r); nerr != nil {
			s.log.Warn().Err(nerr).Uint64(logging.FieldSeq, r.Seq).Msg("clear in-flight marker")
		}
		s.out.notSent(ctx, r)
	}
	return err
}

// request is the SendMessage call that carries body, the envelope of r.
func (s *Sink) request(r pipeline.Record, body []byte) *d365.Request {
	return &d365.Request{Method: "POST", Path: SendMessagePath, Body: body, Op: "mes", Priority: s.priority(r)}
}

func (s *Sink) hold(ctx context.Context, r pipeline.Record, cause string) error {
	h, err := s.tracker.Hold(ctx, r, cause, s.messageType(r))
	if err != nil {
		return fmt.Errorf("hold record in doubt: %w", err)
	}
	s.held.Add(1)
	return pipeline.Permanent(errors.New(d365.HeldReason(r.Stream, h.Seq, h.Reason)))
}

// messageType is the message type of r (for status and holds).
func (s *Sink) messageType(r pipeline.Record) string {
	if t, ok := r.Fields[s.cfg.MessageTypeField].(string); ok && t != "" {
		return t
	}
	return s.cfg.MessageType
}

// Probe reports whether F&O and its identity platform are reachable, and
// not-ready after F&O answered 403 until a later message succeeds.
func (s *Sink) Probe(ctx context.Context) error {
	if err := s.health.Check("messages"); err != nil {
		return err
	}
	return s.env.Probe(ctx)
}

// Status implements pipeline.StatusReporter.
func (s *Sink) Status() map[string]any {
	st := map[string]any{
		"env": s.env.Status(), "message_type": s.cfg.MessageType, "in_doubt_policy": s.cfg.InDoubt,
		"sent": s.sent.Load(), "rejected": s.rejected.Load(), "priorities": s.prios,
	}
	s.health.Report(st, "last_sent_at", s.tracker)
	if s.out != nil {
		st["outcomes"] = s.out.status()
	}
	return st
}

// Close stops the outcome sweeps (the tracker and the send entries keep
// their state in the queue); safe to call twice.
func (s *Sink) Close(context.Context) error {
	s.closeOnce.Do(func() {
		if s.stopSweep != nil {
			close(s.stopSweep)
		}
	})
	return nil
}

// streamsOf returns the streams of flows.
func streamsOf(flows []pipeline.FlowInfo) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range flows {
		if !seen[f.Stream] {
			seen[f.Stream] = true
			out = append(out, f.Stream)
		}
	}
	return out
}

var (
	_ pipeline.Sink           = (*Sink)(nil)
	_ pipeline.Closer         = (*Sink)(nil)
	_ pipeline.Prober         = (*Sink)(nil)
	_ pipeline.StatusReporter = (*Sink)(nil)
)

// FOEnv returns the F&O environment the sink delivers to; the gateway's
// health model marks the sink down while that environment is.
func (s *Sink) FOEnv() *d365.Env { return s.env }
