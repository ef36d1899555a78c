package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// queueSubcommands are the subcommands of plantgate queue, in usage order.
var queueSubcommands = []string{"stats", "list", "dead", "replay", "purge", "in-doubt", "release", "drop", "check", "compact"}

// queueSubHelp is the help of one queue subcommand: its lines of queueUsage.
func queueSubHelp(sub string) string {
	var b strings.Builder
	b.WriteString("Usage:\n  plantgate queue " + sub + " [-c FILE | --queue FILE] [flags]\n\n")
	for _, l := range strings.Split(queueUsage, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == sub {
			b.WriteString("  " + strings.TrimSpace(l) + "\n")
		}
	}
	return b.String()
}

func cmdQueue(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "Usage:\n"+queueUsage)
		return exitUsage
	}
	sub := args[0]
	switch {
	case sub == "-h" || sub == "--help" || sub == "help":
		fmt.Fprint(stdout, "Usage:\n"+queueUsage)
		return exitOK
	case !slices.Contains(queueSubcommands, sub):
		fmt.Fprintf(stderr, "plantgate queue: unknown subcommand %q (subcommands: %s)\n\nUsage:\n%s", sub, strings.Join(queueSubcommands, ", "), queueUsage)
		return exitUsage
	}
	fs, cfgPath := newFlags("queue "+sub, stderr)
	qpath := fs.String("queue", "", "queue file (default: <gateway.data_dir>/queue.db from the config); it must exist")
	stream := fs.String("stream", "", "stream name (flow.sink, or _source.<name> for undecodable messages)")
	after := fs.Uint64("after", 0, "list records with a sequence above this")
	limit := fs.Int("limit", 50, "list, dead: most records to list (dead: per stream); 0 for all")
	seqList := fs.String("seq", "", "comma-separated sequences (default: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	dead := fs.Bool("dead", false, "purge: dead letters")
	items := fs.Bool("items", false, "purge: pending records")
	all := fs.Bool("all", false, "purge: the whole stream; release, drop: every held record of the stream")
	yes := fs.Bool("yes", false, "purge, drop: confirm")
	if code, ok := parseFlags(fs, args[1:], queueSubHelp(sub), stdout, stderr); !ok {
		return code
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "plantgate queue %s: --limit %d: want 0 (all) or more\n", sub, *limit)
		return exitUsage
	}
	path := *qpath
	opts := queue.Options{Log: zerolog.Nop()}
	var cfg *config.Config
	if path == "" {
		// Only the queue's location and options are needed: the secrets
		// stay unresolved, so this works where only the service can read
		// them (systemd credentials).
		copts := app.ConfigOptions()
		copts.SkipSecrets = true
		var err error
		cfg, err = config.Load(*cfgPath, copts)
		if err != nil {
			return reportConfigError(err, stderr)
		}

		path = app.QueuePath(cfg)
		opts = app.QueueOptions(cfg, zerolog.Nop())
		opts.CompactMinBytes = 0
	}
	var seqs []uint64
	if *seqList != "" {
		for _, s := range strings.Split(*seqList, ",") {
			v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
			if err != nil {
				fmt.Fprintf(stderr, "plantgate: --seq: %q is not a sequence number\n", s)
				return exitUsage
			}
			seqs = append(seqs, v)
		}
	}
	if (sub == "release" || sub == "drop") && (*stream == "" || len(seqs) == 0 && !*all || len(seqs) > 0 && *all) {
		fmt.Fprintf(stderr, "plantgate queue %s: give the stream and the held records: --stream S --seq N[,N...], or --stream S --all (see plantgate queue in-doubt)\n", sub)
		return exitUsage
	}
	if sub == "drop" && !*yes {
		fmt.Fprintln(stderr, "plantgate queue drop: the record is never sent; add --yes once F&O is known to have it")
		return exitUsage
	}
	if cfg != nil {
		c, err := runningGateway(cfg, *cfgPath)
		switch {
		case err == nil:
			return queueViaAPI(c, sub, queueOpts{stream: *stream, after: *after, limit: *limit, seqs: seqs, json: *asJSON, dead: *dead, items: *items, all: *all}, stdout, stderr)
		case !errors.Is(err, errNoGateway):
			fmt.Fprintln(stderr, "plantgate:", err)
			return exitTempFail
		}
	}
	if !queueFileExists(path, *qpath == "", *cfgPath, stderr) {
		return exitFailure
	}
	readOnly := sub == "stats" || sub == "list" || sub == "dead" || sub == "check" || sub == "in-doubt"
	if sub == "compact" {
		before, after, err := queue.Compact(path, opts)
		if err != nil {
			return queueErr(err, stderr)
		}
		fmt.Fprintf(stdout, "%s: compacted %d -> %d bytes\n", path, before, after)
		return exitOK
	}
	opts.ReadOnly = readOnly
	s, err := queue.Open(path, opts)
	if err != nil {
		return queueErr(err, stderr)
	}
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	out := func(v any) {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	needStream := func() bool {
		if *stream == "" {
			fmt.Fprintf(stderr, "plantgate queue %s: --stream is required (streams: %s)\n", sub, strings.Join(s.Streams(), ", "))
			return false
		}
		return true
	}
	switch sub {
	case "stats":
		st, err := s.Stats()
		if err != nil {
			return queueErr(err, stderr)
		}
		if *asJSON {
			if st.Streams == nil {
				st.Streams = []queue.StreamStats{}
			}
			out(st)
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STREAM\tRECORDS\tBYTES\tDEAD\tOLDEST AGE")
		for _, x := range st.Streams {
			age := "-"
			if !x.Oldest.IsZero() {
				age = x.OldestAge.Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", x.Stream, x.Records, x.Bytes, x.Dead, age)
		}
		fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t\n", st.Records, st.Bytes, st.Dead)
		_ = tw.Flush()
		fmt.Fprintf(stdout, "file %s: %d bytes\n", path, st.FileBytes)
	case "list":
		if !needStream() {
			return exitUsage
		}
		recs, err := s.List(*stream, *after, fetchLimit(*limit))
		if err != nil {
			return queueErr(err, stderr)
		}
		recs, more := cutList(recs, *limit)
		note := stdout
		if *asJSON {
			views := make([]recordView, len(recs))
			for i, r := range recs {
				views[i] = viewRecord(r)
			}
			out(views)
			note = stderr
		} else {
			for _, r := range recs {
				b, _ := json.Marshal(r.Fields)
				fmt.Fprintf(stdout, "%d\tkey=%s\tid=%s\t%s\t%s\n", r.Seq, r.Key, r.ID, r.Time.Format(time.RFC3339), b)
			}
		}
		if more {
			fmt.Fprintf(note, "… more records in %s; use --limit 0 for all, or --after %d for the next ones\n", *stream, recs[len(recs)-1].Seq)
		}
	case "dead":
		streams := []string{*stream}
		if *stream == "" {
			streams = s.Streams()
		}
		views := []app.DeadLetterView{}
		note := stdout
		if *asJSON {
			note = stderr // stdout stays a plain JSON array
		}
		for _, st := range streams {
			dl, err := s.ListDead(st, *after, fetchLimit(*limit))
			if err != nil {
				return queueErr(err, stderr)
			}
			dl, more := cutList(dl, *limit)
			for _, d := range dl {
				if *asJSON {
					views = append(views, app.ViewDeadLetter(st, d))
					continue
				}
				fmt.Fprintf(stdout, "%s\t%d\t%s\t%s\n", st, d.Seq, d.DeadAt.Format(time.RFC3339), d.Reason)
				if len(d.Record.Raw) > 0 {
					fmt.Fprintf(stdout, "\traw: %q\n", truncate(d.Record.Raw, 300))
				}
				if len(d.Record.Fields) > 0 {
					b, _ := json.Marshal(d.Record.Fields)
					fmt.Fprintf(stdout, "\tfields: %s\n", truncate(b, 300))
				}
			}
			if more {
				fmt.Fprintf(note, "… more dead letters in %s; use --limit 0 for all, or --stream %s --after %d for the next ones\n", st, st, dl[len(dl)-1].Seq)
			}
		}
		if *asJSON {
			out(views)
		}
	case "replay":
		if !needStream() {
			return exitUsage
		}
		n, err := s.Replay(ctx, *stream, seqs)
		if err != nil {
			return queueErr(err, stderr)
		}
		fmt.Fprintf(stdout, "replayed %d dead letters of %s; they are delivered when the gateway starts\n", n, *stream)
	case "purge":
		if !needStream() {
			return exitUsage
		}
		var what queue.PurgeWhat
		switch {
		case *all:
			what = queue.PurgeStream
		case *dead && *items:
			what = queue.PurgeItems | queue.PurgeDead
		case *dead:
			what = queue.PurgeDead
		case *items:
			what = queue.PurgeItems
		default:
			fmt.Fprintln(stderr, "plantgate queue purge: say what to delete: --dead, --items or --all")
			return exitUsage
		}
		if !*yes {
			fmt.Fprintln(stderr, "plantgate queue purge: records deleted here are never delivered; add --yes to confirm")
			return exitUsage
		}
		n, err := s.Purge(ctx, *stream, what, seqs)
		if err != nil {
			return queueErr(err, stderr)
		}
		fmt.Fprintf(stdout, "purged %d records of %s\n", n, *stream)
	case "in-doubt":
		var streams []string
		if *stream != "" {
			streams = []string{*stream}
		}
		return cmdInDoubt(s, streams, *asJSON, stdout, stderr)
	case "release", "drop":
		if err := resolveHeld(ctx, s, *stream, seqs, *all, sub == "drop", stdout); err != nil {
			return queueErr(err, stderr)
		}
	case "check":
		if err := s.Check(); err != nil {
			fmt.Fprintf(stderr, "%s: check failed:\n%v\n", path, err)
			return exitFailure
		}
		st, _ := s.Stats()
		fmt.Fprintf(stdout, "%s: ok (%d streams, %d records, %d dead letters)\n", path, len(st.Streams), st.Records, st.Dead)
	default:
		fmt.Fprintf(stderr, "plantgate queue: unknown subcommand %q\n\n%s", sub, usage)
		return exitUsage
	}
	return exitOK
}

// queueFileExists reports whether path is an existing queue file, and
// otherwise says why not on stderr: the queue commands work on a stopped
// gateway's file and must never create one (a mistyped path would
// otherwise show an empty queue).
func queueFileExists(path string, fromConfig bool, cfgPath string, stderr io.Writer) bool {
	fi, err := os.Stat(path) //nolint:gosec // the operator names the queue file (--queue or the config's data_dir)
	where := "check --queue"
	if fromConfig {
		where = "check gateway.data_dir in " + cfgPath + ", or give the file with --queue"
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(stderr, "plantgate: no queue file %s (%s); nothing was created\n", path, where)
	case err != nil:
		fmt.Fprintf(stderr, "plantgate: queue file %s: %v\n", path, err)
	case fi.IsDir():
		fmt.Fprintf(stderr, "plantgate: %s is a directory, not a queue file (%s)\n", path, where)
	default:
		return true
	}
	return false
}

// fetchLimit is the limit to ask the queue for so that cutList can tell
// whether limit cut the list; 0 means all.
func fetchLimit(limit int) int {
	if limit <= 0 {
		return 0
	}
	return limit + 1
}

// cutList trims a list fetched with fetchLimit(limit) to limit and reports
// whether records were left out.
func cutList[T any](l []T, limit int) ([]T, bool) {
	if limit > 0 && len(l) > limit {
		return l[:limit], true
	}
	return l, false
}

// recordView is a pending record as queue list --json shows it, with the
// field names of app.DeadLetterView.
type recordView struct {
	Stream   string         `json:"stream"`
	Seq      uint64         `json:"seq"`
	Key      string         `json:"key,omitempty"`
	ID       string         `json:"id,omitempty"`
	Source   string         `json:"source,omitempty"`
	Time     time.Time      `json:"time"`
	Attempts int            `json:"attempts,omitempty"`
	Fields   map[string]any `json:"fields,omitempty"`
	Meta     map[string]any `json:"meta,omitempty"`
	// Raw is the original bytes as text when they are UTF-8; otherwise
	// RawBase64 holds them.
	Raw       string `json:"raw,omitempty"`
	RawBase64 []byte `json:"raw_base64,omitempty"`
}

func viewRecord(r pipeline.Record) recordView {
	v := recordView{Stream: r.Stream, Seq: r.Seq, Key: r.Key, ID: r.ID, Source: r.Source, Time: r.Time, Attempts: r.Attempts, Fields: r.Fields, Meta: r.Meta}
	if utf8.Valid(r.Raw) {
		v.Raw = string(r.Raw)
	} else {
		v.RawBase64 = r.Raw
	}
	return v
}

func queueErr(err error, stderr io.Writer) int {
	fmt.Fprintln(stderr, "plantgate:", err)
	if errors.Is(err, queue.ErrLocked) {
		return exitTempFail
	}
	return exitFailure
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
