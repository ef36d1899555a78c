package pipeline

import (
	"context"
	"fmt"
	"testing"
)

type nopSink struct{}

func (nopSink) Write(context.Context, []Record) error { return nil }

func TestRegistry(t *testing.T) {
	r := NewRegistry[SinkFactory]("sink")
	f := SinkFactory{Type: "b", NewConfig: func() any { return &struct{ X int }{1} }, New: func(any, Env) (Sink, error) { return nopSink{}, nil }}
	r.Add(f)
	f.Type = "a"
	r.Add(f)
	if got := fmt.Sprint(r.Types()); got != "[a b]" {
		t.Fatalf("types = %s, want [a b]", got)
	}
	if c, ok := r.NewConfig("a"); !ok || c == nil {
		t.Fatal("NewConfig(a) missing")
	}
	if _, ok := r.NewConfig("zz"); ok {
		t.Fatal("NewConfig of an unknown type succeeded")
	}
	for _, bad := range []SinkFactory{f, {Type: "c"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Add(%q) did not panic", bad.Type)
				}
			}()
			r.Add(bad)
		}()
	}
}
