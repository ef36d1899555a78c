package pipeline

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestForEachStopsAKeyAfterARetryableFailure(t *testing.T) {
	batch := []Record{{Key: "A", Seq: 1}, {Key: "B", Seq: 2}, {Key: "A", Seq: 3}, {Key: "C", Seq: 4}, {Key: "B", Seq: 5}}
	var called []uint64
	err := ForEach(context.Background(), batch, func(i int, r Record) error {
		called = append(called, r.Seq)
		switch r.Seq {
		case 1:
			return errors.New("timeout")
		case 4:
			return Permanent(errors.New("Write failed"))
		}
		return nil
	})
	if fmt.Sprint(called) != "[1 2 4 5]" {
		t.Fatalf("called %v, want [1 2 4 5] (A's second record held back)", called)
	}
	var pe *PartialError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *PartialError", err)
	}
	if fmt.Sprint(pe.Accepted) != "[1 4]" || len(pe.Rejected) != 1 || pe.Rejected[3] == nil {
		t.Fatalf("partial = %+v", pe)
	}
}

func TestForEachOutcomes(t *testing.T) {
	one := []Record{{Key: "A"}}
	if err := ForEach(context.Background(), one, func(int, Record) error { return nil }); err != nil {
		t.Fatalf("all ok: %v", err)
	}
	if err := ForEach(context.Background(), one, func(int, Record) error { return Permanent(errors.New("bad")) }); !IsPermanent(err) {
		t.Fatalf("single rejected: %v, want permanent", err)
	}
	if err := ForEach(context.Background(), one, func(int, Record) error { return errors.New("down") }); err == nil || IsPermanent(err) {
		t.Fatalf("single transient: %v", err)
	}
	two := []Record{{Key: "A"}, {Key: "B"}}
	err := ForEach(context.Background(), two, func(i int, _ Record) error {
		if i == 0 {
			return Throttle(time.Second, errors.New("429"))
		}
		return nil
	})
	var te *ThrottleError
	if !errors.As(err, &te) || te.After != time.Second {
		t.Fatalf("throttle stops the loop and is returned: %v", err)
	}
}

func ExampleForEach() {
	batch := []Record{{Key: "P1", Seq: 1}, {Key: "P1", Seq: 2}, {Key: "P2", Seq: 3}}
	err := ForEach(context.Background(), batch, func(_ int, r Record) error {
		if r.Seq == 1 {
			return errors.New("connection reset") // P1's next record must wait
		}
		return nil
	})
	var pe *PartialError
	errors.As(err, &pe)
	fmt.Println(pe.Accepted)
	// Output: [2]
}
