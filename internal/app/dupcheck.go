package app

import (
	"fmt"
	"strings"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/plugins/inputs"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// DuplicateCheck finds the flows that would deliver a message to F&O twice:
// a flow whose source redelivers (pipeline.SourceFactory.Redelivers: MQTT
// sends a message again after a lost acknowledgement) and that routes to a
// sink that cannot recognise the copy (pipeline.SinkFactory.Dedups false:
// fo.mes, fo.odata create without key) must have an id expression, which
// lets the queue drop the copy, or say accept_duplicates: true. Each such
// flow is one problem at the flow's position. Unknown plugin types are left
// to the loader, which already reported them.
func DuplicateCheck(cfg *config.Config) []config.Problem {
	var out []config.Problem
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		if f == nil || f.ID.Src != "" || f.AcceptDuplicates {
			continue
		}
		src := cfg.Sources[f.From]
		if src == nil {
			continue
		}
		sf, ok := inputs.Lookup(src.Type)
		if !ok || sf.Redelivers == nil || !sf.Redelivers(src.Settings) {
			continue
		}
		var bad []string
		for _, sn := range f.To {
			s := cfg.Sinks[sn]
			if s == nil {
				continue
			}
			kf, ok := outputs.Lookup(s.Type)
			if !ok || kf.Dedups == nil || kf.Dedups(s.Settings) {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s (%s%s)", sn, s.Type, whyNoDedup(s)))
		}
		if len(bad) == 0 {
			continue
		}
		pos := f.Pos
		if pos.Path == "" {
			pos.Path = "flows." + name
		}
		out = append(out, config.Problem{Pos: pos, Msg: fmt.Sprintf(
			"no id: source %s (%s) delivers at least once, so after a lost acknowledgement it sends a message again, "+
				"and sink %s cannot recognise the copy: the message would reach F&O twice. "+
				"Add an id that is unique per message, such as `id: payload.<unique field>` (the queue drops a record "+
				"whose id it already holds), or `accept_duplicates: true` if F&O may receive a message twice",
			f.From, src.Type, strings.Join(bad, ", "))})
	}
	return out
}

// whyNoDedup adds the setting that makes a sink unable to de-duplicate,
// for the message.
func whyNoDedup(s *config.Plugin) string {
	if s.Type != "fo.odata" {
		return ""
	}
	return ", mode create without key"
}

// SinkFlowCheck asks each sink type that checks its flows
// (pipeline.SinkFactory.CheckFlow) about every flow routing to it, and
// returns each refusal as a problem at the flow's position.
func SinkFlowCheck(cfg *config.Config) []config.Problem {
	var out []config.Problem
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		if f == nil {
			continue
		}
		fields := make([]string, 0, len(f.Map))
		for _, m := range f.Map {
			fields = append(fields, m.Name)
		}
		for _, sn := range f.To {
			s := cfg.Sinks[sn]
			if s == nil {
				continue
			}
			kf, ok := outputs.Lookup(s.Type)
			if !ok || kf.CheckFlow == nil {
				continue
			}
			err := kf.CheckFlow(s.Settings, pipeline.FlowInfo{Name: name, Stream: streamOf(cfg, name, sn), Urgent: f.Expect.Urgent, Fields: fields})
			if err == nil {
				continue
			}
			pos := f.Pos
			if pos.Path == "" {
				pos.Path = "flows." + name
			}
			out = append(out, config.Problem{Pos: pos, Msg: fmt.Sprintf("to sink %s (%s): %v", sn, s.Type, err)})
		}
	}
	return out
}

// OverflowCheck checks the flows that name an overflow sink: the flow goes
// to exactly one fo.odata sink (MES messages cannot be imported through
// DMF), the overflow sink is a fo.dmf sink, and its data file's columns are
// the flow's fields in upper case (DMF's staging names).
func OverflowCheck(cfg *config.Config) []config.Problem {
	var out []config.Problem
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		if f == nil || f.Overflow.Sink == "" {
			continue
		}
		pos := f.Pos
		if pos.Path == "" {
			pos.Path = "flows." + name
		}
		bad := func(format string, a ...any) {
			out = append(out, config.Problem{Pos: pos, Msg: "overflow: " + fmt.Sprintf(format, a...)})
		}
		if len(f.To) != 1 || cfg.Sinks[f.To[0]] == nil || cfg.Sinks[f.To[0]].Type != "fo.odata" {
			bad("only a flow to one fo.odata sink can overflow to DMF (MES messages have no DMF entity; a flow to several sinks would split)")
			continue
		}
		ov := cfg.Sinks[f.Overflow.Sink]
		if ov == nil {
			continue // the loader named the unknown sink
		}
		if ov.Type != "fo.dmf" {
			bad("sink %s is a %s sink; overflow goes to a fo.dmf sink", f.Overflow.Sink, ov.Type)
			continue
		}
		kf, ok := outputs.Lookup(ov.Type)
		if !ok || kf.CheckFlow == nil {
			continue
		}
		var fields []string
		for _, m := range f.Map {
			fields = append(fields, strings.ToUpper(m.Name))
		}
		if len(fields) == 0 {
			bad("the flow maps no fields; overflow records must map the DMF sink's columns (in upper case)")
			continue
		}
		if err := kf.CheckFlow(ov.Settings, pipeline.FlowInfo{Name: name, Fields: fields}); err != nil {
			bad("sink %s: %v (overflow records carry the flow's fields in upper case)", f.Overflow.Sink, err)
		}
	}
	return out
}
