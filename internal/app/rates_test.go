package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/config"
)

// TestRateSampler: with a fake clock, the rate is the records between
// the oldest and the newest sample held, the window is full only once the
// samples span it, and samples older than the window are forgotten.
func TestRateSampler(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	k := flowStream{"f", "f.s"}
	n := map[flowStream]uint64{}
	s := newRateSampler(time.Minute, func() time.Time { return now }, func() map[flowStream]uint64 {
		out := map[flowStream]uint64{}
		for k, v := range n {
			out[k] = v
		}
		return out
	})
	if o := s.rates(); o.span != 0 || o.full || len(o.perSecond) != 0 {
		t.Fatalf("before any sample: %+v", o)
	}
	// 10 s apart, 12 records each: 1.2 records/s.
	for i := 0; i <= 3; i++ {
		s.sample()
		now = now.Add(10 * time.Second)
		n[k] += 12
	}
	o := s.rates()
	if o.span != 30*time.Second || o.full || o.perSecond[k] != 1.2 {
		t.Fatalf("after 30 s: %+v", o)
	}
	for i := 0; i < 3; i++ {
		s.sample()
		now = now.Add(10 * time.Second)
		n[k] += 12
	}
	if o := s.rates(); o.span != time.Minute || !o.full || o.perSecond[k] != 1.2 {
		t.Fatalf("after 60 s: %+v", o)
	}
	// The flow stops: a minute later its rate is 0, and only the samples
	// of that minute are held.
	n[k] -= 12 // the increment after the last sample did not happen
	for i := 0; i < 6; i++ {
		s.sample()
		now = now.Add(10 * time.Second)
	}
	s.sample()
	if o := s.rates(); !o.full || o.span != time.Minute || o.perSecond[k] != 0 || len(s.samples) != 7 {
		t.Fatalf("after a quiet minute: %+v, %d samples", o, len(s.samples))
	}
}

// TestFlowDrift: a flow's observed rate is judged against its declared
// rate (more than 3x, with at least 5 records in the window) and against
// its pattern (above 5/s to OData or MES, 50/s and up to any F&O sink),
// worst first, and only once the window is full.
func TestFlowDrift(t *testing.T) {
	cfg := &config.Config{
		FlowOrder: []string{"finished", "slow", "calm", "tele", "tiny", "quiet", "both"},
		Flows: map[string]*config.Flow{
			"finished": {To: []string{"mes"}, Expect: config.Expect{Rate: "0.2/s", Urgent: true}},
			"slow":     {To: []string{"trace"}, Expect: config.Expect{Rate: "0.2/s"}},
			"calm":     {To: []string{"odata"}, Expect: config.Expect{Rate: "1/s"}},
			"tele":     {To: []string{"dmf"}, Expect: config.Expect{Rate: "20/s"}},
			"tiny":     {To: []string{"trace"}, Expect: config.Expect{Rate: "2/h"}},
			"quiet":    {To: []string{"odata"}},
			"both":     {To: []string{"odata", "dmf"}, Expect: config.Expect{Rate: "1/s"}},
		},
		Sinks: map[string]*config.Plugin{"mes": {Type: "fo.mes"}, "odata": {Type: "fo.odata"}, "dmf": {Type: "fo.dmf"}, "trace": {Type: "recorder"}},
	}
	rate := func(flow, sink string) flowStream { return flowStream{flow, streamOf(cfg, flow, sink)} }
	o := observed{span: time.Minute, full: true, perSecond: map[flowStream]float64{
		rate("finished", "mes"): 12,
		rate("slow", "trace"):   1,
		rate("calm", "odata"):   1.5,
		rate("tele", "dmf"):     60,
		rate("tiny", "trace"):   1.0 / 60,
		rate("both", "odata"):   1, rate("both", "dmf"): 1,
	}}
	got := map[string]FlowStatus{}
	for _, f := range flowStatuses(cfg, o, time.Minute) {
		got[f.Name] = f
	}
	if f := got["finished"]; f.DeclaredRate != 0.2 || f.ObservedRate != 12 || f.Pattern != "mes" || !f.Urgent || f.ObservedSeconds != 60 ||
		f.Drift != "flow finished ran at 12 records/s over the last minute to sink mes (fo.mes) (it declares 0.2/s): "+
			"above the 5 records/s F&O's throttling tolerates for one client, one request per record; route it to a fo.dmf sink" {
		t.Errorf("finished = %+v", f)
	}
	if f := got["slow"]; !strings.HasPrefix(f.Drift, "flow slow declares 0.2/s but ran at 1 records/s over the last minute, more than 3 times that; ") {
		t.Errorf("slow = %+v", f)
	}
	if f := got["tele"]; !strings.HasPrefix(f.Drift, "flow tele ran at 60 records/s over the last minute to sink dmf (fo.dmf) (it declares 20/s): that is telemetry volume, and F&O is not a telemetry store; aggregate") {
		t.Errorf("tele = %+v", f)
	}
	for _, name := range []string{"calm", "tiny", "quiet", "both"} {
		if f := got[name]; f.Drift != "" {
			t.Errorf("%s drifts: %+v", name, f)
		}
	}
	if f := got["both"]; f.ObservedRate != 1 || f.Pattern != "odata,dmf" {
		t.Errorf("both = %+v", f)
	}
	if f := got["quiet"]; f.DeclaredRate != 0 || f.Declared != "" || f.ObservedRate != 0 {
		t.Errorf("quiet = %+v", f)
	}
	if p := flowProblems(flowStatuses(cfg, o, time.Minute)); len(p) != 3 || !strings.HasPrefix(p[0], "flow finished ") {
		t.Errorf("problems = %q", p)
	}

	// Not a full window yet: rates shown, nothing judged.
	o.full, o.span = false, 20*time.Second
	for _, f := range flowStatuses(cfg, o, time.Minute) {
		if f.Drift != "" {
			t.Errorf("%s drifts before the window is full: %q", f.Name, f.Drift)
		}
	}
}

// TestStatusFlowRates runs a gateway whose flow declares 1/m and sends it
// 30 records: the status JSON and page show the flow's observed rate and
// a drift, among the problems, while the burst is within the window.
func TestStatusFlowRates(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PG_TEST_ADMIN_TOKEN", adminToken)
	body := strings.Replace(fmt.Sprintf(testConfig, dir), "    to: trace\n", "    expect: {rate: 1/m}\n    to: trace\n", 1)
	p := filepath.Join(dir, "plantgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, flows, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, flows, zerolog.Nop())
	a.rateInterval, a.rateWindow = 20*time.Millisecond, 2*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "http listening", func() bool { return a.HTTPAddr() != nil })
	base := "http://" + a.HTTPAddr().String()

	// Let the window fill before the burst, so the burst is judged.
	time.Sleep(2100 * time.Millisecond)
	var lines []string
	for i := 0; i < 30; i++ {
		lines = append(lines, fmt.Sprintf(`{"type":"finished","order":"P%d","good":1,"id":"r%d"}`, i, i))
	}
	appendLines(t, filepath.Join(dir, "in.jsonl"), lines...)

	var st Status
	eventually(t, "a drift in status", func() bool {
		_, b := get(t, base+"/api/v1/status", "")
		st = Status{}
		if err := json.Unmarshal([]byte(b), &st); err != nil {
			t.Fatalf("status: %v\n%s", err, b)
		}
		return len(st.Flows) == 1 && st.Flows[0].Drift != ""
	})
	f := st.Flows[0]
	if f.Name != "finished" || f.DeclaredRate != 1.0/60 || f.Declared != "1/m" || f.Pattern != "recorder" || f.ObservedRate < 10 || f.ObservedSeconds < 2 ||
		!strings.HasPrefix(f.Drift, "flow finished declares 1/m but ran at ") || !strings.Contains(f.Drift, " over the last 2s, more than 3 times that") {
		t.Errorf("flow = %+v", f)
	}
	found := false
	for _, p := range st.Problems {
		found = found || p == f.Drift
	}
	if !found {
		t.Errorf("problems %q lack the drift", st.Problems)
	}
	code, page := get(t, base+"/", "")
	if code != 200 || !strings.Contains(page, "<h2>Flows</h2>") || !strings.Contains(page, "<td><b>finished</b>") || !strings.Contains(page, `<td class="n">1/m</td>`) || !strings.Contains(page, f.Drift) {
		t.Errorf("status page = %d\n%s", code, page)
	}
}
