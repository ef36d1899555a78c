// Package fooutcomes is the "fo.outcomes" sink: it takes F&O's "message
// processed" business events (records of a fo.events source, routed by a
// flow) and applies each to the fo.mes sink that sent the message: a
// Processed message is confirmed (and, if it was held in doubt, its hold
// dropped), a Failed one becomes a dead letter of the fo.mes stream with
// F&O's infolog. The matching is the fo.mes sink's (see its
// track_outcomes); this sink only reads the event's fields.
//
// An event that is not a usable outcome (no EventId, a state other than
// Processed or Failed, no content) is dead-lettered with the reason; one
// that matches no message the fo.mes sink sent is dead-lettered too
// (unknown: dead_letter, the default) or logged and dropped (ignore),
// for a container shared by several gateways; an event received again is
// counted as a duplicate and changes nothing.
package fooutcomes

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/outputs"
	"github.com/plantgate/plantgate/plugins/outputs/fomes"
)

// SampleConfig is the plugin's annotated sample.
//
//go:embed sample.yaml
var SampleConfig string

// Type is the sink type name.
const Type = "fo.outcomes"

// Config is the sink's settings.
type Config struct {
	// MES names the fo.mes sink whose messages the events report on; it
	// must have track_outcomes: true.
	MES string `yaml:"mes" required:"true"`
	// Unknown is what happens to an event that matches no message the
	// sink sent: dead_letter (default) or ignore (logged and counted).
	Unknown string `yaml:"unknown" default:"dead_letter" enum:"dead_letter,ignore"`
	// Fields names the record fields that hold each part of the event
	// (F&O's payload names by default; a flow may map others).
	Fields Fields `yaml:"fields"`
}

// Fields are the names of an event's fields.
type Fields struct {
	EventID   string `yaml:"event_id" default:"EventId"`
	EventTime string `yaml:"event_time" default:"EventTime"`
	Type      string `yaml:"type" default:"MessageType"`
	Company   string `yaml:"company" default:"LegalEntity"`
	Content   string `yaml:"content" default:"MessageContent"`
	State     string `yaml:"state" default:"MessageState"`
	Infolog   string `yaml:"infolog" default:"MessageInfolog"`
}

func defaults() *Config {
	return &Config{Unknown: "dead_letter", Fields: Fields{EventID: "EventId", EventTime: "EventTime", Type: "MessageType",
		Company: "LegalEntity", Content: "MessageContent", State: "MessageState", Infolog: "MessageInfolog"}}
}

func init() {
	outputs.Add(pipeline.SinkFactory{
		Type:      Type,
		NewConfig: func() any { return defaults() },
		New: func(cfg any, env pipeline.Env) (pipeline.Sink, error) {
			return New(cfg.(*Config), env)
		},
		// An event applied twice changes nothing (EventId).
		Dedups: func(any) bool { return true },
	})
}

// Applier is what the sink needs of the fo.mes sink.
type Applier interface {
	ApplyOutcome(ctx context.Context, oc fomes.Outcome) (string, error)
	TracksOutcomes() bool
}

// Sink is the fo.outcomes sink.
type Sink struct {
	cfg     Config
	log     zerolog.Logger
	resolve func(kind, name string) (any, error)

	mu  sync.Mutex
	mes Applier
}

// New builds the sink; the fo.mes sink is looked up at the first event.
func New(cfg *Config, env pipeline.Env) (*Sink, error) {
	if cfg.MES == "" {
		return nil, errors.New("mes: name the fo.mes sink whose messages the events report on")
	}
	return &Sink{cfg: *cfg, log: env.Log, resolve: env.Resolve}, nil
}

func (s *Sink) applier() (Applier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mes != nil {
		return s.mes, nil
	}
	if s.resolve == nil {
		return nil, errors.New("no gateway to find the fo.mes sink in")
	}
	v, err := s.resolve("sink", s.cfg.MES)
	if err != nil {
		return nil, err
	}
	// Not Permanent: the events wait in the queue until the config is fixed.
	a, ok := v.(Applier)
	if !ok {
		return nil, fmt.Errorf("sink %s is not a fo.mes sink", s.cfg.MES)
	}
	if !a.TracksOutcomes() {
		return nil, fmt.Errorf("sink %s does not track outcomes: set track_outcomes: true on it", s.cfg.MES)
	}
	s.mes = a
	return a, nil
}

// Outcome reads the outcome an event record carries.
func (s *Sink) Outcome(r pipeline.Record) (fomes.Outcome, error) {
	f := s.cfg.Fields
	str := func(name string) string {
		v, _ := r.Fields[name].(string)
		return v
	}
	oc := fomes.Outcome{EventID: str(f.EventID), Type: str(f.Type), Company: str(f.Company), Content: str(f.Content),
		State: str(f.State), Infolog: str(f.Infolog)}
	if t, ok := d365.ParseEventTime(r.Fields[f.EventTime]); ok {
		oc.At = t
	}
	var missing []string
	for _, x := range [][2]string{{f.EventID, oc.EventID}, {f.Type, oc.Type}, {f.Company, oc.Company}, {f.Content, oc.Content}, {f.State, oc.State}} {
		if x[1] == "" {
			missing = append(missing, x[0])
		}
	}
	if len(missing) > 0 {
		return oc, fmt.Errorf("not a message processed event: no %s", strings.Join(missing, ", "))
	}
	return oc, nil
}

// Write applies each event to the fo.mes sink.
func (s *Sink) Write(ctx context.Context, batch []pipeline.Record) error {
	return pipeline.ForEach(ctx, batch, func(_ int, r pipeline.Record) error {
		oc, err := s.Outcome(r)
		if err != nil {
			s.log.Warn().Str(logging.FieldReason, err.Error()).Uint64(logging.FieldSeq, r.Seq).Msg("business event dead-lettered")
			return pipeline.Permanent(err)
		}
		a, err := s.applier()
		if err != nil {
			return err
		}
		res, err := a.ApplyOutcome(ctx, oc)
		if err != nil {
			return err
		}
		switch res {
		case fomes.MatchUnknown:
			why := fmt.Sprintf("no message sent by sink %s matches this event (type %s, company %s, the same content)", s.cfg.MES, oc.Type, oc.Company)
			s.log.Warn().Str("event_id", oc.EventID).Str(logging.FieldReason, why).Msg("message processed event for a message plantgate never sent")
			if s.cfg.Unknown == "dead_letter" {
				return pipeline.Permanent(errors.New(why))
			}
		case fomes.MatchDuplicate:
			s.log.Info().Str("event_id", oc.EventID).Msg("message processed event received again; ignored")
		}
		return nil
	})
}

// Probe checks that the fo.mes sink exists and tracks outcomes, so that
// a wrong mes: fails at start (startup: probe) and shows as not ready.
func (s *Sink) Probe(context.Context) error {
	_, err := s.applier()
	return err
}

var (
	_ pipeline.Sink   = (*Sink)(nil)
	_ pipeline.Prober = (*Sink)(nil)
)
