package opcua

import (
	"strconv"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/opcuasim"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// counterEvents returns the good-parts events the queue holds, in queue
// order.
func counterEvents(g *gateway) []pipeline.Record {
	var evs []pipeline.Record
	for _, r := range g.records(eventStream) {
		if r.Fields["rule"] == "good-parts" {
			evs = append(evs, r)
		}
	}
	return evs
}

func eventOrder(r pipeline.Record) any {
	vals, _ := r.Fields["values"].(map[string]any)
	return vals["order"]
}

// expectOrderAfterReconnect checks the good-parts events: the one before
// the outage carries P1, and the first one after it (the parts made while
// the gateway was away, counted by the read at reconnect) carries P2, the
// order that was started meanwhile, not P1 or none.
func expectOrderAfterReconnect(t *testing.T, g *gateway, before, away int64) {
	t.Helper()
	eventually(t, 10*time.Second, "the parts made while the gateway was away", func() bool { return g.increase("good-parts") == before+away })
	evs := counterEvents(g)
	if len(evs) != 2 {
		t.Fatalf("%d good-parts events, want 2 (one before the outage, one at reconnect): %v", len(evs), evs)
	}
	if o := eventOrder(evs[0]); o != "P1" {
		t.Fatalf("the event before the outage carries order %v, want P1: %v", o, evs[0].Fields)
	}
	if n := toInt(evs[1].Fields["increase"]); n != away {
		t.Fatalf("the event at reconnect has increase %d, want %d: %v", n, away, evs[1].Fields)
	}
	if o := eventOrder(evs[1]); o != "P2" {
		t.Fatalf("the event at reconnect carries order %v, want P2 (the order node was read with the counter but fed to the rules after it): %v", o, evs[1].Fields)
	}
}

// TestReadAtReconnectFeedsOrderBeforeCounter changes the order node and
// the counter while the gateway is away: the read at (re)connect feeds
// every value no rule watches (the order) before the counter, so the event
// for the parts made meanwhile carries the new order. The nodes are fed
// in name order otherwise, and "good" sorts before "order".
func TestReadAtReconnectFeedsOrderBeforeCounter(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	t.Run("gateway restart", func(t *testing.T) {
		sim := startSim(t, opcuasim.Options{})
		sim.Set(opcuasim.Good, uint32(100))
		sim.Set(opcuasim.Order, "P1")
		g := newGateway(t, t.TempDir(), noneConfig(sim))
		g.start()
		eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(100) })
		sim.Set(opcuasim.Good, uint32(103))
		eventually(t, 5*time.Second, "3 parts", func() bool { return g.increase("good-parts") == 3 })
		// Stopped (queue closed, a new source on restart): the new order
		// starts and 7 parts are made.
		g.stop()
		_ = g.store.Close()
		sim.Set(opcuasim.Order, "P2")
		sim.Set(opcuasim.Good, uint32(110))
		g.open()
		g.start()
		expectOrderAfterReconnect(t, g, 3, 7)
	})
	t.Run("server restart while disconnected", func(t *testing.T) {
		// The source keeps its rules (and the old order) across the
		// outage; the server comes back without the session, so the
		// source creates a new subscription and reads every value.
		port, err := opcuasim.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		p := newProxy(t, "127.0.0.1:"+strconv.Itoa(port))
		sim := startSim(t, opcuasim.Options{Port: port, Advertise: []string{p.addr()}})
		sim.Set(opcuasim.Good, uint32(100))
		sim.Set(opcuasim.Order, "P1")
		g := newGateway(t, t.TempDir(), "endpoint: "+endpointVia(p, "")+"\nsecurity: {policy: None, mode: None}\n"+fastTimers+lineNodes(opcuasim.DefaultNamespace))
		g.start()
		eventually(t, 10*time.Second, "the baseline", func() bool { return goodValue(g) == uint32(100) })
		sim.Set(opcuasim.Good, uint32(103))
		eventually(t, 5*time.Second, "3 parts", func() bool { return g.increase("good-parts") == 3 })
		p.setCut(true)
		eventually(t, 10*time.Second, "the source to notice the cut", func() bool { return !g.connected() })
		port2, err := opcuasim.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		sim2 := startSim(t, opcuasim.Options{Port: port2, Advertise: []string{p.addr()}})
		sim2.Set(opcuasim.Order, "P2")
		sim2.Set(opcuasim.Good, uint32(110))
		p.mu.Lock()
		p.target = "127.0.0.1:" + strconv.Itoa(port2)
		p.mu.Unlock()
		p.setCut(false)
		expectOrderAfterReconnect(t, g, 3, 7)
		if n := len(g.gaps()); n != 1 {
			t.Fatalf("%d gaps, want 1 for the lost session", n)
		}
	})
}
