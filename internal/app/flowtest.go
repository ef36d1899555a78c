package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/codec"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/inputs"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// plantgate flow test: what a flow makes of one message, and what each of
// its sinks would send for the record, without a queue and without the
// network. The sinks are built as the gateway builds them, but with no
// queue (no in-doubt bookkeeping, no state) and F&O environments that
// hold no credentials; the requests come from the sinks' own
// pipeline.RequestPreviewer, the code that builds what they send.

// FlowTestInput is the message to try.
type FlowTestInput struct {
	// Topic is the topic the message arrives on (MQTT sources).
	Topic string
	// Payload is the message as the source receives it.
	Payload []byte
	// Time is when it is received (zero: now).
	Time time.Time
}

// FlowTestResult is what a flow makes of one message.
type FlowTestResult struct {
	Flow       string `json:"flow"`
	Source     string `json:"source"`
	SourceType string `json:"source_type"`
	Topic      string `json:"topic,omitempty"`
	// Received is the message's time, as expressions see received_at.
	Received time.Time `json:"received_at"`
	// Matched is true when the flow selected the message and mapped it.
	Matched bool `json:"matched"`
	// Why says why the flow did not select the message.
	Why string `json:"why,omitempty"`
	// Error says why the message cannot become a record (it does not
	// decode, or an expression fails): the gateway dead-letters it in the
	// source's stream with this reason.
	Error string `json:"error,omitempty"`
	// Payload is the decoded payload, as expressions see payload.
	Payload any `json:"payload,omitempty"`
	// Key and ID are the record's order key and idempotency key.
	Key string `json:"key,omitempty"`
	ID  string `json:"id,omitempty"`
	// Fields are the mapped record fields.
	Fields map[string]any `json:"fields,omitempty"`
	// Sinks are what each sink of the flow would do with the record.
	Sinks []SinkPreview `json:"sinks,omitempty"`
}

// SinkPreview is what one sink would send for the record.
type SinkPreview struct {
	Sink   string `json:"sink"`
	Type   string `json:"type"`
	Stream string `json:"stream"`
	// Overflow is set for a flow's overflow sink: it takes the record
	// instead of the flow's fo.odata sink while that one is backlogged.
	Overflow bool `json:"overflow,omitempty"`
	// Request is the request; Body is in BodyText.
	Request  *pipeline.RequestPreview `json:"request,omitempty"`
	BodyText string                   `json:"body,omitempty"`
	// Refused says why the sink would dead-letter the record.
	Refused string `json:"refused,omitempty"`
	// NoPreview is set for a sink that cannot show its request.
	NoPreview bool `json:"no_preview,omitempty"`
}

// Delivered reports whether every sink would send the record.
func (r *FlowTestResult) Delivered() bool {
	if !r.Matched {
		return false
	}
	for _, s := range r.Sinks {
		if s.Refused != "" {
			return false
		}
	}
	return true
}

// ErrUnknownFlow is returned by FlowTest for a flow the config lacks.
var ErrUnknownFlow = errors.New("unknown flow")

// FlowTest runs flow name of cfg (compiled as flows) on one message.
// Errors are about the input or the config: ErrUnknownFlow, or
// config.Errors for a sink that cannot be built. What the flow makes of
// the message is in the result, including a source that does not receive
// it (its topic), a when that is false, and a decode or mapping failure.
func FlowTest(cfg *config.Config, flows []*flow.Flow, name string, in FlowTestInput) (*FlowTestResult, error) {
	var fl *flow.Flow
	names := make([]string, 0, len(flows))
	for _, f := range flows {
		names = append(names, f.Name)
		if f.Name == name {
			fl = f
		}
	}
	if fl == nil {
		return nil, fmt.Errorf("%w %q (flows: %v)", ErrUnknownFlow, name, names)
	}
	src := cfg.Sources[fl.Source]
	if in.Time.IsZero() {
		in.Time = time.Now()
	}
	in.Time = in.Time.UTC()
	res := &FlowTestResult{Flow: fl.Name, Source: fl.Source, SourceType: src.Type, Topic: in.Topic, Received: in.Time}
	msg, notReceived := previewMessage(fl.Source, src, in)
	if notReceived != "" {
		// The source would never hand the message to a flow.
		res.Why = notReceived
		return res, nil
	}
	res.Payload = msg.Payload
	tr := fl.Try(fl.Source, msg)
	res.Matched, res.Why = tr.Matched, tr.Why
	if tr.Err != nil {
		res.Error = tr.Err.Error()
	}
	if !tr.Matched {
		return res, nil
	}
	res.Key, res.ID, res.Fields = tr.Record.Key, tr.Record.ID, tr.Record.Fields
	reg := previewRegistry(cfg)
	sinks := append([]string(nil), fl.Sinks...)
	if o := fl.OverflowSink(); o != "" {
		sinks = append(sinks, o)
	}
	for _, sn := range sinks {
		pc := cfg.Sinks[sn]
		sp := SinkPreview{Sink: sn, Type: pc.Type, Stream: fl.Stream(sn), Overflow: sn == fl.OverflowSink()}
		f, ok := outputs.Lookup(pc.Type)
		if !ok {
			return nil, pluginError(pc, "sink", sn, fmt.Errorf("unknown sink type %q", pc.Type))
		}
		s, err := f.New(pc.Settings, pipeline.Env{
			Name: sn, Log: zerolog.Nop(), Metrics: prometheus.NewRegistry(), Now: time.Now, GatewayID: cfg.Gateway.ID,
			Flows: FlowsOf(cfg, "sink", sn), Resolve: reg.Resolve,
		})
		if err != nil {
			return nil, pluginError(pc, "sink", sn, err)
		}
		rec := tr.Record
		rec.Stream = sp.Stream
		if pv, ok := s.(pipeline.RequestPreviewer); ok {
			p, err := pv.PreviewRequest(rec)
			if err != nil {
				sp.Refused = logging.RedactText(err.Error())
			} else {
				sp.Request = &p
				sp.BodyText = string(p.Body)
			}
		} else {
			sp.NoPreview = true
		}
		if c, ok := s.(pipeline.Closer); ok {
			_ = c.Close(context.Background())
		}
		res.Sinks = append(res.Sinks, sp)
	}
	return res, nil
}

// previewMessage is the message source emits for in: decoded by the
// source's settings where they can (pipeline.MessagePreviewer), else by
// the source's Redecoder (a source built without a queue), else as JSON.
// notReceived says why the source would never emit it (its topic).
func previewMessage(name string, pc *config.Plugin, in FlowTestInput) (m pipeline.Message, notReceived string) {
	meta := map[string]any{}
	if in.Topic != "" {
		meta["topic"] = in.Topic
	}
	if mp, ok := pc.Settings.(pipeline.MessagePreviewer); ok {
		m, err := mp.PreviewMessage(in.Topic, in.Payload, in.Time)
		if err != nil {
			return m, fmt.Sprintf("source %s: %v", name, err)
		}
		return m, ""
	}
	m = pipeline.Message{Raw: in.Payload, Meta: meta, Time: in.Time}
	var dec pipeline.Redecoder
	if f, ok := inputs.Lookup(pc.Type); ok {
		if s, err := f.New(pc.Settings, pipeline.Env{Name: name, Log: zerolog.Nop(), Metrics: prometheus.NewRegistry(), Now: time.Now}); err == nil {
			dec, _ = s.(pipeline.Redecoder)
			if c, ok := s.(pipeline.Closer); ok {
				defer func() { _ = c.Close(context.Background()) }()
			}
		}
	}
	if dec == nil {
		d, err := codec.New(codec.Options{})
		if err != nil {
			m.DecodeErr = err
			return m, ""
		}
		dec = jsonDecoder{d}
	}
	m.Payload, m.DecodeErr = dec.Redecode(in.Payload, meta)
	return m, ""
}

// jsonDecoder decodes as JSON what no source decoder is known for.
type jsonDecoder struct{ d codec.Decoder }

func (j jsonDecoder) Redecode(raw []byte, _ map[string]any) (any, error) { return j.d.Decode(raw) }

// previewRegistry holds the F&O environments of cfg for previews: their
// URLs and companies, but no credentials, certificates or CA (nothing is
// sent, so the secrets need not be readable).
func previewRegistry(cfg *config.Config) *d365.Registry {
	envs := make(map[string]*config.FOEnv, len(cfg.FO))
	for n, e := range cfg.FO {
		c := *e
		c.ClientSecret = logging.NewSecret("flow-test-has-no-secret")
		c.CertificateFile, c.PrivateKeyFile, c.CAFile = "", "", ""
		envs[n] = &c
	}
	return d365.NewRegistry(envs, d365.Options{Log: zerolog.Nop()})
}
