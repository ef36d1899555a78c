package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/plantgate/plantgate/internal/app"
)

const checkHelp = `Usage:
  plantgate check-config -c FILE [--print] [--online [--timeout 15s]] [--skip-files]

Checks the config file as the gateway loads it, and what run needs from it:
its secrets (${env:..}, ${file:..}, ${cred:..}), every flow expression (a
when must give true or false), the files it names (certificates and keys
that exist, can be read by this user and parse as PEM, each key matching its
certificate; CA files; the data directory, which must exist writable or be
creatable; the files of sources and sinks), and the addresses it listens on
(host:port, port up to 65535). A ${NAME} where ${env:NAME} was meant is an
error that says so. Every problem is printed as file:line:column: field:
message; exit 78 if any. Run it as the service's user (the unit's
ExecStartPre does): files are checked for the user that runs it.

--online then checks the peers, each within --timeout, and prints each
result: a token from the identity platform for each F&O environment, and a
connect and disconnect to each MQTT broker (a clean session under the
source's client id with -check appended, so the gateway's session is not
touched; for the embedded broker, that its address is free). Exit 1 if one
fails. Nothing is sent to F&O and nothing is published.

--skip-files checks a config meant for another machine: the files it names
are not opened.

Exit codes: 0 ok, 1 an online check failed, 2 usage, 78 config problems.
`

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := newFlags("check-config", stderr)
	print := fs.Bool("print", false, "print the effective config (defaults filled in, secrets redacted)")
	online := fs.Bool("online", false, "also check that each F&O environment gives a token and each MQTT broker answers")
	timeout := fs.Duration("timeout", 15*time.Second, "how long each --online check may take")
	skipFiles := fs.Bool("skip-files", false, "do not open the files the config names (a config for another machine)")
	if code, ok := parseFlags(fs, args, checkHelp, stdout, stderr); !ok {
		return code
	}
	opts := app.ConfigOptions()
	opts.SkipFiles = *skipFiles
	cfg, flows, err := app.LoadConfigOptions(*cfgPath, opts)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w.String())
	}
	if *print {
		b, err := cfg.Redacted()
		if err != nil {
			fmt.Fprintln(stderr, "plantgate:", err)
			return exitFailure
		}
		_, _ = stdout.Write(b)
	}
	streams := 0
	for _, f := range flows {
		streams += len(f.Sinks)
	}
	fmt.Fprintf(stdout, "%s: ok (%d sources, %d sinks, %d flows, %d streams)\n", *cfgPath, len(cfg.Sources), len(cfg.Sinks), len(flows), streams)
	if !*online {
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	failed := 0
	results := app.CheckOnline(ctx, cfg, *timeout)
	for _, r := range results {
		state := "ok"
		if !r.OK {
			state = "FAILED"
			failed++
		}
		fmt.Fprintf(stdout, "online: %s: %s: %s (%s)\n", r.What, state, r.Detail, r.Took.Round(time.Millisecond))
	}
	if len(results) == 0 {
		fmt.Fprintln(stdout, "online: nothing to check (no fo environments, no MQTT brokers)")
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "plantgate: %d of %d online checks failed\n", failed, len(results))
		return exitFailure
	}
	return exitOK
}
