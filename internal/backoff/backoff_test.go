package backoff

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestDelayGrowsAndCaps(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{{1, 50 * time.Millisecond, 100 * time.Millisecond}, {2, 100 * time.Millisecond, 200 * time.Millisecond}, {4, 400 * time.Millisecond, 800 * time.Millisecond}, {10, 500 * time.Millisecond, time.Second}, {1000, 500 * time.Millisecond, time.Second}} {
		for i := 0; i < 200; i++ {
			if d := p.Delay(tc.n); d < tc.min || d > tc.max {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", tc.n, d, tc.min, tc.max)
			}
		}
	}
}

func TestWaitCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wait(ctx, time.Hour); err == nil {
		t.Fatal("Wait on a cancelled ctx returned nil")
	}
}

func ExamplePolicy_Delay() {
	p := Policy{Initial: time.Second, Max: 30 * time.Second}
	d := p.Delay(3) // between 2s and 4s
	fmt.Println(d >= 2*time.Second && d <= 4*time.Second)
	// Output: true
}
