package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/plantgate/plantgate/internal/buildinfo"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/logging"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitUsage  = 2
	exitConfig = 78 // EX_CONFIG
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	stop()
	os.Exit(code)
}

// options are the command-line flags.
type options struct {
	listen, dataDir, config, cert, key, publicURL, logLevel, logFormat string
	http, version, snapshot                                            bool
}

func newFlagSet(stderr io.Writer, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("fo-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "", "listen `address` (default "+foemu.DefaultListen+", or listen: in the config file)")
	fs.StringVar(&o.dataDir, "data-dir", "", "`directory` for the generated CA (ca.pem) and server certificate, and the state snapshot (default: the user cache directory, plantgate/fo-emulator)")
	fs.StringVar(&o.config, "config", "", "YAML config `file` (clients, schema, seed, throttling, MES and DMF timing, faults); without it any tenant and the single client plantgate-demo / demo-secret are accepted")
	fs.BoolVar(&o.http, "http", false, "serve plain HTTP instead of HTTPS (MSAL refuses plain-HTTP authorities)")
	fs.StringVar(&o.cert, "cert", "", "PEM server certificate `file` to use instead of the generated one (with --key)")
	fs.StringVar(&o.key, "key", "", "PEM private key `file` of --cert")
	fs.StringVar(&o.publicURL, "public-url", "", "base `URL` to advertise and to expect as token audience, when clients reach the emulator through another name")
	fs.StringVar(&o.logLevel, "log-level", "", "log `level`: trace, debug, info, warn or error (default info)")
	fs.StringVar(&o.logFormat, "log-format", "", "log `format`: auto, json or console (default auto)")
	fs.BoolVar(&o.snapshot, "snapshot", false, "save the state to DIR/state.json on shutdown and restore it on start (also snapshot: true in the config)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fo-emulator --listen ADDR --data-dir DIR [--config FILE] [--http]\n\n")
		fmt.Fprintf(stderr, "A stand-in for Dynamics 365 Finance & Operations (OData, $batch, MES message service,\n")
		fmt.Fprintf(stderr, "DMF package API with blob storage) and its identity platform, for tests and rehearsals.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nExit codes: 0 clean shutdown, 1 error, 2 bad flags, 78 bad config file.\n")
		fmt.Fprintf(stderr, "Documentation: internal/foemu/README.md in the plantgate repository.\n")
	}
	return fs
}

// run is the command. ready, if not nil, receives the emulator once it
// serves (tests use it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- *foemu.Emulator) int {
	var o options
	fs := newFlagSet(stderr, &o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fo-emulator: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	if o.version {
		fmt.Fprintln(stdout, buildinfo.String("fo-emulator"))
		return exitOK
	}
	cfg := foemu.DefaultConfig()
	if o.config != "" {
		var err error
		if cfg, err = foemu.LoadConfig(o.config); err != nil {
			fmt.Fprintf(stderr, "fo-emulator: %s\n", strings.TrimPrefix(err.Error(), foemu.ErrConfig.Error()+": "))
			return exitConfig
		}
	}
	if o.listen != "" {
		cfg.Listen = o.listen
	}
	if cfg.Listen == "" {
		cfg.Listen = foemu.DefaultListen
	}
	if o.http {
		cfg.HTTP = true
	}
	if o.cert != "" || o.key != "" {
		if o.cert == "" || o.key == "" {
			fmt.Fprintln(stderr, "fo-emulator: --cert and --key go together")
			return exitUsage
		}
		cfg.TLS.CertFile, cfg.TLS.KeyFile = o.cert, o.key
	}
	if o.snapshot {
		cfg.Snapshot = true
	}
	if o.publicURL != "" {
		cfg.PublicURL = o.publicURL
	}
	level, format := cfg.Log.Level, cfg.Log.Format
	if o.logLevel != "" {
		level = o.logLevel
	}
	if o.logFormat != "" {
		format = o.logFormat
	}
	log, err := logging.New(logging.Options{Level: level, Format: logging.Format(format), Writer: stdout})
	if err != nil {
		fmt.Fprintf(stderr, "fo-emulator: %v\n", err)
		return exitUsage
	}
	elog := logging.Component(log, "fo-emulator", "", "")
	cfg.Logger = &elog
	cfg.DataDir = o.dataDir
	if cfg.DataDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		cfg.DataDir = filepath.Join(dir, "plantgate", "fo-emulator")
	}
	em, err := foemu.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "fo-emulator: %s\n", strings.TrimPrefix(err.Error(), foemu.ErrConfig.Error()+": "))
		if errors.Is(err, foemu.ErrConfig) {
			return exitConfig
		}
		return exitError
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "fo-emulator: listen: %v\n", err)
		return exitError
	}
	if err := em.Start(ln); err != nil {
		fmt.Fprintf(stderr, "fo-emulator: %v\n", err)
		if errors.Is(err, foemu.ErrConfig) {
			return exitConfig
		}
		return exitError
	}
	banner(stderr, em, o.config == "")
	if ready != nil {
		ready <- em
	}
	<-ctx.Done()
	if err := em.Close(); err != nil {
		fmt.Fprintf(stderr, "fo-emulator: shutdown: %v\n", err)
		return exitError
	}
	return exitOK
}

// banner tells the operator where everything is.
func banner(w io.Writer, em *foemu.Emulator, defaults bool) {
	c := em.Config()
	tenant := c.Identity.TenantID
	tenantNote := ""
	if tenant == "" {
		tenant = "<tenant-id>"
		tenantNote = "  (any tenant id is accepted)"
	}
	fmt.Fprintf(w, "%s\n", buildinfo.String("fo-emulator"))
	fmt.Fprintf(w, "  environment URL (token audience): %s\n", em.BaseURL())
	fmt.Fprintf(w, "  authority URL:                    %s/%s%s\n", em.BaseURL(), tenant, tenantNote)
	if em.CAFile() != "" {
		fmt.Fprintf(w, "  CA certificate (trust it):        %s\n", em.CAFile())
	} else if c.HTTP {
		fmt.Fprintf(w, "  plain HTTP: MSAL and other clients that insist on https will refuse this authority\n")
	}
	fmt.Fprintf(w, "  OData service root:               %s/data\n", em.BaseURL())
	fmt.Fprintf(w, "  inspection and faults:            %s/_emulator/\n", em.BaseURL())
	fmt.Fprintf(w, "  DMF blob store:                   %s\n", c.DMF.Blob.Mode)
	if defaults {
		fmt.Fprintf(w, "  no --config: one client is accepted, %s with secret %s\n", foemu.DefaultClientID, foemu.DefaultClientSecret)
	} else {
		ids := make([]string, len(c.Identity.Clients))
		for i, cl := range c.Identity.Clients {
			ids[i] = cl.ClientID
		}
		fmt.Fprintf(w, "  clients: %s\n", strings.Join(ids, ", "))
	}
	fmt.Fprintf(w, "  client assertions (certificate credentials) are accepted without checking their signature\n")
}
