package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/queue"
)

// While a gateway runs it holds the queue file's lock, so the queue
// commands go through its admin API instead: the gateway writes its API's
// URL to <data_dir>/api.url, and the admin token comes from
// $PLANTGATE_ADMIN_TOKEN or, failing that, from the config's own
// reference (which the service's credentials may make unreadable here).

// apiClient talks to a running gateway's admin API.
type apiClient struct {
	base, token, who string
	hc               *http.Client
}

// errNoGateway: no gateway answers for this config.
var errNoGateway = errors.New("no running gateway")

// runningGateway returns a client for the gateway running with cfg, or
// errNoGateway.
func runningGateway(cfg *config.Config, cfgPath string) (*apiClient, error) {
	b, err := os.ReadFile(app.AddrFile(cfg)) //nolint:gosec // in the data dir the operator's config names
	if err != nil {
		return nil, errNoGateway
	}
	base := strings.TrimSpace(string(b))
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t := cfg.HTTP.TLS; t != nil {
		// The listener's own certificate is trusted besides the system
		// roots, so a self-signed one works for the local CLI.
		if pem, err := os.ReadFile(t.CertFile); err == nil { //nolint:gosec // the listener certificate the config names
			pool, _ := x509.SystemCertPool()
			if pool == nil {
				pool = x509.NewCertPool()
			}
			pool.AppendCertsFromPEM(pem)
			tcfg.RootCAs = pool
		}
		if u, err := url.Parse(base); err == nil {
			// The certificate names the configured host, not 127.0.0.1.
			if h, _, err := net.SplitHostPort(cfg.HTTP.Listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
				tcfg.ServerName = h
			} else {
				tcfg.ServerName = u.Hostname()
			}
		}
	}
	c := &apiClient{base: base, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tcfg}}}
	probe := &http.Client{Timeout: 2 * time.Second, Transport: c.hc.Transport}
	resp, err := probe.Get(base + "/healthz") //nolint:gosec // the local gateway's own API, from its api.url
	if err != nil {
		return nil, errNoGateway
	}
	_ = resp.Body.Close()
	c.token = os.Getenv("PLANTGATE_ADMIN_TOKEN")
	if c.token == "" {
		full, err := config.Load(cfgPath, app.ConfigOptions())
		if err == nil {
			c.token = full.HTTP.AdminToken.Reveal()
		}
	}
	if c.token == "" {
		return nil, fmt.Errorf("a gateway runs (%s) and holds the queue: set PLANTGATE_ADMIN_TOKEN to its http.admin_token to use its admin API", base)
	}
	c.who = os.Getenv("SUDO_USER")
	if u, err := user.Current(); err == nil && c.who == "" {
		c.who = u.Username
	}
	return c, nil
}

// call sends a request and decodes the JSON answer into out; a non-2xx
// answer is an error with the gateway's message.
func (c *apiClient) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd) //nolint:gosec // the local gateway's own API
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("X-Plantgate-Operator", c.who+" (cli)")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req) //nolint:gosec // the local gateway's own API
	if err != nil {
		return fmt.Errorf("gateway API %s: %w", c.base, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			e.Error = "the gateway refused the admin token (check PLANTGATE_ADMIN_TOKEN)"
		}
		return fmt.Errorf("gateway API: %s %s: %d: %s", method, path, resp.StatusCode, e.Error)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// queueViaAPI runs a queue subcommand against a running gateway.
func queueViaAPI(c *apiClient, sub string, o queueOpts, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "plantgate:", err)
		return exitFailure
	}
	printJSON := func(v any) {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	q := url.Values{}
	if o.stream != "" {
		q.Set("stream", o.stream)
	}
	if o.after > 0 {
		q.Set("after", strconv.FormatUint(o.after, 10))
	}
	if o.limit > 0 {
		q.Set("limit", strconv.Itoa(o.limit))
	} else {
		q.Set("limit", "1000")
	}
	fmt.Fprintf(stderr, "plantgate: a gateway is running; using its admin API at %s\n", c.base)
	switch sub {
	case "stats":
		var st app.Status
		if err := c.call(http.MethodGet, "/api/v1/status", nil, &st); err != nil {
			return fail(err)
		}
		if o.json {
			if st.Queue.Streams == nil {
				st.Queue.Streams = []queue.StreamStats{}
			}
			printJSON(st.Queue)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STREAM\tRECORDS\tBYTES\tDEAD\tOLDEST AGE")
		for _, x := range st.Queue.Streams {
			age := "-"
			if !x.Oldest.IsZero() {
				age = x.OldestAge.Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", x.Stream, x.Records, x.Bytes, x.Dead, age)
		}
		fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t\n", st.Queue.Records, st.Queue.Bytes, st.Queue.Dead)
		_ = tw.Flush()
	case "list":
		var res struct{ Records []app.RecordView }
		if err := c.call(http.MethodGet, "/api/v1/admin/records?"+q.Encode(), nil, &res); err != nil {
			return fail(err)
		}
		if o.json {
			printJSON(res.Records)
			return exitOK
		}
		for _, r := range res.Records {
			b, _ := json.Marshal(r.Fields)
			fmt.Fprintf(stdout, "%d\tkey=%s\tid=%s\t%s\t%s\n", r.Seq, r.Key, r.ID, r.Time.Format(time.RFC3339), b)
		}
	case "dead":
		var res struct {
			DeadLetters []app.DeadLetterView `json:"dead_letters"`
		}
		if err := c.call(http.MethodGet, "/api/v1/admin/dead?"+q.Encode(), nil, &res); err != nil {
			return fail(err)
		}
		if o.json {
			printJSON(res.DeadLetters)
			return exitOK
		}
		for _, d := range res.DeadLetters {
			fmt.Fprintf(stdout, "%s\t%d\t%s\t%s\n", d.Stream, d.Seq, d.DeadAt.Format(time.RFC3339), d.Reason)
			if d.Raw != "" {
				fmt.Fprintf(stdout, "\traw: %q\n", truncate([]byte(d.Raw), 300))
			}
		}
	case "replay":
		var res struct{ Message string }
		if err := c.call(http.MethodPost, "/api/v1/admin/dead/replay", map[string]any{"stream": o.stream, "seqs": o.seqs}, &res); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, res.Message+"; the gateway delivers them now")
	case "purge":
		what := "dead"
		switch {
		case o.all:
			what = "stream"
		case o.dead && o.items:
			what = "both"
		case o.items:
			what = "items"
		}
		var res struct{ Message string }
		if err := c.call(http.MethodPost, "/api/v1/admin/purge", map[string]any{"stream": o.stream, "seqs": o.seqs, "all": o.all || len(o.seqs) == 0, "what": what, "confirm": true}, &res); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, res.Message)
	case "in-doubt":
		var res struct {
			InDoubt []app.InDoubtEntry `json:"in_doubt"`
		}
		if err := c.call(http.MethodGet, "/api/v1/admin/in-doubt?"+q.Encode(), nil, &res); err != nil {
			return fail(err)
		}
		if o.json {
			printJSON(res.InDoubt)
			return exitOK
		}
		if len(res.InDoubt) == 0 {
			fmt.Fprintln(stdout, "no records in doubt")
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STREAM\tSEQ\tKEY\tSTATE\tSINK\tSINCE\tREASON")
		for _, e := range res.InDoubt {
			state := e.State
			if e.Behind != 0 {
				state += fmt.Sprintf(" (behind %d)", e.Behind)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", e.Stream, e.Seq, e.Key, state, e.Sink, e.Since.Format(time.RFC3339), truncate([]byte(e.Reason), 160))
		}
		_ = tw.Flush()
	case "release", "drop":
		path := "/api/v1/admin/in-doubt/release"
		if sub == "drop" {
			path = "/api/v1/admin/in-doubt/drop"
		}
		var res struct{ Message string }
		if err := c.call(http.MethodPost, path, map[string]any{"stream": o.stream, "seqs": o.seqs, "all": o.all, "confirm": true}, &res); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, res.Message+"; the gateway delivers them now")
	default:
		fmt.Fprintf(stderr, "plantgate queue %s: the gateway at %s is running and holds the queue file; stop it first (systemctl stop plantgate)\n", sub, c.base)
		return exitTempFail
	}
	return exitOK
}

// queueOpts are the parsed flags of a queue subcommand.
type queueOpts struct {
	stream                 string
	after                  uint64
	limit                  int
	seqs                   []uint64
	json, dead, items, all bool
}
