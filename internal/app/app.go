// Package app wires a config into a running gateway: it opens the queue,
// builds sinks, sink runners and sources from the plugin registries, serves
// HTTP, and stops everything in reverse order.
//
//	Run: queue.Open -> sinks (New, probe) -> runners (drain backlog) -> sources -> HTTP -> READY
//	Stop: sources (cancel, wait) -> runners (finish batch within drain_timeout,
//	      release leases) -> sinks Close -> HTTP -> queue.Close
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/backoff"
	"github.com/plantgate/plantgate/internal/buildinfo"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/procmem"
	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/internal/sdnotify"
	"github.com/plantgate/plantgate/plugins/inputs"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// ConfigOptions returns the config loader options backed by the plugin
// registries.
func ConfigOptions() config.Options {
	return config.Options{
		SourceConfig: inputs.NewConfig, SinkConfig: outputs.NewConfig,
		SourceTypes: inputs.Types, SinkTypes: outputs.Types,
	}
}

// LoadConfig loads and fully checks a config file for the gateway (see
// LoadConfigOptions); every problem is returned as config.Errors.
func LoadConfig(path string) (*config.Config, []*flow.Flow, error) {
	return LoadConfigOptions(path, ConfigOptions())
}

// QueuePath is where the queue file of cfg lives.
func QueuePath(cfg *config.Config) string { return filepath.Join(cfg.Gateway.DataDir, "queue.db") }

// QueueOptions maps the config to queue options.
func QueueOptions(cfg *config.Config, log zerolog.Logger) queue.Options {
	q := cfg.Gateway.Queue
	o := queue.Options{
		MaxBytes: int64(q.MaxBytes), StreamMaxBytes: int64(q.StreamMaxBytes), MaxRecordBytes: int(q.MaxRecordBytes),
		DeadMaxBytes: int64(q.DeadMaxBytes), DeadRetention: q.DeadRetention.D(),
		DedupWindow: q.DedupWindow.D(), LeaseTimeout: q.LeaseTimeout.D(), CommitMaxRecords: q.CommitMaxRecords,
		CommitMaxDelay: q.CommitMaxDelay.D(), CompactMinBytes: int64(q.CompactMinBytes), Log: log,
	}
	if q.OnFull == "reject" {
		o.OnFull = queue.Reject
	}
	return o
}

// App is a running gateway.
type App struct {
	cfg   *config.Config
	flows []*flow.Flow
	log   zerolog.Logger
	reg   *prometheus.Registry
	m     *flow.Metrics

	store   *queue.Store
	fo      *d365.Registry
	router  *flow.Router
	sinks   map[string]pipeline.Sink
	sources map[string]pipeline.Source
	runners []*flow.Runner
	started time.Time

	// probeInterval is how often components' probes run (default 5s).
	probeInterval time.Duration
	// rateInterval and rateWindow: how often each flow's records are
	// counted and over what span its observed rate is measured (rates.go).
	rateInterval, rateWindow time.Duration
	counts                   *countingQueue
	rates                    *rateSampler

	mu         sync.Mutex
	components map[string]*componentState
	// phase is the lifecycle phase (health.go); reloadErr the reason the
	// last reload was refused.
	phase     string
	reloadErr string
	// paused holds the flows an operator paused (admin.go).
	paused     map[string]bool
	servedOnce bool
	httpAddr   net.Addr
	audit      *auditLog
}

type componentState struct {
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Up        bool      `json:"up"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
	plugin    any
}

// New prepares an app from a loaded config. It builds nothing that does
// I/O; Run does.
func New(cfg *config.Config, flows []*flow.Flow, log zerolog.Logger) *App {
	reg := newRegistry()
	return &App{cfg: cfg, flows: flows, log: log, reg: reg, m: flow.NewMetrics(reg),
		sinks: map[string]pipeline.Sink{}, sources: map[string]pipeline.Source{}, components: map[string]*componentState{},
		phase: phaseStarting, paused: map[string]bool{},
		probeInterval: 5 * time.Second, rateInterval: defaultRateInterval, rateWindow: defaultRateWindow}
}

func (a *App) setPhase(p string) {
	a.mu.Lock()
	if a.phase == phaseReloading && p == phaseStopping {
		p = phaseReloading
	}
	a.phase = p
	if p == phaseRunning {
		a.servedOnce = true
	}
	a.mu.Unlock()
}

// HTTPAddr returns the address the HTTP server listens on, once started.
func (a *App) HTTPAddr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.httpAddr
}

func (a *App) setComponent(kind, name, typ string, up bool, err error, plugin any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := kind + "/" + name
	c := a.components[key]
	if c == nil {
		c = &componentState{Kind: kind, Name: name, Type: typ, plugin: plugin, Since: time.Now().UTC()}
		a.components[key] = c
	}
	if c.Up != up {
		c.Since = time.Now().UTC()
	}
	c.Up = up
	if plugin != nil {
		c.plugin = plugin
	}
	if err != nil {
		c.LastError = logging.RedactText(err.Error())
	} else if up {
		c.LastError = ""
	}
}

// Run starts the gateway and blocks until ctx is cancelled, then stops it.
// A returned error means the gateway could not start (or a component with
// startup: error failed).
func (a *App) Run(ctx context.Context) error {
	a.started = time.Now()
	if err := os.MkdirAll(a.cfg.Gateway.DataDir, 0o750); err != nil {
		return configError(a.cfg, "gateway.data_dir", fmt.Errorf("create data dir: %w", err))
	}
	qlog := logging.Component(a.log, "queue", "", "")
	store, err := queue.Open(QueuePath(a.cfg), QueueOptions(a.cfg, qlog))
	if err != nil {
		return queueOpenError(a.cfg, err)
	}
	a.mu.Lock()
	a.store = store
	a.mu.Unlock()
	auditPath := a.cfg.HTTP.AuditLog
	if auditPath == "" {
		auditPath = filepath.Join(a.cfg.Gateway.DataDir, "audit.log")
	}
	a.audit = newAuditLog(auditPath)
	defer func() {
		if err := store.Close(); err != nil {
			a.log.Error().Err(err).Msg("close queue")
		}
	}()
	a.reg.MustRegister(newQueueCollector(store))
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "plantgate_build_info", Help: "Build information.",
		ConstLabels: prometheus.Labels{"version": buildinfo.Version, "commit": buildinfo.Commit}}, func() float64 { return 1 }))
	a.reg.MustRegister(newComponentCollector(a))
	a.counts = newCountingQueue(store)
	a.rates = newRateSampler(a.rateWindow, time.Now, a.counts.counts)
	a.router = flow.NewRouter(a.counts, a.flows, logging.Component(a.log, "router", "", ""), a.m)
	for name, pc := range a.cfg.Sources {
		if pc.Source.Unmatched == "dead_letter" {
			a.router.KeepUnmatched(name)
		}
	}
	a.startFO()
	defer a.stopFO()

	// Sinks.
	for _, name := range a.cfg.SinkOrder {
		pc := a.cfg.Sinks[name]
		f, _ := outputs.Lookup(pc.Type)
		s, err := f.New(pc.Settings, a.env("sink", name, pc.Type, flow.SinkStateScope(name)))
		if err != nil {
			return pluginError(pc, "sink", name, err)
		}
		a.sinks[name] = s
		a.setComponent("sink", name, pc.Type, true, nil, s)
		if err := a.probe(ctx, "sink", name, pc, s); err != nil {
			return err
		}
	}
	defer a.closeAll("sink", a.sinks)

	// Runners: one per (flow, sink) stream.
	runCtx, stopRunners := context.WithCancel(context.WithoutCancel(ctx))
	var runnersWG sync.WaitGroup
	defer func() {
		stopRunners()
		runnersWG.Wait()
	}()
	started := map[string]bool{}
	// Every runner starts only after the pauses are applied, so a flow
	// paused before a restart delivers nothing meanwhile.
	var starts []func()
	for _, fl := range a.flows {
		sinks := fl.Sinks
		if o := a.cfg.Flows[fl.Name].Overflow.Sink; o != "" {
			sinks = append(append([]string(nil), sinks...), o) // its DMF stream runs too
		}
		for _, sn := range sinks {
			pc := a.cfg.Sinks[sn]
			stream := fl.Stream(sn)
			if started[stream] {
				continue // a sink's shared stream: one runner for all its flows
			}
			started[stream] = true
			if ss, ok := a.sinks[sn].(pipeline.StreamSink); ok {
				// The sink drives its stream itself (DMF batches).
				q := store.StreamQueue(stream, flow.SinkStateScope(sn), a.router.Remap)
				starts = append(starts, func() {
					runnersWG.Add(1)
					go func() {
						defer runnersWG.Done()
						if err := ss.RunStream(runCtx, stream, q); err != nil {
							a.log.Error().Err(err).Str(logging.FieldStream, stream).Msg("stream sink stopped")
						}
					}()
				})
				continue
			}
			rlog := logging.Component(a.log, "runner", pc.Type, sn)
			if stream == flow.StreamName(fl.Name, sn) {
				rlog = rlog.With().Str(logging.FieldFlow, fl.Name).Logger()
			}
			r := flow.NewRunner(flow.RunnerConfig{
				Stream: stream, MaxBatch: pc.Runner.MaxBatch, Parallelism: pc.Runner.Parallelism,
				Retry:        backoff.Policy{Initial: pc.Runner.Retry.Initial.D(), Max: pc.Runner.Retry.Max.D()},
				DrainTimeout: a.cfg.Gateway.DrainTimeout.D(), Remap: a.router.Remap,
			}, store, a.sinks[sn], rlog, a.m)
			a.runners = append(a.runners, r)
			starts = append(starts, func() {
				runnersWG.Add(1)
				go func() {
					defer runnersWG.Done()
					if err := r.Run(runCtx); err != nil {
						a.log.Error().Err(err).Str(logging.FieldStream, stream).Msg("runner stopped")
					}
				}()
			})
		}
	}

	// Flows an operator paused stay paused across restarts.
	a.loadPauses()
	for _, start := range starts {
		start()
	}

	// Overflow flows see the pressure on their OData stream and the keys
	// pending on both paths.
	for _, st := range a.router.OverflowStreams() {
		if err := store.TrackKeys(ctx, st); err != nil {
			return fmt.Errorf("overflow: %w", err)
		}
	}
	byStream := map[string]*flow.Runner{}
	for _, r := range a.runners {
		byStream[r.Stream()] = r
	}
	a.router.SetPressure(func(stream string) (int64, time.Duration) {
		var throttled time.Duration
		if r := byStream[stream]; r != nil {
			throttled = r.ThrottledFor()
		}
		return store.Pending(stream), throttled
	})

	// Sources.
	srcCtx, stopSources := context.WithCancel(ctx)
	defer stopSources()
	var sourcesWG sync.WaitGroup
	fatal := make(chan error, len(a.cfg.SourceOrder))
	for _, name := range a.cfg.SourceOrder {
		pc := a.cfg.Sources[name]
		f, _ := inputs.Lookup(pc.Type)
		src, err := f.New(pc.Settings, a.env("source", name, pc.Type, flow.SourceStateScope(name)))
		if err != nil {
			stopSources()
			return pluginError(pc, "source", name, err)
		}
		a.sources[name] = src
		a.setComponent("source", name, pc.Type, true, nil, src)
		sourcesWG.Add(1)
		go func() {
			defer sourcesWG.Done()
			a.runSource(srcCtx, name, pc, src, fatal)
		}()
	}
	defer a.closeAll("source", a.sources)

	// Replayed dead letters of each source go through its flows again.
	for _, name := range a.cfg.SourceOrder {
		dec, _ := a.sources[name].(pipeline.Redecoder)
		if dec != nil {
			a.router.SetDecoder(name, dec)
		}
		stream := flow.SourceDeadStream(name)
		r := flow.NewRunner(flow.RunnerConfig{Stream: stream, MaxBatch: 500, Parallelism: 1, DrainTimeout: a.cfg.Gateway.DrainTimeout.D(),
			Retry: backoff.Policy{Initial: time.Second, Max: time.Minute}},
			store, flow.NewReplaySink(a.router, name, dec), logging.Component(a.log, "replay", "", name), a.m)
		runnersWG.Add(1)
		go func() {
			defer runnersWG.Done()
			if err := r.Run(runCtx); err != nil {
				a.log.Error().Err(err).Str(logging.FieldStream, stream).Msg("replay runner stopped")
			}
		}()
	}

	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	go a.probeLoop(probeCtx, a.probeInterval)
	go a.rates.run(probeCtx, a.rateInterval)

	srv, err := a.startHTTP()
	if err != nil {
		stopSources()
		sourcesWG.Wait()
		return httpStartError(a.cfg, err)
	}
	a.setPhase(phaseRunning)
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		a.log.Warn().Err(err).Msg("notify systemd")
	}
	a.log.Info().Str(logging.FieldVersion, buildinfo.Version).Int("flows", len(a.flows)).Int("streams", len(a.runners)).
		Str(logging.FieldPath, QueuePath(a.cfg)).Msg("gateway started")
	// Start-up ran every package's initialisation and the kernel maps the
	// binary in windows around each page touched, so nearly all of it is
	// resident now though running needs a few MB of it: give the rest back
	// (procmem; the page cache keeps it).
	if kib, err := procmem.ReleaseExecutable(); err != nil {
		a.log.Debug().Err(err).Msg("release the binary's start-up pages")
	} else {
		a.log.Debug().Int("kib", kib).Msg("released the binary's start-up pages")
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fatal:
		runErr = sourceStartError(a.cfg, runErr)
	}
	a.mu.Lock()
	reloading := a.phase == phaseReloading
	a.mu.Unlock()
	if !reloading {
		_, _ = sdnotify.Notify(sdnotify.Stopping)
	}
	a.log.Info().Msg("gateway stopping")
	a.setPhase(phaseStopping)
	// Sources and runners stop together, so stopping takes drain_timeout
	// at most: runners lease nothing new and finish their batches within
	// it; what a source still appends meanwhile stays queued for the next
	// start. A source blocked where cancelling cannot reach it (a read of
	// standard input from a terminal or a pipe) is left behind after
	// drain_timeout: it holds nothing unacknowledged, and what it emits
	// later is refused by the closed queue.
	stopSources()
	stopRunners()
	if !waitGroupFor(&sourcesWG, a.cfg.Gateway.DrainTimeout.D()) {
		a.log.Warn().Dur("drain_timeout", a.cfg.Gateway.DrainTimeout.D()).Msg("a source did not stop within drain_timeout (blocked reading standard input?); stopping without it")
	}
	runnersWG.Wait()
	if srv != nil {
		_ = os.Remove(AddrFile(a.cfg))
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	a.log.Info().Msg("gateway stopped")
	return runErr
}

// FlowsOf returns the flows connected to a source or sink of cfg, in file
// order: what pipeline.Env.Flows holds for that plugin.
func FlowsOf(cfg *config.Config, kind, name string) []pipeline.FlowInfo {
	var out []pipeline.FlowInfo
	for _, fn := range cfg.FlowOrder {
		f := cfg.Flows[fn]
		if kind == "source" && f.From == name {
			out = append(out, pipeline.FlowInfo{Name: fn, Urgent: f.Expect.Urgent})
		}
		if kind == "sink" {
			for _, to := range f.To {
				if to == name {
					out = append(out, pipeline.FlowInfo{Name: fn, Stream: streamOf(cfg, fn, name), Urgent: f.Expect.Urgent})
				}
			}
			if f.Overflow.Sink == name {
				out = append(out, pipeline.FlowInfo{Name: fn, Stream: streamOf(cfg, fn, name)})
			}
		}
	}
	return out
}

// streamOf is the stream of flow fn's records for sink.
func streamOf(cfg *config.Config, fn, sink string) string {
	if pc := cfg.Sinks[sink]; pc != nil {
		if f, ok := outputs.Lookup(pc.Type); ok && f.SharedStream {
			return flow.SharedStreamName(sink)
		}
	}
	return flow.StreamName(fn, sink)
}

func (a *App) env(kind, name, typ, scope string) pipeline.Env {
	return pipeline.Env{
		Flows:     FlowsOf(a.cfg, kind, name),
		Name:      name,
		Log:       logging.Component(a.log, kind, typ, name),
		Metrics:   a.reg,
		Now:       time.Now,
		State:     a.store.Scope(scope),
		Records:   a.store,
		DataDir:   filepath.Join(a.cfg.Gateway.DataDir, kind+"s", name),
		GatewayID: a.cfg.Gateway.ID,
		Resolve:   a.resolve,
		Settle:    a.settleHold, // receivers.go
	}
}

func (a *App) probe(ctx context.Context, kind, name string, pc *config.Plugin, p any) error {
	pr, ok := p.(pipeline.Prober)
	if !ok || pc.Startup == "retry" {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := pr.Probe(pctx)
	if err == nil {
		return nil
	}
	a.setComponent(kind, name, pc.Type, false, err, nil)
	if pc.Startup == "error" {
		return fmt.Errorf("%s %s: startup probe: %w", kind, name, err)
	}
	a.log.Warn().Err(err).Str(logging.FieldInstance, name).Msg("startup probe failed; continuing")
	return nil
}

// probeLoop asks every component that can tell (pipeline.Prober) whether
// its peer is reachable, every interval, so /readyz, the status page and
// plantgate_component_up follow outages while the gateway runs.
func (a *App) probeLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range a.componentList() {
			p, ok := c.plugin.(pipeline.Prober)
			if !ok {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, interval)
			err := p.Probe(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			a.setComponent(c.Kind, c.Name, c.Type, err == nil, err, nil)
		}
	}
}

// runSource runs a source, restarting it with backoff when it fails.
func (a *App) runSource(ctx context.Context, name string, pc *config.Plugin, src pipeline.Source, fatal chan<- error) {
	log := logging.Component(a.log, "source", pc.Type, name)
	pol := backoff.Policy{Initial: time.Second, Max: time.Minute}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := safeRun(ctx, src, a.router.Emitter(name))
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("source stopped unexpectedly")
		}
		a.setComponent("source", name, pc.Type, false, err, nil)
		if pc.Startup == "error" && attempt == 1 {
			fatal <- fmt.Errorf("source %s: %w", name, err)
			return
		}
		d := pol.Delay(attempt)
		log.Warn().Err(err).Int(logging.FieldAttempt, attempt).Dur(logging.FieldRetryIn, d).Msg("source failed, restarting")
		if backoff.Wait(ctx, d) != nil {
			return
		}
		a.setComponent("source", name, pc.Type, true, nil, nil)
	}
}

// waitGroupFor waits for wg at most d and reports whether it finished.
func waitGroupFor(wg *sync.WaitGroup, d time.Duration) bool {
	ch := make(chan struct{})
	go func() {
		wg.Wait()
		close(ch)
	}()
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func safeRun(ctx context.Context, src pipeline.Source, em pipeline.Emitter) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("source panicked: %v", p)
		}
	}()
	return src.Run(ctx, em)
}

func (a *App) closeAll(kind string, m any) {
	var names []string
	var get func(string) any
	switch mm := m.(type) {
	case map[string]pipeline.Sink:
		for n := range mm {
			names = append(names, n)
		}
		get = func(n string) any { return mm[n] }
	case map[string]pipeline.Source:
		for n := range mm {
			names = append(names, n)
		}
		get = func(n string) any { return mm[n] }
	}
	sort.Strings(names)
	for _, n := range names {
		if c, ok := get(n).(pipeline.Closer); ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := c.Close(ctx); err != nil {
				a.log.Warn().Err(err).Str(logging.FieldInstance, n).Str(logging.FieldComponent, kind).Msg("close")
			}
			cancel()
		}
	}
}
