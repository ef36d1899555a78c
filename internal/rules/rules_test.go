package rules

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)

func sample(name string, v any, sec int) Sample {
	return Sample{Name: name, Value: v, Good: true, Time: t0.Add(time.Duration(sec) * time.Second)}
}

// store is a committed state map: the test commits a state only with its
// events, the way a source's EmitWithState does.
type store map[string][]byte

func (s store) load(name string) ([]byte, error) { return s[name], nil }

func (s store) commit(ws []StateWrite) {
	for _, w := range ws {
		s[w.Name] = w.Value
	}
}

func mustEngine(t *testing.T, st store, rs ...Rule) *Engine {
	t.Helper()
	e, err := New(rs, st.load)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func total(evs []Event) float64 {
	var n float64
	for _, e := range evs {
		n += e.Increase
	}
	return n
}

func TestCounterIncreaseCarriesOtherValues(t *testing.T) {
	st := store{}
	e := mustEngine(t, st, Rule{Name: "good", Kind: KindCounter, Value: "good_count"})
	e.Observe(sample("order", "P000123", 0))
	evs, ws, errs := e.Observe(sample("good_count", int32(100), 1))
	if len(evs) != 0 || len(errs) != 0 || len(ws) != 1 {
		t.Fatalf("first value: events %v errs %v states %d; want only the baseline state", evs, errs, len(ws))
	}
	st.commit(ws)
	evs, ws, _ = e.Observe(sample("good_count", int32(110), 2))
	st.commit(ws)
	if len(evs) != 1 || evs[0].Increase != 10 || evs[0].Seq != 1 {
		t.Fatalf("events %+v, want one increase of 10", evs)
	}
	if evs[0].Values["order"] != "P000123" {
		t.Fatalf("event values %v lack the order", evs[0].Values)
	}
	p := evs[0].Payload()
	if p["increase"] != int64(10) || p["event_id"] != "good/1" {
		t.Fatalf("payload %v", p)
	}
}

func TestCounterResumesFromCommittedBaseline(t *testing.T) {
	st := store{}
	r := Rule{Name: "good", Kind: KindCounter, Value: "c"}
	e := mustEngine(t, st, r)
	for i, v := range []int{5, 7, 12} {
		_, ws, _ := e.Observe(sample("c", v, i))
		st.commit(ws)
	}
	// An event computed but never committed (power cut before the commit)
	// is counted again after the restart, not lost.
	e.Observe(sample("c", 20, 3))
	e2 := mustEngine(t, st, r)
	evs, _, _ := e2.Observe(sample("c", 31, 4)) // parts made while the gateway was down
	if total(evs) != 19 {
		t.Fatalf("after restart: increase %v, want 31-12 = 19", total(evs))
	}
	if evs[0].Seq != 3 {
		t.Fatalf("seq %d, want 3 (two committed events before)", evs[0].Seq)
	}
}

func TestCounterWrapAndReset(t *testing.T) {
	st := store{}
	e := mustEngine(t, st, Rule{Name: "w", Kind: KindCounter, Value: "c", WrapAt: 65536})
	e.Observe(sample("c", 65530, 0))
	evs, _, errs := e.Observe(sample("c", 4, 1))
	if len(evs) != 1 || evs[0].Increase != 10 || !evs[0].Wrapped || len(errs) != 0 {
		t.Fatalf("wrap: %+v %v", evs, errs)
	}
	evs, _, errs = e.Observe(sample("c", 2, 2)) // low half to lower: a reset
	var re *RuleError
	if len(evs) != 1 || !evs[0].Reset || evs[0].Increase != 2 || len(errs) != 1 || !errors.As(errs[0], &re) {
		t.Fatalf("reset: %+v %v", evs, errs)
	}
}

func TestBadQualityAndBadTypesNeverCount(t *testing.T) {
	st := store{}
	e := mustEngine(t, st, Rule{Name: "g", Kind: KindCounter, Value: "c"}, Rule{Name: "up", Kind: KindRising, Value: "run"})
	e.Observe(sample("c", 10, 0))
	bad := sample("c", 1000, 1)
	bad.Good = false
	if evs, ws, _ := e.Observe(bad); len(evs)+len(ws) != 0 {
		t.Fatalf("bad quality counted: %v", evs)
	}
	if _, _, errs := e.Observe(sample("c", "eleven", 2)); len(errs) != 1 {
		t.Fatalf("a string counter value gave no error")
	}
	evs, _, _ := e.Observe(sample("c", 11, 3))
	if total(evs) != 1 {
		t.Fatalf("increase %v after bad samples, want 1", total(evs))
	}
	if _, _, errs := e.Observe(sample("run", "yes", 4)); len(errs) != 1 {
		t.Fatal("a string edge value gave no error")
	}
}

func TestEdgesChangesAndHeld(t *testing.T) {
	e := mustEngine(t, store{},
		Rule{Name: "up", Kind: KindRising, Value: "run"},
		Rule{Name: "down", Kind: KindFalling, Value: "run"},
		Rule{Name: "stopped", Kind: KindChange, Value: "state", To: "Stopped"},
		Rule{Name: "left-setup", Kind: KindChange, Value: "state", From: "Setup"},
		Rule{Name: "long-run", Kind: KindHeld, Value: "state", Equals: "Running", For: time.Minute},
	)
	names := func(evs []Event) (out []string) {
		for _, e := range evs {
			out = append(out, e.Rule)
		}
		return out
	}
	var got []string
	for i, s := range []Sample{sample("run", false, 0), sample("run", true, 1), sample("run", true, 2), sample("run", false, 3),
		sample("state", "Setup", 4), sample("state", "Running", 5), sample("state", "Stopped", 6), sample("state", "Running", 7)} {
		evs, _, errs := e.Observe(s)
		if len(errs) > 0 {
			t.Fatalf("sample %d: %v", i, errs)
		}
		got = append(got, names(evs)...)
	}
	want := []string{"up", "down", "left-setup", "stopped"}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	if evs := e.Tick(t0.Add(30 * time.Second)); len(evs) != 0 {
		t.Fatalf("held fired early: %v", evs)
	}
	evs := e.Tick(t0.Add(68 * time.Second))
	if len(evs) != 1 || evs[0].Rule != "long-run" {
		t.Fatalf("held: %v", evs)
	}
	if evs := e.Tick(t0.Add(200 * time.Second)); len(evs) != 0 {
		t.Fatalf("held fired twice: %v", evs)
	}
}

func TestValidate(t *testing.T) {
	for _, r := range []Rule{{Name: "x", Kind: "count", Value: "v"}, {Name: "x", Kind: KindHeld, Value: "v"}, {Name: "x", Kind: KindRising}, {Name: "x", Kind: KindRising, Value: "v", WrapAt: 10}} {
		if r.Validate() == nil {
			t.Errorf("%+v validated", r)
		}
	}
}
