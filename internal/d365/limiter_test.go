package d365

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestLimiterPriorityOrder(t *testing.T) {
	l := NewLimiter(LimiterConfig{Ceiling: 1000, MaxConcurrent: 1})
	first, err := l.Acquire(context.Background(), PriorityNormal)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []Priority
	var wg sync.WaitGroup
	start := func(p Priority) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pm, err := l.Acquire(context.Background(), p)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, p)
			mu.Unlock()
			pm.Done(OutcomeOK, 0)
		}()
	}
	// Queue low, normal and high behind the one request in flight.
	for i, p := range []Priority{PriorityLow, PriorityNormal, PriorityHigh} {
		start(p)
		waitFor(t, func() bool { return l.Status().Waiting == i+1 })
	}
	first.Done(OutcomeOK, 0)
	wg.Wait()
	want := []Priority{PriorityHigh, PriorityNormal, PriorityLow}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("admitted %v, want %v", order, want)
		}
	}
}

func TestLimiterRateAndConcurrency(t *testing.T) {
	l := NewLimiter(LimiterConfig{Ceiling: 200, MaxConcurrent: 4})
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxIn, in := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				p, err := l.Acquire(context.Background(), PriorityNormal)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				in++
				maxIn = max(maxIn, in)
				mu.Unlock()
				mu.Lock()
				in--
				mu.Unlock()
				p.Done(OutcomeOther, 0)
			}
		}()
	}
	wg.Wait()
	// 80 requests at 200/s with a burst of 20: at least 0.3 s.
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("80 requests at 200/s took %v", el)
	}
	if maxIn > 4 {
		t.Errorf("%d in flight, max_concurrent 4", maxIn)
	}
}

func TestLimiterAdapts(t *testing.T) {
	var rates []float64
	l := NewLimiter(LimiterConfig{Ceiling: 100, Initial: 50, MaxConcurrent: 8, OnRate: func(r float64) { rates = append(rates, r) }})
	// Saturate: the limiter is the bottleneck, F&O answers OK -> the rate rises.
	deadline := time.Now().Add(5 * time.Second)
	for l.Rate() < 55 && time.Now().Before(deadline) {
		p, err := l.Acquire(context.Background(), PriorityNormal)
		if err != nil {
			t.Fatal(err)
		}
		p.Done(OutcomeOK, 0)
	}
	if r := l.Rate(); r < 55 {
		t.Fatalf("rate %.1f did not increase while saturated", r)
	}
	// A 429: multiplicative decrease and a pause for Retry-After.
	before := l.Rate()
	p1, _ := l.Acquire(context.Background(), PriorityNormal)
	p2, _ := l.Acquire(context.Background(), PriorityNormal)
	p1.Done(OutcomeThrottled, 200*time.Millisecond)
	p2.Done(OutcomeThrottled, 200*time.Millisecond) // same congestion event: no second decrease
	if r := l.Rate(); r > before*0.71 || r < before*0.69 {
		t.Errorf("rate after 429s = %.1f, want 0.7 x %.1f once", r, before)
	}
	if l.Status().PausedUntil.IsZero() {
		t.Error("no pause after a 429")
	}
	t0 := time.Now()
	p3, err := l.Acquire(context.Background(), PriorityNormal)
	if err != nil {
		t.Fatal(err)
	}
	p3.Done(OutcomeOK, 0)
	if el := time.Since(t0); el < 150*time.Millisecond {
		t.Errorf("request admitted %v after a 429 with Retry-After 200ms", el)
	}
	if l.Status().Throttled != 2 {
		t.Errorf("throttled = %d, want 2", l.Status().Throttled)
	}
}

func TestLimiterCancel(t *testing.T) {
	l := NewLimiter(LimiterConfig{Ceiling: 1000, MaxConcurrent: 1})
	p, _ := l.Acquire(context.Background(), PriorityNormal)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx, PriorityLow)
		done <- err
	}()
	waitFor(t, func() bool { return l.Status().Waiting == 1 })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled Acquire returned a permit")
	}
	if st := l.Status(); st.Waiting != 0 || st.InFlight != 1 {
		t.Errorf("after cancel: %+v", st)
	}
	p.Done(OutcomeOK, 0)
	p.Done(OutcomeOK, 0) // twice is harmless
	if st := l.Status(); st.InFlight != 0 {
		t.Errorf("in flight %d after Done", st.InFlight)
	}
}

func TestBreaker(t *testing.T) {
	now := time.Unix(1000, 0)
	var states []BreakerState
	b := NewBreaker(BreakerConfig{Failures: 3, Delay: time.Second, MaxDelay: 4 * time.Second, Now: func() time.Time { return now },
		OnState: func(s BreakerState) { states = append(states, s) }})
	for range 2 {
		b.Failure(false, "connection refused")
	}
	if ok, _, _ := b.Allow(); !ok {
		t.Fatal("open after 2 failures")
	}
	b.Success(false)
	for range 3 {
		b.Failure(false, "connection refused")
	}
	ok, _, wait := b.Allow()
	if ok || wait != time.Second {
		t.Fatalf("Allow = %v, %v after 3 failures; want refused for 1s", ok, wait)
	}
	now = now.Add(time.Second)
	ok, probe, _ := b.Allow()
	if !ok || !probe {
		t.Fatalf("no probe after the delay")
	}
	if ok, _, _ := b.Allow(); ok {
		t.Fatal("a second call during the probe")
	}
	b.Failure(true, "still down")
	if _, _, wait := b.Allow(); wait != 2*time.Second {
		t.Errorf("delay after a failed probe = %v, want 2s", wait)
	}
	now = now.Add(2 * time.Second)
	_, probe, _ = b.Allow()
	b.Success(probe)
	if b.State() != BreakerClosed || b.Status().LastError != "still down" {
		t.Errorf("status %+v", b.Status())
	}
	want := []BreakerState{BreakerOpen, BreakerHalfOpen, BreakerOpen, BreakerHalfOpen, BreakerClosed}
	if len(states) != len(want) {
		t.Fatalf("states %v, want %v", states, want)
	}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("states %v, want %v", states, want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		<-tick.C
	}
}
