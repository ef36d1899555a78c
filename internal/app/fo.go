package app

import (
	"context"
	"fmt"
	"sort"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/queue"
)

// F&O wiring: one d365.Registry per run builds the environments of the
// fo: section on first use, so every sink naming an environment shares its
// token cache, adaptive limiter and circuit breaker (pipeline.Env.Resolve
// with kind "fo").

// inDoubtTracker is implemented by F&O sinks that hold records whose
// delivery is in doubt.
type inDoubtTracker interface {
	Tracker() *d365.Tracker
}

// InDoubtView is a held or parked record as status output shows it.
type InDoubtView struct {
	Sink string `json:"sink"`
	d365.HeldRecord
}

// startFO builds the F&O registry and prunes in-flight markers of records
// that are no longer queued (acked before the gateway stopped).
func (a *App) startFO() {
	a.fo = d365.NewRegistry(a.cfg.FO, d365.Options{Log: logging.Component(a.log, "fo", "", ""), Metrics: d365.NewMetrics(a.reg)})
	for _, name := range a.cfg.SinkOrder {
		n, err := PruneMarkers(context.Background(), a.store, name)
		if err != nil {
			a.log.Warn().Err(err).Str(logging.FieldSink, name).Msg("prune in-flight markers")
			continue
		}
		if n > 0 {
			a.log.Debug().Str(logging.FieldSink, name).Int(logging.FieldCount, n).Msg("in-flight markers of acked records pruned")
		}
	}
}

// stopFO closes the environments' idle connections once the sinks are done.
func (a *App) stopFO() {
	if a.fo != nil {
		a.fo.CloseIdleConnections()
	}
}

// resolve implements pipeline.Env.Resolve.
func (a *App) resolve(kind, name string) (any, error) {
	if a.fo == nil {
		return nil, fmt.Errorf("resolve %s %s: not available", kind, name)
	}
	return a.fo.Resolve(kind, name)
}

// PruneMarkers deletes the in-flight markers of sink whose records are no
// longer in their stream (acked or dead-lettered before the gateway
// stopped). Markers of records still queued stay: they tell the sink on
// the next attempt that the record may have reached F&O. It returns how
// many were deleted. The gateway calls it at start; it needs the queue
// open and no sink running.
func PruneMarkers(ctx context.Context, store *queue.Store, sink string) (int, error) {
	names, err := store.ListState(flow.SinkStateScope(sink))
	if err != nil {
		return 0, err
	}
	var dels []queue.StateWrite
	for name := range names {
		stream, seq, ok := d365.ParseMarkerName(name)
		if !ok {
			continue
		}
		if seq == 0 {
			continue
		}
		recs, err := store.List(stream, seq-1, 1)
		if err == nil && len(recs) == 1 && recs[0].Seq == seq {
			continue
		}
		dels = append(dels, queue.StateWrite{Scope: flow.SinkStateScope(sink), Name: name, Delete: true})
	}
	if len(dels) == 0 {
		return 0, nil
	}
	return len(dels), store.PutState(ctx, dels...)
}

// inDoubt lists the records F&O sinks hold, and the problems to show.
func (a *App) inDoubt() ([]InDoubtView, []string) {
	var views []InDoubtView
	var problems []string
	names := make([]string, 0, len(a.sinks))
	for n := range a.sinks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t, ok := a.sinks[n].(inDoubtTracker)
		if !ok || t.Tracker() == nil {
			continue
		}
		held, parked := t.Tracker().Counts()
		if held+parked == 0 {
			continue
		}
		for _, h := range t.Tracker().Held() {
			views = append(views, InDoubtView{Sink: n, HeldRecord: h})
		}
		problems = append(problems, fmt.Sprintf("sink %s holds %d records in doubt and %d parked behind them: check F&O, then release or drop them (plantgate queue in-doubt)", n, held, parked))
	}
	if a.fo != nil {
		for _, e := range a.fo.Envs() {
			if st := e.Breaker().Status(); st.State != d365.BreakerClosed.String() {
				problems = append(problems, fmt.Sprintf("F&O environment %s is unreachable (circuit %s since %s): %s", e.Name(), st.State, st.Since.Format("15:04:05Z"), st.LastError))
			}
		}
	}
	return views, problems
}
