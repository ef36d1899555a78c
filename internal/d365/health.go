package d365

import (
	"fmt"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// Health is what an F&O sink shows in readiness and status besides its
// environment: a 403 answer, which makes the sink not ready until a later
// request succeeds, the time of the last success, and the records its
// Tracker holds in doubt. The zero value is ready to use.
type Health struct {
	mu        sync.Mutex
	forbidden string
	lastOK    time.Time
}

// Succeeded records a delivered record.
func (h *Health) Succeeded() {
	h.mu.Lock()
	h.forbidden, h.lastOK = "", time.Now()
	h.mu.Unlock()
}

// Failed records a permanent failure; only a 403 changes the health.
func (h *Health) Failed(err error) {
	if !IsForbidden(err) {
		return
	}
	h.mu.Lock()
	h.forbidden = err.Error()
	h.mu.Unlock()
}

// Check returns a pipeline.ErrNotReady error while F&O refuses the sink's
// requests; what names them ("messages", "writes").
func (h *Health) Check(what string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.forbidden != "" {
		return fmt.Errorf("%w: F&O refused the %s (403): %s", pipeline.ErrNotReady, what, h.forbidden)
	}
	return nil
}

// Report adds the health to a sink's status map: healthy/forbidden, the last
// success under lastKey, and up to 20 records held in doubt by tr.
func (h *Health) Report(st map[string]any, lastKey string, tr *Tracker) {
	held, parked := tr.Counts()
	st["held"], st["parked"] = held, parked
	h.mu.Lock()
	if h.forbidden != "" {
		st["healthy"] = false
		st["forbidden"] = h.forbidden
	}
	if !h.lastOK.IsZero() {
		st[lastKey] = h.lastOK.UTC()
	}
	h.mu.Unlock()
	if held+parked > 0 {
		list := tr.Held()
		if len(list) > 20 {
			list = list[:20]
		}
		st["in_doubt"] = list
	}
}
