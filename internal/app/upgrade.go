package app

import (
	"context"
	"strings"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// Upgrades of the queue file beyond its schema (queue.Open migrates that):
// what an older plantgate left where this one no longer looks.
//
//   - In-doubt bookkeeping kept in a sink's state: MigrateSinkState.
//   - One stream per (flow, sink) pair for sinks whose flows now share one
//     stream (fo.mes: plantgate before the shared stream queued each flow's
//     messages in "<flow>.<sink>"): MigrateSharedStreams.
//
// Both run at start, before any runner, in that order (the in-doubt holds
// land in the old stream first and then move with its records); each is
// one queue transaction and finds nothing to do the next time.

// OldSharedStreams returns, for each sink of cfg whose flows share one
// stream, the streams of store named "<flow>.<sink>" as an older plantgate
// wrote them. Such names are never written for these sinks now, so every
// one found is left from before the upgrade, whichever flows exist now.
func OldSharedStreams(cfg *config.Config, store *queue.Store) map[string][]string {
	out := map[string][]string{}
	streams := store.Streams()
	for _, sink := range cfg.SinkOrder {
		pc := cfg.Sinks[sink]
		if pc == nil {
			continue
		}
		if f, ok := outputs.Lookup(pc.Type); !ok || !f.SharedStream {
			continue
		}
		for _, s := range streams {
			fl, ok := strings.CutSuffix(s, "."+sink)
			if ok && fl != "" && !strings.ContainsAny(fl, ".") && !strings.HasPrefix(fl, "_") {
				out[sink] = append(out[sink], s)
			}
		}
	}
	return out
}

// MigrateSharedStreams moves the records, dead letters, holds and
// idempotency keys of the old per-flow streams of shared-stream sinks
// into each sink's one stream (queue.Store.MergeStreams), so they are
// delivered, listed and released where this plantgate looks. It returns
// how many records and dead letters it moved per sink.
func MigrateSharedStreams(ctx context.Context, cfg *config.Config, store *queue.Store) (map[string]int, error) {
	out := map[string]int{}
	for sink, old := range OldSharedStreams(cfg, store) {
		suffix := "." + sink
		n, err := store.MergeStreams(ctx, flow.SharedStreamName(sink), old, func(s string) string {
			return strings.TrimSuffix(s, suffix)
		})
		if err != nil {
			return out, err
		}
		out[sink] = n
	}
	return out, nil
}

// upgradeStreams runs MigrateSharedStreams at start and logs what moved.
func (a *App) upgradeStreams() {
	moved, err := MigrateSharedStreams(context.Background(), a.cfg, a.store)
	if err != nil {
		a.log.Error().Err(err).Msg("move the streams of an older plantgate into the sinks' shared streams")
	}
	for sink, n := range moved {
		a.log.Info().Str(logging.FieldSink, sink).Int(logging.FieldCount, n).
			Str(logging.FieldStream, flow.SharedStreamName(sink)).
			Msg("records of an older plantgate's per-flow streams moved into the sink's stream")
	}
}
