package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	gopcua "github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/plugins/inputs/opcua"
)

const opcuaUsage = `  plantgate opcua SUBCOMMAND         OPC UA helpers for writing a config:
      browse (--endpoint URL [--security P/M] | -c FILE --source NAME) [--node ID] [--depth N] [--json]
                                     list nodes with their nsu= ids, data types, access and values
      read   (--endpoint URL [--security P/M] | -c FILE --source NAME) --node ID [--json]
                                     read one node
      trust  (--pki DIR | -c FILE --source NAME) [FILE|FINGERPRINT]
                                     list rejected and trusted server certificates, or trust one
`

var opcuaSubcommands = []string{"browse", "read", "trust"}

const opcuaHelp = `Usage:
` + opcuaUsage + `
--security is POLICY/MODE (Basic256Sha256/SignAndEncrypt, Aes256_Sha256_RsaPss/Sign,
None/None) or auto; default Basic256Sha256/SignAndEncrypt. With -c and --source the
endpoint, security, login and certificate folder come from that opcua source.
Without --source the certificates are kept in --pki (default: <data_dir>/opcua-cli/pki
of the config, or ./opcua-pki). A server certificate seen for the first time is
refused and filed under the folder's rejected/; trust it with plantgate opcua trust,
or pin it with --fingerprint.
`

func cmdOPCUA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, opcuaHelp)
		return exitUsage
	}
	sub := args[0]
	switch {
	case sub == "-h" || sub == "--help" || sub == "help":
		fmt.Fprint(stdout, opcuaHelp)
		return exitOK
	case !slices.Contains(opcuaSubcommands, sub):
		fmt.Fprintf(stderr, "plantgate opcua: unknown subcommand %q (subcommands: %s)\n\n%s", sub, strings.Join(opcuaSubcommands, ", "), opcuaHelp)
		return exitUsage
	}
	fs, cfgPath := newFlags("opcua "+sub, stderr)
	source := fs.String("source", "", "an opcua source of the config: its endpoint, security, login and certificates")
	pkiDir := fs.String("pki", "", "certificate folder (own, trusted, rejected)")
	var endpoint, security, node, user, passEnv, fingerprint *string
	var depth *int
	var asJSON *bool
	if sub != "trust" {
		endpoint = fs.String("endpoint", "", "server URL, opc.tcp://host:port[/path]")
		security = fs.String("security", "Basic256Sha256/SignAndEncrypt", "POLICY/MODE or auto")
		user = fs.String("username", "", "log in with this user name (password from --password-env)")
		passEnv = fs.String("password-env", "PLANTGATE_OPCUA_PASSWORD", "environment variable holding the password")
		fingerprint = fs.String("fingerprint", "", "accept only the server certificate with this SHA-256 fingerprint")
		node = fs.String("node", "", "node id: nsu=URI;s=Name, ns=N;s=Name or i=N")
		asJSON = fs.Bool("json", false, "print JSON")
		if sub == "browse" {
			depth = fs.Int("depth", 4, "levels below the start node")
		}
	}
	if code, ok := parseFlags(fs, args[1:], opcuaHelp, stdout, stderr); !ok {
		return code
	}
	explicitConfig := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "c" || f.Name == "config" {
			explicitConfig = true
		}
	})
	var cfg *config.Config
	if *source != "" || explicitConfig {
		copts := app.ConfigOptions()
		copts.SkipSecrets = sub == "trust"
		c, err := config.Load(*cfgPath, copts)
		if err != nil {
			return reportConfigError(err, stderr)
		}
		cfg = c
	}
	var sc opcua.Config
	appURI := "urn:plantgate:cli"
	if *source != "" {
		p := cfg.Sources[*source]
		var names []string
		for n, s := range cfg.Sources {
			if s.Type == "opcua" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		if p == nil || p.Type != "opcua" {
			fmt.Fprintf(stderr, "plantgate opcua %s: no opcua source %q in the config (opcua sources: %s)\n", sub, *source, strings.Join(names, ", "))
			return exitUsage
		}
		sc = *p.Settings.(*opcua.Config)
		if *pkiDir == "" {
			*pkiDir = opcua.PKIDir(cfg.Gateway.DataDir, *source)
		}
		appURI = sc.ApplicationURI
		if appURI == "" {
			appURI = "urn:plantgate:" + cfg.Gateway.ID + ":" + *source
		}
	}
	if *pkiDir == "" {
		if cfg != nil {
			*pkiDir = filepath.Join(cfg.Gateway.DataDir, "opcua-cli", "pki")
		} else {
			*pkiDir = "opcua-pki"
		}
	}
	pki := opcua.PKI{Dir: *pkiDir}
	if sub == "trust" {
		return opcuaTrust(pki, fs.Args(), stdout, stderr)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "plantgate opcua %s: unexpected argument %q (flags go before it)\n", sub, fs.Arg(0))
		return exitUsage
	}
	if *source == "" {
		if *endpoint == "" {
			fmt.Fprintf(stderr, "plantgate opcua %s: --endpoint URL (or -c FILE --source NAME) is required\n", sub)
			return exitUsage
		}
		sc.Endpoint = *endpoint
		pol, mode, ok := strings.Cut(*security, "/")
		if pol == "None" && !ok {
			mode = "None"
		}
		if pol == "auto" {
			mode = "SignAndEncrypt"
		}
		sc.Security = opcua.Security{Policy: pol, Mode: mode}
		sc.Auth.Type = "anonymous"
		if *user != "" {
			sc.Auth = opcua.Auth{Type: "username", Username: *user, Password: logging.NewSecret(os.Getenv(*passEnv))}
		}
		sc.ServerFingerprint = *fingerprint
	} else if *endpoint != "" {
		sc.Endpoint = *endpoint
	}
	if sub == "read" && *node == "" {
		fmt.Fprintln(stderr, "plantgate opcua read: --node ID is required")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := opcua.Dial(ctx, &sc, *pkiDir, appURI)
	if err != nil {
		fmt.Fprintf(stderr, "plantgate opcua %s: %v\n", sub, err)
		return exitFailure
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = c.Close(cctx)
		ccancel()
	}()
	if sub == "read" {
		return opcuaRead(ctx, c, *node, *asJSON, stdout, stderr)
	}
	var start *ua.NodeID
	if *node != "" {
		ref, err := opcua.ParseNodeRef(*node)
		if err != nil {
			fmt.Fprintf(stderr, "plantgate opcua browse: --node: %v\n", err)
			return exitUsage
		}
		ns, err := c.NamespaceArray(ctx)
		if err == nil {
			start, err = ref.Resolve(ns)
		}
		if err != nil {
			fmt.Fprintf(stderr, "plantgate opcua browse: --node: %v\n", err)
			return exitFailure
		}
	}
	nodes, err := opcua.Browse(ctx, c, start, *depth)
	if err != nil {
		fmt.Fprintf(stderr, "plantgate opcua browse: %v\n", err)
		if len(nodes) == 0 {
			return exitFailure
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if nodes == nil {
			nodes = []opcua.NodeInfo{}
		}
		_ = enc.Encode(nodes)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tCLASS\tTYPE\tACCESS\tVALUE\tID")
	for _, n := range nodes {
		v := ""
		if n.Value != nil {
			v = fmt.Sprint(n.Value)
			if len(v) > 40 {
				v = v[:37] + "..."
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Path, strings.TrimPrefix(n.Class, "NodeClass"), n.DataType, n.Access, v, n.ID)
	}
	_ = tw.Flush()
	return exitOK
}

func opcuaRead(ctx context.Context, c *gopcua.Client, node string, asJSON bool, stdout, stderr io.Writer) int {
	dv, resolved, err := opcua.ReadNode(ctx, c, node)
	if err != nil {
		fmt.Fprintf(stderr, "plantgate opcua read: %v\n", err)
		return exitFailure
	}
	v, quality := opcua.Value(dv)
	out := map[string]any{"node": node, "resolved": resolved, "value": v, "quality": quality, "type": fmt.Sprintf("%T", v)}
	if !dv.SourceTimestamp.IsZero() {
		out["source_time"] = dv.SourceTimestamp.UTC()
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s (%s)\n  value:   %v (%T)\n  quality: %s\n", node, resolved, v, v, quality)
	if t, ok := out["source_time"]; ok {
		fmt.Fprintf(stdout, "  time:    %v\n", t)
	}
	return exitOK
}

func opcuaTrust(pki opcua.PKI, args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 {
		fmt.Fprintln(stderr, "plantgate opcua trust: at most one certificate (file name under rejected/ or fingerprint)")
		return exitUsage
	}
	if len(args) == 1 {
		dst, err := pki.Trust(args[0])
		if err != nil {
			fmt.Fprintf(stderr, "plantgate opcua trust: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "trusted: %s\n", dst)
		return exitOK
	}
	for _, dir := range []struct{ name, path string }{{"rejected", pki.Rejected()}, {"trusted", pki.Trusted()}} {
		entries, _ := os.ReadDir(dir.path)
		fmt.Fprintf(stdout, "%s (%s):\n", dir.name, dir.path)
		if len(entries) == 0 {
			fmt.Fprintln(stdout, "  none")
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir.path, e.Name()))
			if err != nil {
				continue
			}
			subject, expires := "?", "?"
			if cert, err := x509.ParseCertificate(b); err == nil {
				subject, expires = cert.Subject.String(), cert.NotAfter.UTC().Format(time.DateOnly)
			}
			fmt.Fprintf(stdout, "  %s\n    subject %s, expires %s\n    SHA-256 %s\n", e.Name(), subject, expires, opcua.Fingerprint(b))
		}
	}
	return exitOK
}
