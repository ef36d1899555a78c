package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/plugins/inputs"
	"github.com/plantgate/plantgate/plugins/outputs"
)

// What check-config checks beyond the loader, and how a start-up failure
// becomes a config problem.
//
// A gateway that refuses to start because of its config returns
// config.Errors from Run, naming the field: the CLI exits 78 (EX_CONFIG),
// which the systemd unit's RestartPreventExitStatus keeps from being
// restarted every few seconds for a problem no restart fixes. These are
// the data directory or queue file that cannot be created or opened
// (except a queue locked by another gateway: 75, a retry may succeed once
// it stopped), a source or sink its plugin refuses to build (bad TLS
// files, settings the plugin checks itself), and an HTTP listener that
// cannot listen, including an address already in use: the gateway is
// restarted only after its own process ended, so the port is held by
// another program, and waiting 5 s does not change that; the operator
// frees the port or changes http.listen. A startup probe that fails
// (startup: error, a peer that does not answer) is not a config problem:
// Run returns it as it is, the CLI exits 1, and systemd tries again.

// LoadConfigOptions loads and fully checks a config file with opts: the
// strict decode (with the files and addresses it names, unless opts skips
// them), the compilation of every flow expression, the cross checks that
// need the plugins' capabilities (DuplicateCheck), and, when secrets and
// files are read, StartChecks. Every problem is returned as
// config.Errors.
func LoadConfigOptions(path string, opts config.Options) (*config.Config, []*flow.Flow, error) {
	cfg, err := config.Load(path, opts)
	if err != nil {
		return nil, nil, err
	}
	flows, err := flow.Compile(cfg)
	if err != nil {
		return nil, nil, err
	}
	flow.AssignStreams(flows, func(sink string) bool {
		pc := cfg.Sinks[sink]
		if pc == nil {
			return false
		}
		f, ok := outputs.Lookup(pc.Type)
		return ok && f.SharedStream
	})
	if probs := DuplicateCheck(cfg); len(probs) > 0 {
		return nil, nil, config.Errors(probs)
	}
	if probs := append(SinkFlowCheck(cfg), OverflowCheck(cfg)...); len(probs) > 0 {
		return nil, nil, config.Errors(probs)
	}
	if !opts.SkipSecrets && !opts.SkipFiles {
		if probs := StartChecks(cfg); len(probs) > 0 {
			return nil, nil, config.Errors(probs)
		}
	}
	cfg.Warnings = append(cfg.Warnings, PatternAdvice(cfg)...)
	return cfg, flows, nil
}

// StartChecks builds what the gateway builds from the config before it
// opens the queue, and reports every failure as a config problem: each
// F&O environment (its credentials, certificate and key, ca_file), then
// each sink and source with its plugin's New, as Run does but without a
// queue (no state, no record bookkeeping), so a plugin that refuses its
// settings (a TLS file, a DMF sink without a legal entity) is refused
// here at its position. New does no network I/O.
func StartChecks(cfg *config.Config) []config.Problem {
	var probs []config.Problem
	reg := d365.NewRegistry(cfg.FO, d365.Options{Log: zerolog.Nop()})
	defer reg.CloseIdleConnections()
	for _, name := range cfg.FOOrder {
		if _, err := reg.Env(name); err != nil {
			probs = append(probs, config.Problem{Pos: cfg.FO[name].Pos, Msg: err.Error()})
		}
	}
	if len(probs) > 0 {
		return probs
	}
	build := func(kind, name string, pc *config.Plugin) {
		env := pipeline.Env{Name: name, Log: zerolog.Nop(), Metrics: prometheus.NewRegistry(), Now: time.Now,
			GatewayID: cfg.Gateway.ID, Flows: FlowsOf(cfg, kind, name), Resolve: reg.Resolve}
		var p any
		var err error
		if kind == "sink" {
			f, ok := outputs.Lookup(pc.Type)
			if !ok {
				return
			}
			p, err = f.New(pc.Settings, env)
		} else {
			f, ok := inputs.Lookup(pc.Type)
			if !ok {
				return
			}
			p, err = f.New(pc.Settings, env)
		}
		if err != nil {
			probs = append(probs, pluginProblem(pc, kind, name, err))
			return
		}
		if c, ok := p.(pipeline.Closer); ok {
			_ = c.Close(context.Background())
		}
	}
	for _, name := range cfg.SinkOrder {
		build("sink", name, cfg.Sinks[name])
	}
	for _, name := range cfg.SourceOrder {
		build("source", name, cfg.Sources[name])
	}
	return probs
}

// configError makes err a config problem at the field path of cfg.
func configError(cfg *config.Config, path string, err error) error {
	return config.Errors{{Pos: cfg.FieldPos(path), Msg: err.Error()}}
}

// pluginError makes the failure to build a source or sink a config
// problem at the plugin.
func pluginError(pc *config.Plugin, kind, name string, err error) error {
	return config.Errors{pluginProblem(pc, kind, name, err)}
}

func pluginProblem(pc *config.Plugin, kind, name string, err error) config.Problem {
	return config.Problem{Pos: pc.Pos, Msg: fmt.Sprintf("%s %s cannot start: %v", kind, name, err)}
}

// queueOpenError classifies a failure to open the queue: a lock held by
// another gateway stays as it is (exit 75); anything else is about the
// data directory the config names.
func queueOpenError(cfg *config.Config, err error) error {
	if errors.Is(err, queue.ErrLocked) {
		return err
	}
	return configError(cfg, "gateway.data_dir", fmt.Errorf("open the queue in %s: %w", cfg.Gateway.DataDir, err))
}

// listenError makes a failure to listen on http.listen a config problem,
// saying what to do when the address is taken.
func listenError(cfg *config.Config, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		err = fmt.Errorf("%w: another program holds the port; stop it or change http.listen", err)
	}
	return configError(cfg, "http.listen", err)
}

// sourceStartError makes the failure of a startup: error source whose
// embedded listener cannot listen (its address in use, or not of this
// host) a config problem at its listen field, as for http.listen; any
// other failure stays as it is (a broker that does not answer: exit 1,
// systemd tries again).
func sourceStartError(cfg *config.Config, err error) error {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "listen" {
		return err
	}
	for _, name := range cfg.SourceOrder {
		if strings.HasPrefix(err.Error(), "source "+name+": ") {
			if errors.Is(err, syscall.EADDRINUSE) {
				err = fmt.Errorf("%w: another program holds the port; stop it or change the listen address", err)
			}
			return configError(cfg, "sources."+name+".embedded.listen", err)
		}
	}
	return err
}

// httpStartError makes a failure to start the HTTP server a config
// problem at the field it comes from.
func httpStartError(cfg *config.Config, err error) error {
	if strings.HasPrefix(err.Error(), "http.tls") {
		return configError(cfg, "http.tls", err)
	}
	return listenError(cfg, err)
}

// OnlineResult is one check of check-config --online.
type OnlineResult struct {
	// What names what was checked: "fo prod", "source mes".
	What string `json:"what"`
	// OK is the outcome; Detail says what was done or why it failed.
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Took is how long the check took.
	Took time.Duration `json:"took_ns"`
}

// CheckOnline checks the peers of cfg: that a token can be had from the
// identity platform for each F&O environment, and that each source and
// sink whose settings can tell (pipeline.OnlineChecker: an MQTT broker
// connects and disconnects) answers. Each check gets timeout. Nothing is
// written anywhere.
func CheckOnline(ctx context.Context, cfg *config.Config, timeout time.Duration) []OnlineResult {
	var out []OnlineResult
	run := func(what string, fn func(ctx context.Context) (string, error)) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		detail, err := fn(cctx)
		r := OnlineResult{What: what, OK: err == nil, Detail: detail, Took: time.Since(start)}
		if err != nil {
			r.Detail = logging.RedactText(err.Error())
		}
		out = append(out, r)
	}
	for _, name := range cfg.FOOrder {
		run("fo "+name, func(ctx context.Context) (string, error) {
			e, err := d365.NewEnv(name, cfg.FO[name], d365.Options{Log: zerolog.Nop()})
			if err != nil {
				return "", err
			}
			defer e.CloseIdleConnections()
			if _, err := e.Tokens().Token(ctx); err != nil {
				return "", err
			}
			return fmt.Sprintf("token for %s from the identity platform", e.Tokens().Scope()), nil
		})
	}
	plugins := func(kind string, m map[string]*config.Plugin, order []string) {
		for _, name := range order {
			oc, ok := m[name].Settings.(pipeline.OnlineChecker)
			if !ok {
				continue
			}
			run(kind+" "+name, oc.CheckOnline)
		}
	}
	plugins("source", cfg.Sources, cfg.SourceOrder)
	plugins("sink", cfg.Sinks, cfg.SinkOrder)
	return out
}
