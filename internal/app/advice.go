package app

import (
	"fmt"
	"strings"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// Integration pattern limits used by PatternAdvice. OData and the MES
// message service are synchronous per record and throttled by F&O; DMF is
// asynchronous bulk.
const (
	maxSyncRate = 5.0 // records/s above which a synchronous F&O sink is the wrong pattern
)

// Sink types by integration pattern. Advice names only the types that
// are registered in this build (outputs.Types), never one that does not
// exist yet.
var (
	syncSinkTypes = []string{"fo.odata", "fo.mes"}
	bulkSinkTypes = []string{"fo.dmf"}
)

// registeredSinks returns the types among types that are registered.
func registeredSinks(types []string) []string {
	var out []string
	for _, t := range types {
		if _, ok := outputs.Lookup(t); ok {
			out = append(out, t)
		}
	}
	return out
}

// PatternAdvice warns when a flow's declared expectation does not fit the
// integration pattern of its sinks: high-rate flows routed to OData or the
// MES message service, and urgent flows routed to DMF. Each warning is at
// the flow, whose path Problem.String prints; the message does not repeat
// it.
func PatternAdvice(cfg *config.Config) []config.Problem {
	var out []config.Problem
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		if f == nil {
			continue
		}
		pos := f.Pos
		if pos.Path == "" {
			pos.Path = "flows." + name
		}
		rate := f.Expect.PerSecond()
		for _, sn := range f.To {
			s := cfg.Sinks[sn]
			if s == nil {
				continue
			}
			switch {
			case (s.Type == "fo.odata" || s.Type == "fo.mes") && rate > maxSyncRate:
				out = append(out, config.Problem{Pos: pos, Msg: fmt.Sprintf(
					"expects %s but sink %s (%s) sends one request per record and F&O throttles it; %s",
					f.Expect.Rate, sn, s.Type, bulkAdvice())})
			case strings.HasPrefix(s.Type, "fo.dmf") && f.Expect.Urgent:
				msg := fmt.Sprintf("is urgent but sink %s (%s) imports in batches minutes apart", sn, s.Type)
				if sync := registeredSinks(syncSinkTypes); len(sync) > 0 {
					msg += "; route urgent records to " + strings.Join(sync, " or ")
				}
				out = append(out, config.Problem{Pos: pos, Msg: msg})
			}
		}
	}
	return append(out, orderScopeAdvice(cfg)...)
}

// orderScopeAdvice warns when two sinks of one type keep order in the same
// scope (pipeline.SinkFactory.OrderScope): two fo.mes sinks of one F&O
// environment and company each keep a production order's messages in
// order, but not across each other.
func orderScopeAdvice(cfg *config.Config) []config.Problem {
	var out []config.Problem
	first := map[string]string{}
	for _, sn := range cfg.SinkOrder {
		s := cfg.Sinks[sn]
		f, ok := outputs.Lookup(s.Type)
		if !ok || f.OrderScope == nil {
			continue
		}
		scope := s.Type + " " + f.OrderScope(s.Settings)
		prev, seen := first[scope]
		if !seen {
			first[scope] = sn
			continue
		}
		pos := s.Pos
		if pos.Path == "" {
			pos.Path = "sinks." + sn
		}
		out = append(out, config.Problem{Pos: pos, Msg: fmt.Sprintf(
			"sinks %s and %s are both %s sinks of %s: each keeps a production order's records in order, but not across "+
				"the other, and F&O processes an order's messages in the order they arrive. Use one sink and name each "+
				"record's message type in its flow (map _messageType)", prev, sn, s.Type, f.OrderScope(s.Settings))})
	}
	return out
}

// bulkAdvice says what to do with a high-rate flow, naming a bulk sink
// only when one is registered.
func bulkAdvice() string {
	if bulk := registeredSinks(bulkSinkTypes); len(bulk) > 0 {
		return "route bulk records to a " + strings.Join(bulk, " or ") + " sink"
	}
	return "send fewer records (for example one total per order and shift instead of every event); " +
		"this build has no bulk (DMF) sink"
}
