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

// startFO builds the F&O registry and moves in-doubt bookkeeping left by
// an older plantgate (sink state) into the queue.
func (a *App) startFO() {
	a.fo = d365.NewRegistry(a.cfg.FO, d365.Options{Log: a.log, Metrics: d365.NewMetrics(a.reg)})
	for _, name := range a.cfg.SinkOrder {
		n, err := MigrateSinkState(context.Background(), a.store, name)
		if err != nil {
			a.log.Warn().Err(err).Str(logging.FieldSink, name).Msg("migrate in-doubt state")
			continue
		}
		if n > 0 {
			a.log.Info().Str(logging.FieldSink, name).Int(logging.FieldCount, n).Msg("in-doubt state of an older plantgate moved into the queue")
		}
	}
	a.upgradeStreams()
}

// stopFO closes the environments' idle connections once the sinks are done.
func (a *App) stopFO() {
	if a.fo != nil {
		a.fo.CloseIdleConnections()
	}
}

// resolve implements pipeline.Env.Resolve.
func (a *App) resolve(kind, name string) (any, error) {
	if kind == ResolveSink {
		return a.resolveSink(name) // receivers.go
	}
	if a.fo == nil {
		return nil, fmt.Errorf("resolve %s %s: not available", kind, name)
	}
	return a.fo.Resolve(kind, name)
}

// MigrateSinkState moves a sink's in-doubt bookkeeping as an older
// plantgate kept it (markers "m/<stream>/<seq>" and the "held" index in the
// sink's state) into the queue's marks and holds, and deletes the old
// state in the same step, so it runs once. Markers of records no longer
// queued are dropped. It returns how many entries were moved.
func MigrateSinkState(ctx context.Context, store *queue.Store, sink string) (int, error) {
	scope := flow.SinkStateScope(sink)
	names, err := store.ListState(scope)
	if err != nil || len(names) == 0 {
		return 0, err
	}
	var dels []queue.StateWrite
	var marks []queue.MarkWrite
	var holds []queue.HoldWrite
	for name, v := range names {
		if name == d365.HeldIndexName {
			idx, err := d365.DecodeHeldIndex(v)
			if err != nil {
				return 0, fmt.Errorf("sink %s: %w", sink, err)
			}
			for _, h := range idx.Records {
				h.Sink = sink
				holds = append(holds, queue.HoldWrite{Stream: h.Stream, Hold: h.Hold})
			}
			dels = append(dels, queue.StateWrite{Scope: scope, Name: name, Delete: true})
			continue
		}
		stream, seq, ok := d365.ParseLegacyMarkerName(name)
		if !ok {
			continue
		}
		marks = append(marks, queue.MarkWrite{Stream: stream, Seq: seq, Value: v})
		dels = append(dels, queue.StateWrite{Scope: scope, Name: name, Delete: true})
	}
	if len(dels) == 0 {
		return 0, nil
	}
	return len(marks) + len(holds), store.Import(ctx, marks, holds, dels...)
}

// sinkProblem is a sink's reason to be degraded.
type sinkProblem struct{ sink, why string }

// inDoubt lists the records F&O sinks hold, and a problem per sink that
// holds some.
func (a *App) inDoubt() ([]InDoubtView, []sinkProblem) {
	var views []InDoubtView
	var problems []sinkProblem
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
		problems = append(problems, sinkProblem{n, fmt.Sprintf("sink %s holds %d records in doubt and %d parked behind them: check F&O, then release or drop them (plantgate queue in-doubt)", n, held, parked)})
	}
	return views, problems
}
