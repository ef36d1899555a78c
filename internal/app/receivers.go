package app

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// ResolveSink is the pipeline.Env.Resolve kind that hands a plugin
// another sink of the gateway by name (fo.outcomes finds its fo.mes sink).
const ResolveSink = "sink"

// EventsPrefix is where sources receiving on the gateway's listener
// (pipeline.HTTPReceiver) are mounted.
const EventsPrefix = "/api/v1/events/"

// mountReceivers mounts the routes of sources that receive over HTTP. The
// routes authenticate their callers themselves (the sender is F&O, not an
// operator).
func (a *App) mountReceivers(mux *http.ServeMux) {
	names := make([]string, 0, len(a.sources))
	for n := range a.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	seen := map[string]string{}
	for _, n := range names {
		rc, ok := a.sources[n].(pipeline.HTTPReceiver)
		if !ok {
			continue
		}
		for p, h := range rc.Routes() {
			if other, dup := seen[p]; dup {
				a.log.Error().Str("path", EventsPrefix+p).Str("source", n).Str("other", other).Msg("two sources receive on one path; the second is not mounted")
				continue
			}
			seen[p] = n
			mux.Handle(EventsPrefix+p, h)
		}
	}
}

// resolveSink returns the sink called name.
func (a *App) resolveSink(name string) (any, error) {
	a.mu.Lock()
	s, ok := a.sinks[name]
	a.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no sink %q is running", name)
	}
	return s, nil
}

// settleHold implements pipeline.Env.Settle: it settles one held record
// of stream while that stream's runner is paused, as an operator's
// release or drop does (releaseStream).
func (a *App) settleHold(ctx context.Context, stream string, seq uint64, delivered bool, reason string) error {
	st, err := a.store.RecordState(stream, seq, "")
	if err != nil {
		return err
	}
	if st.Hold == nil || st.Hold.State != pipeline.HoldInDoubt {
		return a.purgeDelivered(ctx, stream, seq, delivered, reason)
	}
	for _, rn := range a.runners {
		if rn.Stream() != stream {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resume, err := rn.Quiesce(qctx)
		cancel()
		if err != nil {
			return fmt.Errorf("pause delivery of %s to settle seq %d: %w", stream, seq, err)
		}
		defer resume()
	}
	if _, err := a.store.Release(ctx, stream, []uint64{seq}, true, reason); err != nil {
		return err
	}
	return a.purgeDelivered(ctx, stream, seq, delivered, reason)
}

// purgeDelivered removes the dead letter a delivered record's drop left
// (it is delivered, nothing to replay).
func (a *App) purgeDelivered(ctx context.Context, stream string, seq uint64, delivered bool, reason string) error {
	if !delivered {
		return nil
	}
	dead, err := a.store.ListDead(stream, 0, 0)
	if err != nil {
		return err
	}
	for _, d := range dead {
		if d.OrigSeq == seq && d.Reason == reason {
			_, err := a.store.Purge(ctx, stream, queue.PurgeDead, []uint64{d.Seq})
			return err
		}
	}
	return nil
}
