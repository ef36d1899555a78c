package flow

import (
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/pipeline"
)

func compileOne(t *testing.T, f *config.Flow) *Flow {
	t.Helper()
	f.From, f.To = "mes", []string{"out"}
	cfg := &config.Config{Flows: map[string]*config.Flow{"f": f}, FlowOrder: []string{"f"}}
	flows, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return flows[0]
}

// TestTry: what plantgate flow test says about a message: the part of a
// && chain that is false, a when that gives no condition, a key that gives
// no value, a decode failure; and the record when it matches.
func TestTry(t *testing.T) {
	fl := compileOne(t, &config.Flow{
		When: config.Expr{Src: `topic == "mes/l3/finished" and payload.good > 0 && payload.item != nil`},
		Key:  config.Expr{Src: "payload.order"}, ID: config.Expr{Src: "payload.msg_id"},
		Map: []config.MapField{{Name: "Qty", Expr: config.Expr{Src: "payload.good * 2"}}},
	})
	msg := func(payload map[string]any) pipeline.Message {
		return pipeline.Message{Payload: payload, Meta: map[string]any{"topic": "mes/l3/finished"}, Time: time.Unix(0, 0)}
	}
	tr := fl.Try("mes", msg(map[string]any{"order": "P1", "msg_id": "m1", "good": 3, "item": "FG"}))
	if !tr.Matched || tr.Record.Key != "P1" || tr.Record.ID != "m1" || tr.Record.Fields["Qty"] != 6 {
		t.Errorf("matching message: %+v", tr)
	}
	tr = fl.Try("mes", msg(map[string]any{"order": "P1", "good": 0, "item": "FG"}))
	if tr.Matched || !strings.HasSuffix(tr.Why, "(the part payload.good > 0 is false)") {
		t.Errorf("good 0: %+v", tr)
	}
	tr = fl.Try("mes", msg(map[string]any{"order": "P1", "good": 2}))
	if tr.Matched || !strings.HasSuffix(tr.Why, "(the part payload.item != nil is false)") {
		t.Errorf("no item: %+v", tr)
	}
	tr = fl.Try("mes", msg(map[string]any{"good": 2, "item": "FG"}))
	if tr.Matched || tr.Err == nil || !strings.Contains(tr.Err.Error(), `key: expression "payload.order" gave no value`) {
		t.Errorf("no order: %+v", tr)
	}
	if tr := fl.Try("mes", pipeline.Message{DecodeErr: errTest}); tr.Err == nil || !strings.HasPrefix(tr.Err.Error(), "decode: ") {
		t.Errorf("decode failure: %+v", tr)
	}

	// A when whose type is only known at run time: the message says it is
	// not a condition, for flow test and for the dead letter alike.
	flag := compileOne(t, &config.Flow{When: config.Expr{Src: "payload.flag"}})
	tr = flag.Try("mes", msg(map[string]any{"flag": 5}))
	if tr.Err == nil || !strings.Contains(tr.Err.Error(), "gives int, not true or false") {
		t.Errorf("when giving a number: %+v", tr)
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("bad json")
