package app

import (
	"fmt"
	"strings"

	"github.com/plantgate/plantgate/internal/config"
)

// Integration pattern limits used by PatternAdvice. OData and the MES
// message service are synchronous per record and throttled by F&O; DMF is
// asynchronous bulk.
const (
	maxSyncRate = 5.0 // records/s above which a synchronous F&O sink is the wrong pattern
)

// PatternAdvice warns when a flow's declared expectation does not fit the
// integration pattern of its sinks: high-rate flows routed to OData or the
// MES message service, and urgent flows routed to DMF.
func PatternAdvice(cfg *config.Config) []config.Problem {
	var out []config.Problem
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		rate := f.Expect.PerSecond()
		for _, sn := range f.To {
			s := cfg.Sinks[sn]
			if s == nil {
				continue
			}
			switch {
			case (s.Type == "fo.odata" || s.Type == "fo.mes") && rate > maxSyncRate:
				out = append(out, config.Problem{Pos: f.Pos, Msg: fmt.Sprintf(
					"flows.%s: expects %s but sink %s (%s) sends one request per record and F&O throttles it; route bulk records to a fo.dmf sink",
					name, f.Expect.Rate, sn, s.Type)})
			case strings.HasPrefix(s.Type, "fo.dmf") && f.Expect.Urgent:
				out = append(out, config.Problem{Pos: f.Pos, Msg: fmt.Sprintf(
					"flows.%s: is urgent but sink %s (%s) imports in batches minutes apart; route urgent records to fo.odata or fo.mes",
					name, sn, s.Type)})
			}
		}
	}
	return out
}
