package app

import (
	"fmt"
	"sort"
	"time"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// Lifecycle phases of a gateway (Health.State while not running).
const (
	phaseStarting  = "starting"
	phaseRunning   = "running"
	phaseReloading = "reloading"
	phaseStopping  = "stopping"
)

// Health states. Ready is true only in StateReady and StateDegraded.
const (
	StateStarting  = "starting"
	StateReady     = "ready"
	StateDegraded  = "degraded"
	StateNotReady  = "not_ready"
	StateReloading = "reloading"
	StateStopping  = "stopping"
)

// Health is the gateway's one account of its health. /readyz, the status
// JSON, the status page and the plantgate_ready and plantgate_component_up
// metrics all read it, so they cannot disagree.
//
// Ready means the gateway runs, the queue is usable and not full, every
// sink can deliver (its peer answered the last probe, its F&O environment
// has a token and a closed circuit) and every source is connected. A
// blocking reason clears Ready; the other reasons (throttling, records in
// doubt, dead letters, a failed reload) make a ready gateway "degraded".
type Health struct {
	State      string            `json:"state"`
	Ready      bool              `json:"ready"`
	Reasons    []HealthReason    `json:"reasons,omitempty"`
	Components []ComponentHealth `json:"components"`
}

// HealthReason is one thing that keeps the gateway from being plainly
// ready: which component, whether it blocks readiness, and why.
type HealthReason struct {
	Component string `json:"component"`
	Blocking  bool   `json:"blocking"`
	Why       string `json:"why"`
}

// ComponentHealth is a source, sink, F&O environment or the queue.
type ComponentHealth struct {
	Kind  string    `json:"kind"` // source, sink, fo, queue
	Name  string    `json:"name"`
	Type  string    `json:"type,omitempty"`
	Up    bool      `json:"up"`
	State string    `json:"state"` // up, degraded, down
	Since time.Time `json:"since,omitzero"`
	Why   string    `json:"why,omitempty"`
}

// foEnvUser is implemented by sinks that deliver through an F&O
// environment.
type foEnvUser interface{ FOEnv() *d365.Env }

type healthBuilder struct {
	h     Health
	index map[string]int
}

func (b *healthBuilder) component(kind, name, typ string, up bool, since time.Time, why string) {
	state := "up"
	if !up {
		state = "down"
	}
	b.index[kind+"/"+name] = len(b.h.Components)
	b.h.Components = append(b.h.Components, ComponentHealth{Kind: kind, Name: name, Type: typ, Up: up, State: state, Since: since, Why: why})
	if !up {
		b.h.Reasons = append(b.h.Reasons, HealthReason{Component: kind + " " + name, Blocking: true, Why: why})
	}
}

// down marks a component down (blocking) for why, unless it is already.
func (b *healthBuilder) down(kind, name, why string) {
	i, ok := b.index[kind+"/"+name]
	if !ok {
		return
	}
	c := &b.h.Components[i]
	if !c.Up {
		return
	}
	c.Up, c.State, c.Why = false, "down", why
	b.h.Reasons = append(b.h.Reasons, HealthReason{Component: kind + " " + name, Blocking: true, Why: why})
}

// degraded notes a non-blocking reason; a named component that is up
// becomes "degraded".
func (b *healthBuilder) degraded(kind, name, why string) {
	comp := kind
	if name != "" {
		comp += " " + name
	}
	if i, ok := b.index[kind+"/"+name]; ok {
		c := &b.h.Components[i]
		if c.Up && c.State == "up" {
			c.State, c.Why = "degraded", why
		}
	}
	b.h.Reasons = append(b.h.Reasons, HealthReason{Component: comp, Why: why})
}

// Health computes the gateway's health now.
func (a *App) Health() Health { return a.health(a.flowStatuses()) }

// flowStatuses is each flow's declared and observed rate now (nil before
// the rates are kept).
func (a *App) flowStatuses() []FlowStatus {
	if a.rates == nil {
		return nil
	}
	return flowStatuses(a.cfg, a.rates.rates(), a.rateWindow)
}

// health is Health with the flows' rates given, so a status shows the
// same drift in its flows and in its problems.
func (a *App) health(flows []FlowStatus) Health {
	b := &healthBuilder{index: map[string]int{}}
	a.mu.Lock()
	phase, reloadErr := a.phase, a.reloadErr
	a.mu.Unlock()

	// The queue.
	qUp, qWhy := true, ""
	var qs queue.Stats
	if a.store != nil {
		qs, _ = a.store.Stats()
	}
	if a.store == nil {
		qUp, qWhy = false, "queue not open"
	} else if err := a.store.Healthy(); err != nil {
		qUp, qWhy = false, "queue not usable: "+err.Error()
	} else if qs.Full {
		qUp, qWhy = false, "queue is full: sources pause and do not acknowledge upstream until records are delivered"
	}
	b.component("queue", "queue", "bbolt", qUp, time.Time{}, qWhy)

	// F&O environments: a refused or unreachable identity platform and an
	// open circuit block every sink using the environment.
	envDown := map[*d365.Env]string{}
	if a.fo != nil {
		for _, e := range a.fo.Envs() {
			up, why := true, ""
			st := e.Status()
			bs := e.Breaker().Status()
			if tokErr, _ := st["token_error"].(string); tokErr != "" {
				up, why = false, "no access token from the identity platform: "+tokErr
			} else if bs.State == d365.BreakerOpen.String() {
				up, why = false, fmt.Sprintf("F&O unreachable: circuit open since %s, next probe at %s: %s",
					bs.Since.UTC().Format("15:04:05Z"), bs.NextProbe.UTC().Format("15:04:05Z"), bs.LastError)
			}
			b.component("fo", e.Name(), "", up, bs.Since, why)
			if !up {
				envDown[e] = why
			}
			if ls := e.Limiter().Status(); !ls.PausedUntil.IsZero() {
				b.degraded("fo", e.Name(), "F&O asked to slow down (429): requests wait until "+ls.PausedUntil.UTC().Format("15:04:05Z"))
			}
		}
	}

	// Sources and sinks, as their last probe or run left them.
	comps := a.componentList()
	for _, c := range comps {
		b.component(c.Kind, c.Name, c.Type, c.Up, c.Since, c.LastError)
	}
	for _, c := range comps {
		switch c.Kind {
		case "source":
			if sr, ok := c.plugin.(pipeline.StatusReporter); ok {
				st := sr.Status()
				if conn, ok := st["connected"].(bool); ok && !conn {
					why := "not connected"
					if e, _ := st["last_error"].(string); e != "" {
						why += ": " + e
					}
					b.down("source", c.Name, why)
				}
			}
		case "sink":
			if u, ok := c.plugin.(foEnvUser); ok && u.FOEnv() != nil {
				if why, bad := envDown[u.FOEnv()]; bad {
					b.down("sink", c.Name, fmt.Sprintf("F&O environment %s: %s", u.FOEnv().Name(), why))
				}
			}
		}
	}
	for _, r := range a.runners {
		if d := r.ThrottledFor(); d > 0 {
			b.degraded("sink", a.sinkOfStream(r.Stream()), fmt.Sprintf("stream %s throttled by F&O until %s", r.Stream(), time.Now().Add(d).UTC().Format("15:04:05Z")))
		}
	}
	for _, c := range comps {
		if br, ok := c.plugin.(pipeline.BatchReporter); ok && c.Kind == "sink" {
			for _, bt := range br.Batches() {
				if bt.Stalled {
					b.degraded("sink", c.Name, fmt.Sprintf("the import %s of batch %s is still running past import_deadline (F&O says %s); it is held, never imported again: check it in F&O's Data management workspace",
						bt.ExecutionID, bt.ID, bt.Status))
				}
			}
		}
	}
	for _, c := range comps {
		if cr, ok := c.plugin.(pipeline.ConcernReporter); ok {
			for _, why := range cr.Concerns() {
				b.degraded(c.Kind, c.Name, why)
			}
		}
	}
	_, inDoubt := a.inDoubt()
	for _, d := range inDoubt {
		b.degraded("sink", d.sink, d.why)
	}
	for _, s := range qs.Streams {
		if s.Dead > 0 {
			noun := "dead letters"
			if s.Dead == 1 {
				noun = "dead letter"
			}
			b.degraded("stream", s.Stream, fmt.Sprintf("stream %s has %d %s (plantgate queue dead --stream %s)", s.Stream, s.Dead, noun, s.Stream))
		}
	}
	for _, p := range flowProblems(flows) {
		b.degraded("flow", "", p)
	}
	if a.router != nil {
		for _, o := range a.router.Overflows() {
			if o.Active {
				b.degraded("flow", o.Flow, fmt.Sprintf("flow %s is under pressure since %s: its new records go to DMF (sink %s); %d so far",
					o.Flow, o.Since.UTC().Format("15:04:05Z"), o.Sink, o.Moved))
			}
		}
	}
	for _, p := range a.pausedFlows() {
		b.degraded("flow", p, "delivery paused by an operator (resume: POST /api/v1/admin/flows/"+p+"/resume)")
	}
	if reloadErr != "" {
		b.degraded("config", "", "the last reload was refused, the previous config keeps running: "+reloadErr)
	}

	h := b.h
	blocking := false
	for _, r := range h.Reasons {
		if r.Blocking {
			blocking = true
		}
	}
	switch phase {
	case phaseRunning:
		h.Ready = !blocking
		switch {
		case blocking:
			h.State = StateNotReady
		case len(h.Reasons) > 0:
			h.State = StateDegraded
		default:
			h.State = StateReady
		}
	case phaseReloading:
		h.State = StateReloading
	case phaseStopping:
		h.State = StateStopping
	default:
		h.State = StateStarting
	}
	sort.SliceStable(h.Reasons, func(i, j int) bool { return h.Reasons[i].Blocking && !h.Reasons[j].Blocking })
	return h
}

// sinkOfStream names the sink a stream delivers to.
func (a *App) sinkOfStream(stream string) string {
	for _, fl := range a.flows {
		for _, sn := range fl.Sinks {
			if fl.Stream(sn) == stream {
				return sn
			}
		}
		if o := a.cfg.Flows[fl.Name].Overflow.Sink; o != "" && fl.Stream(o) == stream {
			return o
		}
	}
	return ""
}

// SetReloadError records why the last reload was refused ("" clears it);
// Health shows it until a reload succeeds.
func (a *App) SetReloadError(msg string) {
	a.mu.Lock()
	a.reloadErr = msg
	a.mu.Unlock()
}

// SetReloading marks the gateway as stopping for a reload.
func (a *App) SetReloading() { a.setPhase(phaseReloading) }

// WasReady reports whether Run got as far as serving.
func (a *App) WasReady() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.servedOnce
}

// Alive reports whether the gateway can still do its work: the queue is
// open and usable. It feeds the systemd watchdog.
func (a *App) Alive() error {
	a.mu.Lock()
	s := a.store
	a.mu.Unlock()
	if s == nil {
		return nil // starting
	}
	return s.Healthy()
}
