package app

import (
	"regexp"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// TestPatternAdvice: a high-rate flow to a synchronous sink and an urgent
// flow to a bulk sink are warned about, at the flow, with its path printed
// once, and the advice names only sink types this build has.
func TestPatternAdvice(t *testing.T) {
	pos := func(name string, line int) config.Pos {
		return config.Pos{File: "p.yaml", Line: line, Column: 3, Path: "flows." + name}
	}
	cfg := &config.Config{FlowOrder: []string{"bulk", "urgent", "calm"}, Flows: map[string]*config.Flow{
		"bulk":   {To: []string{"odata"}, Expect: config.Expect{Rate: "50/s"}, Pos: pos("bulk", 10)},
		"urgent": {To: []string{"dmf"}, Expect: config.Expect{Rate: "1/m", Urgent: true}, Pos: pos("urgent", 20)},
		"calm":   {To: []string{"mes"}, Expect: config.Expect{Rate: "1/s", Urgent: true}, Pos: pos("calm", 30)},
	}, Sinks: map[string]*config.Plugin{"odata": {Type: "fo.odata"}, "dmf": {Type: "fo.dmf"}, "mes": {Type: "fo.mes"}}}
	got := PatternAdvice(cfg)
	if len(got) != 2 {
		t.Fatalf("advice = %v", got)
	}
	bulk, urgent := got[0].String(), got[1].String()
	if !strings.HasPrefix(bulk, "p.yaml:10:3: flows.bulk: expects 50/s but sink odata (fo.odata)") ||
		!strings.HasPrefix(urgent, "p.yaml:20:3: flows.urgent: is urgent but sink dmf (fo.dmf)") {
		t.Fatalf("advice = %q, %q", bulk, urgent)
	}
	for name, s := range map[string]string{"bulk": bulk, "urgent": urgent} {
		if n := strings.Count(s, "flows."+name); n != 1 {
			t.Errorf("flow path printed %d times: %q", n, s)
		}
	}

	// Every sink type the advice recommends (after "route") is registered.
	typ := regexp.MustCompile(`fo\.[a-z]+`)
	for _, p := range got {
		_, advice, ok := strings.Cut(p.Msg, "; ")
		if !ok {
			t.Errorf("no advice in %q", p.Msg)
			continue
		}
		for _, tt := range typ.FindAllString(advice, -1) {
			if _, ok := outputs.Lookup(tt); !ok {
				t.Errorf("advice recommends sink type %s, which does not exist: %q", tt, p.Msg)
			}
		}
	}
	if _, ok := outputs.Lookup("fo.dmf"); !ok {
		if !strings.Contains(bulk, "this build has no bulk (DMF) sink") {
			t.Errorf("bulk advice without a bulk sink: %q", bulk)
		}
	} else if !strings.Contains(bulk, "route bulk records to a fo.dmf sink") {
		t.Errorf("bulk advice does not name fo.dmf: %q", bulk)
	}
	if !strings.Contains(urgent, "route urgent records to fo.odata or fo.mes") {
		t.Errorf("urgent advice: %q", urgent)
	}
}
