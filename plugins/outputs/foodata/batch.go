package foodata

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// item follows one record through a batched write.
type item struct {
	i      int
	r      pipeline.Record
	e      *entity
	method string // of the next attempt: POST, or PATCH
	marked bool
	done   bool  // outcome decided: err nil (delivered) or permanent
	err    error // the outcome, or why it is retried
}

// writeBatch sends the records in $batch requests of changesets. Records
// of one key always share a changeset within a request (the rest of the
// key waits for the next request), so a changeset that fails and is
// rolled back can never leave a later record of its key applied before an
// earlier one. A failed changeset's failing operation is classified on its
// own; its other operations were rolled back and go out again in the next
// request. Each request is one "round"; a write ends when every record is
// delivered, rejected, or must wait (throttling, a transient failure).
func (s *Sink) writeBatch(ctx context.Context, batch []pipeline.Record) error {
	items := make([]*item, len(batch))
	var firstErr error
	stop := false // throttled or cancelled: send nothing more in this write
	blocked := map[string]bool{}
	var pending, singles []*item
	for i, r := range batch {
		it := &item{i: i, r: r, method: http.MethodPost}
		if s.cfg.Mode == ModeUpdate {
			it.method = http.MethodPatch
		}
		items[i] = it
		if stop || blocked[r.Key] {
			continue
		}
		e, merr := s.mapRecord(r)
		done, err := s.preflight(ctx, r, e)
		switch {
		case done && (err == nil || pipeline.IsPermanent(err)):
			it.done, it.err = true, err
		case done:
			it.err = err
			blocked[r.Key] = true
			firstErr = firstOf(firstErr, err)
			stop = isThrottle(err) || ctx.Err() != nil
		case merr != nil:
			s.rejected.Add(1)
			it.done, it.err = true, pipeline.Permanent(fmt.Errorf("map record to %s: %w", s.cfg.Entity, merr))
		default:
			it.e = e
			pending = append(pending, it)
		}
	}
	for len(pending) > 0 && !stop {
		if ctx.Err() != nil {
			firstErr = firstOf(firstErr, ctx.Err())
			break
		}
		// A key with records in the one-by-one fallback sends all its later
		// records one by one as well, after those: a $batch round must
		// never overtake them.
		pending = moveToSingles(pending, &singles)
		sets, next := s.plan(pending, blocked)
		if len(sets) == 0 {
			break
		}
		var again []*item
		again, singles, stop, firstErr = s.round(ctx, sets, blocked, singles, firstErr)
		pending = append(next, again...)
		sort.Slice(pending, func(a, b int) bool { return pending[a].i < pending[b].i })
	}
	// Changesets whose failing operation F&O did not name: write those
	// records one by one for a precise answer each.
	sort.Slice(singles, func(a, b int) bool { return singles[a].i < singles[b].i })
	for _, it := range singles {
		if stop || blocked[it.r.Key] || ctx.Err() != nil {
			continue
		}
		err := s.sendOne(ctx, it.r, it.e, it.method)
		switch {
		case err == nil || pipeline.IsPermanent(err):
			it.done, it.err = true, err
		default:
			it.err = err
			blocked[it.r.Key] = true
			firstErr = firstOf(firstErr, err)
			stop = isThrottle(err)
		}
	}
	pe := &pipeline.PartialError{Err: firstErr}
	for _, it := range items {
		if !it.done {
			continue
		}
		if it.err == nil {
			pe.Accepted = append(pe.Accepted, it.i)
			continue
		}
		if pe.Rejected == nil {
			pe.Rejected = map[int]error{}
		}
		pe.Rejected[it.i] = it.err
	}
	switch {
	case len(pe.Accepted) == len(batch):
		return nil
	case len(pe.Accepted) == 0 && len(pe.Rejected) == 0:
		if firstErr == nil {
			firstErr = errors.New("batch not written")
		}
		return firstErr
	}
	return pe
}

func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func isThrottle(err error) bool {
	var te *pipeline.ThrottleError
	return errors.As(err, &te)
}

// moveToSingles moves the pending items of keys that have items in
// singles to singles, and returns the rest. The singles are written one by
// one in record order after the $batch rounds, so a key's records stay in
// order once one of them fell back.
func moveToSingles(pending []*item, singles *[]*item) []*item {
	if len(*singles) == 0 {
		return pending
	}
	fallback := make(map[string]bool, len(*singles))
	for _, it := range *singles {
		fallback[it.r.Key] = true
	}
	kept := pending[:0]
	for _, it := range pending {
		if fallback[it.r.Key] {
			*singles = append(*singles, it)
		} else {
			kept = append(kept, it)
		}
	}
	return kept
}

// plan groups pending items into changesets of at most changeset_size
// operations, keeping each key's items of this request in one changeset
// in order; items that do not fit wait for the next request.
func (s *Sink) plan(pending []*item, blocked map[string]bool) (sets [][]*item, next []*item) {
	size := s.cfg.Batch.ChangesetSize
	setOf := map[string]int{}
	deferred := map[string]bool{}
	for _, it := range pending {
		k := it.r.Key
		switch {
		case blocked[k]:
			continue
		case deferred[k]:
			next = append(next, it)
			continue
		}
		ci, ok := setOf[k]
		if ok && len(sets[ci]) >= size {
			deferred[k] = true
			next = append(next, it)
			continue
		}
		if !ok {
			if len(sets) == 0 || len(sets[len(sets)-1]) >= size {
				sets = append(sets, nil)
			}
			ci = len(sets) - 1
			setOf[k] = ci
		}
		sets[ci] = append(sets[ci], it)
	}
	return sets, next
}

// round sends one $batch request and books every answer. It returns the
// items to send again in the next request (rolled back, or switched from
// POST to PATCH by upsert), the items to write one by one, and whether
// to stop.
func (s *Sink) round(ctx context.Context, sets [][]*item, blocked map[string]bool, singles []*item, firstErr error) ([]*item, []*item, bool, error) {
	var all []*item
	byID := map[string]*item{}
	ops := make([][]d365.BatchOp, len(sets))
	n := 0
	for ci, set := range sets {
		for _, it := range set {
			n++
			id := strconv.Itoa(n)
			byID[id] = it
			all = append(all, it)
			op := d365.BatchOp{Method: it.method, ContentID: id}
			if it.method == http.MethodPatch {
				op.URL, op.Body = it.e.path+"?cross-company=true", s.patchBody(it.e)
			} else {
				op.URL, op.Body = url.PathEscape(s.cfg.Entity), it.e.body
			}
			ops[ci] = append(ops[ci], op)
		}
	}
	var buf bytes.Buffer
	ct, err := d365.WriteBatch(&buf, s.env.ServiceRoot(), ops)
	if err != nil {
		for _, it := range all {
			it.err = err
		}
		return nil, singles, true, firstOf(firstErr, fmt.Errorf("build $batch request: %w", err))
	}
	marked := false
	resp, err := s.env.Do(ctx, &d365.Request{
		Method: http.MethodPost, Path: "/data/$batch", Body: buf.Bytes(), ContentType: ct, Op: "batch",
		Priority: s.priority(all[0].r),
		BeforeSend: func() error {
			if err := s.markAll(ctx, all); err != nil {
				return err
			}
			marked = true
			return nil
		},
	})
	var parts []d365.PartResponse
	if err == nil {
		var perr error
		parts, perr = d365.ParseBatchResponse(resp.Header.Get("Content-Type"), resp.Body)
		if perr != nil {
			// F&O processed the request but its answer is unreadable: the
			// outcome of every record is unknown.
			err = &d365.Error{Op: "POST /data/$batch", Status: resp.Status, Message: perr.Error(), InDoubt: true, Err: d365.ErrInDoubt}
		}
	}
	if err != nil {
		switch {
		case marked && d365.IsInDoubt(err):
			for _, it := range all {
				it.err = err
				if it.e.path == "" && s.cfg.InDoubt == "hold" {
					it.done, it.err = true, s.hold(ctx, it.r, err.Error())
				}
			}
			return nil, singles, true, firstOf(firstErr, err)
		case pipeline.IsPermanent(err):
			// The request as a whole was refused: find the culprit record
			// by record.
			s.unmark(ctx, all, marked)
			return nil, append(singles, all...), false, firstErr
		default:
			s.unmark(ctx, all, marked)
			for _, it := range all {
				it.err = err
			}
			return nil, singles, true, firstOf(firstErr, err)
		}
	}
	groups := map[int][]d365.PartResponse{}
	for _, p := range parts {
		groups[p.Changeset] = append(groups[p.Changeset], p)
	}
	if len(groups[0]) > 0 || len(groups) != len(sets) {
		err := &d365.Error{Op: "POST /data/$batch", Status: resp.Status, InDoubt: true, Err: d365.ErrInDoubt,
			Message: fmt.Sprintf("the answer holds %d changesets for the %d sent", len(groups), len(sets))}
		for _, it := range all {
			it.err = err
			if it.e.path == "" && s.cfg.InDoubt == "hold" {
				it.done, it.err = true, s.hold(ctx, it.r, err.Error())
			}
		}
		return nil, singles, true, firstOf(firstErr, err)
	}
	var again []*item
	stop := false
	now := s.env.Now()
	for ci, set := range sets {
		answers := groups[ci+1]
		ok := len(answers) == len(set)
		for _, a := range answers {
			ok = ok && a.Status >= 200 && a.Status < 300
		}
		if ok {
			s.settleAll(ctx, set)
			continue
		}
		var failed d365.PartResponse
		for _, a := range answers {
			if a.Status >= 300 {
				failed = a
				break
			}
		}
		if failed.Status == 0 {
			// Fewer answers than operations, none failed: whether the
			// changeset was applied is unknown.
			derr := &d365.Error{Op: "POST /data/$batch", Status: resp.Status, InDoubt: true, Err: d365.ErrInDoubt,
				Message: fmt.Sprintf("changeset %d: %d answers for %d operations", ci+1, len(answers), len(set))}
			for _, it := range set {
				it.err = derr
				if it.e.path == "" && s.cfg.InDoubt == "hold" {
					it.done, it.err = true, s.hold(ctx, it.r, derr.Error())
				}
			}
			stop = true
			firstErr = firstOf(firstErr, derr)
			continue
		}
		var culprit *item
		if it, found := byID[failed.ContentID]; found {
			culprit = it
		} else if len(set) == 1 {
			culprit = set[0]
		}
		cerr := d365.Classify(opName(culprit, s), failed.Status, failed.Header, failed.Body, now)
		if failed.Status == http.StatusTooManyRequests || isThrottle(cerr) {
			// The whole changeset was throttled: nothing of it was applied.
			s.unmark(ctx, set, true)
			for _, it := range set {
				it.err = cerr
			}
			stop = true
			firstErr = firstOf(firstErr, cerr)
			continue
		}
		if culprit == nil {
			s.unmark(ctx, set, true)
			singles = append(singles, set...)
			continue
		}
		for _, it := range set {
			if it != culprit {
				again = append(again, it) // rolled back with the changeset
			}
		}
		switch {
		case s.cfg.Mode == ModeUpsert && culprit.method == http.MethodPost && d365.IsDuplicate(cerr):
			culprit.method = http.MethodPatch
			again = append(again, culprit)
		case pipeline.IsPermanent(cerr):
			culprit.done, culprit.err = true, s.settle(ctx, culprit.r, culprit.e, true, cerr)
		default:
			culprit.err = s.settle(ctx, culprit.r, culprit.e, true, cerr)
			blocked[culprit.r.Key] = true
			firstErr = firstOf(firstErr, cerr)
		}
	}
	return again, singles, stop, firstErr
}

func opName(it *item, s *Sink) string {
	if it == nil {
		return "POST /data/$batch"
	}
	if it.method == http.MethodPatch {
		return "PATCH " + it.e.path
	}
	return "POST " + s.cfg.Entity
}

// markAll marks items in flight; concurrent writes share the queue's
// group commits.
func (s *Sink) markAll(ctx context.Context, items []*item) error {
	if !s.tracker.Enabled() {
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(items))
	sem := make(chan struct{}, 32)
	for i, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = s.tracker.Sending(ctx, it.r)
			it.marked = errs[i] == nil
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// unmark clears the markers of items that certainly were not applied.
func (s *Sink) unmark(ctx context.Context, items []*item, marked bool) {
	if !marked {
		return
	}
	for _, it := range items {
		// A keyed entity's mark stays until its ack: a restart verifies it.
		if it.e.path == "" {
			if err := s.tracker.NotSent(ctx, it.r); err != nil {
				s.log.Warn().Err(err).Uint64(logging.FieldSeq, it.r.Seq).Msg("clear in-flight marker")
			}
		}
	}
}

// sendOne writes one record on its own, without the in-doubt preflight
// (its batched attempt is known to have failed).
func (s *Sink) sendOne(ctx context.Context, r pipeline.Record, e *entity, method string) error {
	marked := false
	mark := func() error {
		if err := s.tracker.Sending(ctx, r); err != nil {
			return err
		}
		marked = true
		return nil
	}
	first, then := s.requests(r, e, method)
	first.BeforeSend = mark
	_, err := s.env.Do(ctx, first)
	if err != nil && then != nil && d365.IsDuplicate(err) {
		then.BeforeSend = mark
		_, err = s.env.Do(ctx, then)
	}
	return s.settle(ctx, r, e, marked, err)
}

// requests returns the request that writes e with method, and for an
// upsert the PATCH sent when F&O answers that the entity exists (nil
// otherwise). sendOne sends them; PreviewRequest shows them.
func (s *Sink) requests(r pipeline.Record, e *entity, method string) (first, then *d365.Request) {
	patch := func() *d365.Request {
		return &d365.Request{Method: http.MethodPatch, Path: s.patchPath(e), Body: s.patchBody(e), Op: "odata", Priority: s.priority(r)}
	}
	if method == http.MethodPatch {
		return patch(), nil
	}
	first = &d365.Request{Method: http.MethodPost, Path: "/data/" + url.PathEscape(s.cfg.Entity), Body: e.body, Op: "odata", Priority: s.priority(r)}
	if s.cfg.Mode == ModeUpsert {
		then = patch()
	}
	return first, then
}

// settleAll books delivered items; concurrent state writes share the
// queue's group commits.
func (s *Sink) settleAll(ctx context.Context, items []*item) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			it.done, it.err = true, s.settle(ctx, it.r, it.e, it.marked, nil)
		}()
	}
	wg.Wait()
}
