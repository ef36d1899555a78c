package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/queue"
)

func cmdQueue(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	sub := args[0]
	fs, cfgPath := newFlags("queue "+sub, stderr)
	qpath := fs.String("queue", "", "queue file (default: <gateway.data_dir>/queue.db from the config)")
	stream := fs.String("stream", "", "stream name (flow.sink, or _source.<name> for undecodable messages)")
	after := fs.Uint64("after", 0, "list records with a sequence above this")
	limit := fs.Int("limit", 50, "most records to list")
	seqList := fs.String("seq", "", "comma-separated sequences (default: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	dead := fs.Bool("dead", false, "purge: dead letters")
	items := fs.Bool("items", false, "purge: pending records")
	all := fs.Bool("all", false, "purge: the whole stream")
	yes := fs.Bool("yes", false, "purge, drop: confirm")
	sinkName := fs.String("sink", "", "in-doubt, release, drop: the sink")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	path := *qpath
	opts := queue.Options{Log: zerolog.Nop()}
	var sinkNames []string
	if path == "" {
		cfg, _, err := app.LoadConfig(*cfgPath)
		if err != nil {
			return reportConfigError(err, stderr)
		}
		sinkNames = cfg.SinkOrder
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
	if *sinkName != "" {
		sinkNames = []string{*sinkName}
	}
	if (sub == "release" || sub == "drop") && (*sinkName == "" || len(seqs) != 1) {
		fmt.Fprintf(stderr, "plantgate queue %s: give the sink and the held record: --sink S --seq N\n", sub)
		return exitUsage
	}
	if sub == "drop" && !*yes {
		fmt.Fprintln(stderr, "plantgate queue drop: the record is never sent; add --yes once F&O is known to have it")
		return exitUsage
	}
	if sub == "in-doubt" && len(sinkNames) == 0 {
		fmt.Fprintln(stderr, "plantgate queue in-doubt: name the sink with --sink, or give the config with -c")
		return exitUsage
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
		recs, err := s.List(*stream, *after, *limit)
		if err != nil {
			return queueErr(err, stderr)
		}
		if *asJSON {
			out(recs)
			return exitOK
		}
		for _, r := range recs {
			b, _ := json.Marshal(r.Fields)
			fmt.Fprintf(stdout, "%d\tkey=%s\tid=%s\t%s\t%s\n", r.Seq, r.Key, r.ID, r.Time.Format(time.RFC3339), b)
		}
	case "dead":
		streams := []string{*stream}
		if *stream == "" {
			streams = s.Streams()
		}
		var all []any
		for _, st := range streams {
			dl, err := s.ListDead(st, *after, *limit)
			if err != nil {
				return queueErr(err, stderr)
			}
			for _, d := range dl {
				if *asJSON {
					all = append(all, app.ViewDeadLetter(st, d))
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
		}
		if *asJSON {
			out(all)
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
		return cmdInDoubt(s, sinkNames, *asJSON, stdout, stderr)
	case "release", "drop":
		if err := resolveHeld(ctx, s, *sinkName, seqs[0], sub == "drop", stdout); err != nil {
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
