// Package backoff computes capped exponential delays with full jitter and
// waits for them without time.Sleep, so a cancelled context ends the wait.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff: attempt n (from 1) waits a random
// duration in [d/2, d] where d = min(Max, Initial * 2^(n-1)). Half jitter
// keeps retries spread while never retrying immediately.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay returns the wait before retry attempt n (n >= 1).
func (p Policy) Delay(n int) time.Duration {
	if p.Initial <= 0 {
		p.Initial = 500 * time.Millisecond
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	d := p.Initial
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	if d > p.Max {
		d = p.Max
	}
	half := d / 2
	return half + rand.N(half+1)
}

// Wait blocks for d or until ctx is done, and returns ctx.Err() in the latter case.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
