// Command plantgate is the plant-floor gateway: it collects MES and machine
// signals, keeps them in a durable local queue, and delivers them to
// Dynamics 365 F&O.
//
//	plantgate run -c /etc/plantgate/plantgate.yaml
//	plantgate check-config -c FILE [--print] [--online] [--skip-files]
//	plantgate flow test -c FILE --flow NAME (--payload FILE | --message JSON) [--topic T] [--json]
//	plantgate version
//	plantgate queue stats|list|dead|replay|purge|check|compact -c FILE [flags]
//	plantgate queue in-doubt|release|drop -c FILE [--stream S (--seq N,... | --all) [--yes]]
//	plantgate dmf columns -c FILE --sink NAME [--json]
//	plantgate dmf build -c FILE --sink NAME --in FILE.jsonl --out PACKAGE.zip
//	plantgate COMMAND --help
//
// Queue commands read only gateway.data_dir and gateway.queue from the
// config; they do not resolve its secrets, so they work where the
// gateway's credentials cannot be read. The dmf commands likewise read a
// fo.dmf sink's settings without its secrets, and never call F&O.
//
// Exit codes: 0 success, 1 failure, 2 usage, 75 queue locked by a running
// gateway, 78 configuration error (systemd's RestartPreventExitStatus):
// run exits 78 for everything it refuses at start because of the config
// (see internal/app's check.go), check-config for every problem it finds.
// check-config --online exits 1 when a peer check fails; flow test exits 1
// when the message would not be delivered.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/buildinfo"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/flow"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/internal/sdnotify"
	_ "github.com/plantgate/plantgate/plugins/all"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitTempFail = 75 // EX_TEMPFAIL: the queue is locked by a running gateway
	exitConfig   = 78 // EX_CONFIG
)

const usage = `plantgate: the plant-floor gateway to Dynamics 365 F&O

Usage:
  plantgate run -c FILE              run the gateway
  plantgate check-config -c FILE     check a config file; --print shows the effective config,
                                     --online also asks F&O for a token and connects to each broker
  plantgate flow test -c FILE --flow NAME (--payload FILE | --message JSON) [--topic T] [--json]
                                     what a flow makes of one message and what it would send; sends nothing
  plantgate version                  print the version
` + queueUsage + dmfUsage + opcuaUsage + `  plantgate COMMAND --help           help on a command; needs no config

Exit codes: 0 ok, 1 failure (a peer check failed, a message that would not be
delivered), 2 usage, 75 queue locked by a running gateway, 78 config error.
`

// queueUsage is the queue part of usage; plantgate queue --help prints it.
const queueUsage = `  plantgate queue SUBCOMMAND -c FILE work on the queue of a stopped gateway:
      stats                          records, bytes, dead letters and oldest age per stream
      list   --stream S [--after N] [--limit N]   pending records
      dead   [--stream S] [--after N] [--limit N] dead letters with their reasons
      replay --stream S [--seq N,...]             move dead letters back for delivery
      purge  --stream S (--dead|--items|--all) [--seq N,...] --yes   delete records
      in-doubt [--stream S]                       F&O records whose delivery is in doubt (held, parked, in flight)
      release --stream S (--seq N,... | --all)    send held records again, then those parked behind them
      drop    --stream S (--seq N,... | --all) --yes   F&O has the held records: dead-letter them, deliver those parked behind them
      check                          verify the file, every record and the counters
      compact                        rewrite the file to return drained space
    -c FILE reads only gateway.data_dir and gateway.queue (secrets are not
    resolved); --queue FILE names the queue file instead. A queue file that
    does not exist is an error: nothing is created.
    list and dead show at most --limit records (default 50, per stream for
    dead; --limit 0 for all) and then say how to see the rest with --after N.
    --json prints a JSON array (also with --limit, and [] for none); list
    and dead use the same snake_case field names.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check-config", "-check-config", "--check-config":
		return cmdCheck(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, buildinfo.String("plantgate"))
		return exitOK
	case "queue":
		return cmdQueue(args[1:], stdout, stderr)
	case "dmf":
		return cmdDMF(args[1:], stdout, stderr)
	case "flow":
		return cmdFlow(args[1:], stdout, stderr)
	case "opcua":
		return cmdOPCUA(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "plantgate: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// parseFlags parses args into fs. -h or --help prints help and the flags on
// stdout and returns exitOK; a bad flag is reported on stderr and returns
// exitUsage. ok is true when the command should go on.
func parseFlags(fs *flag.FlagSet, args []string, help string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(stderr)
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, help)
		fmt.Fprintln(stdout, "\nFlags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK, false
	default:
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for its flags.\n", fs.Name(), err, fs.Name())
		return exitUsage, false
	}
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("plantgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("c", "/etc/plantgate/plantgate.yaml", "config file")
	fs.StringVar(cfg, "config", "/etc/plantgate/plantgate.yaml", "config file")
	return fs, cfg
}

// reportConfigError prints every config problem and returns exit 78.
func reportConfigError(err error, stderr io.Writer) int {
	if probs := config.AsProblems(err); len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(stderr, p.String())
		}
		fmt.Fprintf(stderr, "plantgate: %d config problem(s)\n", len(probs))
	} else {
		fmt.Fprintln(stderr, "plantgate:", err)
	}
	return exitConfig
}

const runHelp = `Usage:
  plantgate run -c FILE [--log-level LEVEL] [--log-format FORMAT]

Runs the gateway until SIGTERM; SIGHUP reloads the config when it changed
and is valid. Exit 75 when another gateway holds the queue; 78 when the
config is refused, at load or by what the gateway builds at start (data
dir, queue file, a plugin that cannot start, an HTTP or startup: error
embedded broker address that cannot be listened on, also one in use:
restarting does not free it); 1 for other failures (a startup: error probe
that fails), which systemd retries.
`

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := newFlags("run", stderr)
	level := fs.String("log-level", "", "override log.level (trace, debug, info, warn, error)")
	format := fs.String("log-format", "", "override log.format (auto, json, console)")
	if code, ok := parseFlags(fs, args, runHelp, stdout, stderr); !ok {
		return code
	}
	cfg, flows, err := app.LoadConfig(*cfgPath)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	lo := logging.Options{Level: cfg.Log.Level, Format: logging.Format(cfg.Log.Format), Writer: stdout}
	if *level != "" {
		lo.Level = *level
	}
	if *format != "" {
		lo.Format = logging.Format(*format)
	}
	log, err := logging.New(lo)
	if err != nil {
		fmt.Fprintln(stderr, "plantgate:", err)
		return exitUsage
	}
	for _, w := range cfg.Warnings {
		log.Warn().Str(logging.FieldPath, w.Pos.String()).Msg(w.Msg)
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	return runGateway(*cfgPath, cfg, flows, log, stderr)
}

// defaultGCPercent is the collector's target (GOGC) when the environment
// sets none: the heap may grow to 1.5 times what is live, not 2 times.
// About half of what is live during ingest is fixed (the queue's pages,
// library tables, the metric registry), so the default of 100 gave each
// message in flight a twin in garbage. BenchmarkGatewayFootprint (full
// MQTT ingest of the real binary): peak RSS 41.6-42.4 MB with 100, 36.1
// with 50, at the same rate. The collector runs twice as often; the MQTT
// backlog drain took 21-24 us of CPU a message against 18-21.5 with 100.
const defaultGCPercent = 50

// runGateway runs cfg until SIGTERM or SIGINT, reloading on SIGHUP.
//
//   - SIGTERM/SIGINT: sources stop, deliveries finish within
//     gateway.drain_timeout, the queue closes. Stopping never waits
//     longer than drain_timeout plus a margin, whatever a source does (a
//     stdin source blocked in a read, a terminal); a second signal ends
//     the process at once. Every record is in the fsync'd queue, so
//     nothing is lost either way.
//   - SIGHUP: the file is loaded and checked first. A config that does not
//     load leaves the running one in place, with the reason on the status
//     page and in /readyz ("degraded"). A changed config stops the gateway
//     gracefully and starts the new one on the same queue; if the new one
//     fails to start, the previous config is started again.
//   - systemd: READY=1 once serving, RELOADING=1 during a reload,
//     STOPPING=1 when stopping, and WATCHDOG=1 every half WatchdogSec
//     while the queue is usable.
func runGateway(cfgPath string, cfg *config.Config, flows []*flow.Flow, log zerolog.Logger, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var cur atomic.Pointer[app.App]
	if iv := sdnotify.WatchdogInterval(); iv > 0 {
		go func() {
			t := time.NewTicker(iv / 2)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if a := cur.Load(); a != nil && a.Alive() != nil {
					log.Error().Err(a.Alive()).Msg("watchdog: the queue is not usable; not notifying systemd")
					continue
				}
				_, _ = sdnotify.Notify(sdnotify.Watchdog)
			}
		}()
	}
	reloadErr := ""
	var prev *config.Config
	var prevFlows []*flow.Flow
	for {
		// Each pass runs one config until SIGTERM (return) or a SIGHUP
		// with a changed, valid config (stop gracefully, start the new one).
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		a := app.New(cfg, flows, log)
		a.SetReloadError(reloadErr)
		cur.Store(a)
		go func() { done <- a.Run(runCtx) }()
		var err error
		reloaded := false
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case <-ctx.Done():
				// A second signal now ends the process at once.
				stop()
				err = waitBounded(done, cfg.Gateway.DrainTimeout.D()+5*time.Second, log)
				break wait
			case <-hup:
				ncfg, nflows, lerr := app.LoadConfig(cfgPath)
				switch {
				case lerr != nil:
					reloadErr = lerr.Error()
					a.SetReloadError(reloadErr)
					log.Error().Str(logging.FieldPath, cfgPath).Str(logging.FieldReason, lerr.Error()).Msg("reload rejected; the running config stays")
				case ncfg.Checksum == cfg.Checksum:
					reloadErr = ""
					a.SetReloadError("")
					log.Info().Msg("reload: config unchanged")
				default:
					log.Info().Msg("reload: applying the new config")
					_, _ = sdnotify.Notify(sdnotify.ReloadingNow())
					a.SetReloading()
					cancel()
					if err = waitBounded(done, cfg.Gateway.DrainTimeout.D()+5*time.Second, log); err != nil {
						break wait
					}
					prev, prevFlows = cfg, flows
					cfg, flows = ncfg, nflows
					reloadErr = ""
					for _, w := range cfg.Warnings {
						log.Warn().Str(logging.FieldPath, w.Pos.String()).Msg(w.Msg)
					}
					reloaded = true
					break wait
				}
			}
		}
		cancel()
		if reloaded && ctx.Err() == nil {
			continue
		}
		if err != nil && prev != nil && ctx.Err() == nil && !a.WasReady() {
			// The new config failed to start: run the previous one again.
			reloadErr = "the new config failed to start: " + err.Error()
			log.Error().Err(err).Msg("reload: the new config failed to start; starting the previous config again")
			cfg, flows, prev, prevFlows = prev, prevFlows, nil, nil
			continue
		}
		if err != nil {
			log.Error().Err(err).Msg("gateway failed")
			if errors.Is(err, queue.ErrLocked) {
				return exitTempFail
			}
			if config.IsConfigError(err) {
				return reportConfigError(err, stderr)
			}
			return exitFailure
		}
		return exitOK
	}
}

// errStopTimeout: the gateway did not stop in time.
var errStopTimeout = errors.New("the gateway did not stop within drain_timeout and a 5 s margin; exiting anyway (the queue is fsync'd, nothing is lost)")

// waitBounded waits for Run to return, at most d.
func waitBounded(done <-chan error, d time.Duration, log zerolog.Logger) error {
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		log.Error().Msg(errStopTimeout.Error())
		return errStopTimeout
	}
}
