package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/queue"
)

// inDoubtEntry is one line of plantgate queue in-doubt.
type inDoubtEntry struct {
	Sink   string `json:"sink,omitempty"`
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Key    string `json:"key,omitempty"`
	// State is held, parked, or in_flight (sent when the gateway stopped;
	// resolved at the next start: verified, held or resent by policy).
	State  string    `json:"state"`
	Behind uint64    `json:"behind,omitempty"`
	Since  time.Time `json:"since"`
	// Where the record is now: "dead letter N", "queued", or "gone".
	Where  string `json:"where"`
	Target string `json:"target,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// listInDoubt lists the held and parked records of streams (all streams
// when empty) and the records sent when the gateway stopped. It needs only
// the queue file: holds and marks live beside the records.
func listInDoubt(s *queue.Store, streams []string) ([]inDoubtEntry, error) {
	if len(streams) == 0 {
		streams = s.Streams()
	}
	out := []inDoubtEntry{}
	for _, stream := range streams {
		holds, err := s.Holds(stream)
		if err != nil {
			return nil, err
		}
		marks, err := s.Marks(stream)
		if err != nil {
			return nil, err
		}
		if len(holds) == 0 && len(marks) == 0 {
			continue
		}
		where, keys, err := locate(s, stream)
		if err != nil {
			return nil, err
		}
		held := map[uint64]bool{}
		for _, h := range holds {
			held[h.Seq] = true
			out = append(out, inDoubtEntry{Sink: h.Sink, Stream: stream, Seq: h.Seq, Key: h.Key, State: h.State, Behind: h.Behind,
				Since: h.Since, Where: whereOf(where, h.Seq), Target: h.Target, Reason: h.Reason})
		}
		seqs := make([]uint64, 0, len(marks))
		for q := range marks {
			seqs = append(seqs, q)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		for _, q := range seqs {
			m := d365.DecodeMarker(marks[q])
			if held[q] || m.State != d365.MarkerSending {
				continue
			}
			out = append(out, inDoubtEntry{Stream: stream, Seq: q, Key: keys[q], State: "in_flight", Since: m.At, Where: whereOf(where, q),
				Reason: "sent when the gateway stopped, no answer recorded; checked at the next start (verified, or handled by in_doubt)"})
		}
	}
	return out, nil
}

// locate maps the original sequences of stream's records to where they
// are: "dead letter N" or "queued", and queued records to their keys.
func locate(s *queue.Store, stream string) (map[uint64]string, map[uint64]string, error) {
	where, keys := map[uint64]string{}, map[uint64]string{}
	dl, err := s.ListDead(stream, 0, 0)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range dl {
		if d.OrigSeq != 0 {
			where[d.OrigSeq] = fmt.Sprintf("dead letter %d", d.Seq)
		}
	}
	recs, err := s.List(stream, 0, 0)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range recs {
		where[r.Seq], keys[r.Seq] = "queued", r.Key
	}
	return where, keys, nil
}

func whereOf(where map[uint64]string, seq uint64) string {
	if w, ok := where[seq]; ok {
		return w
	}
	return "gone"
}

func cmdInDoubt(s *queue.Store, streams []string, asJSON bool, stdout, stderr io.Writer) int {
	entries, err := listInDoubt(s, streams)
	if err != nil {
		return queueErr(err, stderr)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(entries)
		return exitOK
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "no records in doubt")
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSEQ\tKEY\tSTATE\tSINK\tSINCE\tWHERE\tREASON")
	for _, e := range entries {
		state := e.State
		if e.Behind != 0 {
			state += fmt.Sprintf(" (behind %d)", e.Behind)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Stream, e.Seq, e.Key, state, e.Sink, e.Since.Format(time.RFC3339), e.Where, truncate([]byte(e.Reason), 160))
	}
	_ = tw.Flush()
	fmt.Fprintln(stdout, "release held records: plantgate queue release --stream S --seq N[,N...] | --all  (sends them again, then the records parked behind them)")
	fmt.Fprintln(stdout, "drop held records:    plantgate queue drop --stream S --seq N[,N...] | --all --yes  (F&O has them: they become dead letters; the parked records are delivered)")
	return exitOK
}

// resolveHeld releases (drop false) or drops held records of stream (seqs,
// or every held record with all) and frees the records parked behind
// them, keeping their order, in one queue transaction.
func resolveHeld(ctx context.Context, s *queue.Store, stream string, seqs []uint64, all, drop bool, stdout io.Writer) error {
	if all {
		seqs = nil
	}
	res, err := s.Release(ctx, stream, seqs, drop, d365.ReasonDropped)
	if err != nil {
		return err
	}
	if len(res.Holders) == 0 {
		fmt.Fprintf(stdout, "stream %s holds no records in doubt\n", stream)
		return nil
	}
	verb := "released"
	if drop {
		verb = "dropped"
	}
	held := make([]string, len(res.Holders))
	for i, q := range res.Holders {
		held[i] = fmt.Sprint(q)
	}
	fmt.Fprintf(stdout, "%s seq %s of stream %s", verb, strings.Join(held, ", "), stream)
	if drop {
		fmt.Fprintf(stdout, "; they are dead letters %q", d365.ReasonDropped)
	}
	fmt.Fprintf(stdout, "; %d records requeued in order; they are delivered when the gateway starts\n", res.Requeued)
	return nil
}
