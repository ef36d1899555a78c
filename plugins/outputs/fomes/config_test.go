package fomes

import (
	"testing"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/pipeline"
	_ "github.com/plantgate/plantgate/plugins/inputs/file"
)

// TestUrgentFlowsGetHighPriority checks that records of a flow declared
// urgent go first in the environment's limiter, unless the sink sets its
// priority.
func TestUrgentFlowsGetHighPriority(t *testing.T) {
	body := `gateway: {id: t}
fo:
  prod: {url: "https://fo.example", tenant_id: t, client_id: c, certificate_file: a.crt, private_key_file: a.key}
sources: {in: {type: file, path: x}}
flows:
  urgent: {from: in, key: payload.order, to: [mes, mes-low], expect: {urgent: true}}
  routine: {from: in, key: payload.order, to: mes}
sinks:
  mes: {type: fo.mes, env: prod, message_type: ProdProductionOrderStart}
  mes-low: {type: fo.mes, env: prod, message_type: ProdProductionOrderStart, priority: low}
`
	opts := app.ConfigOptions()
	opts.SkipFiles = true // the certificate files are only named
	cfg, err := config.Parse("t.yaml", []byte(body), opts)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway hands each sink the flows routed to it (app.FlowsOf).
	s := &Sink{cfg: *cfg.Sinks["mes"].Settings.(*Config), prio: d365.PriorityNormal,
		urgent: pipeline.UrgentFlows(app.FlowsOf(cfg, "sink", "mes"))}
	if p := s.priority(pipeline.Record{Stream: "mes", Flow: "urgent"}); p != d365.PriorityHigh {
		t.Errorf("urgent flow: priority %v, want high", p)
	}
	if p := s.priority(pipeline.Record{Stream: "mes", Flow: "routine"}); p != d365.PriorityNormal {
		t.Errorf("routine flow: priority %v, want normal", p)
	}
	low := &Sink{cfg: *cfg.Sinks["mes-low"].Settings.(*Config), prio: d365.PriorityLow,
		urgent: pipeline.UrgentFlows(app.FlowsOf(cfg, "sink", "mes-low"))}
	if p := low.priority(pipeline.Record{Stream: "mes-low", Flow: "urgent"}); p != d365.PriorityLow {
		t.Errorf("sink priority low: %v", p)
	}
}
