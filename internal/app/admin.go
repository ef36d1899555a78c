package app

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
	"github.com/plantgate/plantgate/internal/queue"
)

// The admin API works while the gateway runs. Every call needs the admin
// token (Authorization: Bearer TOKEN, or Basic with the token as password
// and the operator's name as user, which browsers prompt for); the status
// page, /api/v1/status and /metrics need the read token when one is
// configured. Every operator action is appended to the audit log.

// Roles of a caller.
const (
	roleNone  = ""
	roleRead  = "read"
	roleAdmin = "admin"
)

// caller is who made a request.
type caller struct {
	Role   string
	Who    string
	Remote string
}

// authenticate returns the caller's role from its token.
func (a *App) authenticate(r *http.Request) caller {
	c := caller{Remote: r.RemoteAddr}
	tok, user := "", ""
	h := r.Header.Get("Authorization")
	if b, ok := strings.CutPrefix(h, "Bearer "); ok {
		tok = strings.TrimSpace(b)
	} else if u, p, ok := r.BasicAuth(); ok {
		tok, user = p, u
	}
	if op := r.Header.Get("X-Plantgate-Operator"); op != "" && user == "" {
		user = op
	}
	c.Who = sanitizeName(user)
	adm, rd := a.cfg.HTTP.AdminToken.Reveal(), a.cfg.HTTP.ReadToken.Reveal()
	switch {
	case tok != "" && adm != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(adm)) == 1:
		c.Role = roleAdmin
	case tok != "" && rd != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(rd)) == 1:
		c.Role = roleRead
	}
	if c.Who == "" {
		c.Who = c.Role + " token"
	}
	return c
}

// sanitizeName keeps an operator name printable and short for the log.
func sanitizeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", `Bearer realm="plantgate"`)
	w.Header().Add("WWW-Authenticate", `Basic realm="plantgate", charset="UTF-8"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
}

// reader guards a read-only endpoint: open without a read token,
// otherwise the read or the admin token.
func (a *App) reader(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.HTTP.ReadToken.Reveal() != "" && a.authenticate(r).Role == roleNone {
			unauthorized(w)
			return
		}
		h.ServeHTTP(w, r)
	}
}

// admin guards an admin handler. Without a configured admin token the
// admin API is off. A form post (the status page's buttons) must come from
// the page itself: a cross-site form cannot act with a browser's cached
// credentials.
func (a *App) admin(h func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.HTTP.AdminToken.Reveal() == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "admin API disabled: set http.admin_token"})
			return
		}
		c := a.authenticate(r)
		if c.Role != roleAdmin {
			unauthorized(w)
			return
		}
		if r.Method == http.MethodPost && isForm(r) && !sameOrigin(r) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-site form post refused"})
			return
		}
		h(w, r, c)
	}
}

func isForm(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
}

// sameOrigin: the browser says the request came from this site.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		return s == "same-origin" || s == "none"
	}
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// adminReq is the body of the admin actions, as JSON or as a form.
type adminReq struct {
	Stream  string   `json:"stream"`
	Seqs    []uint64 `json:"seqs"`
	All     bool     `json:"all"`
	Confirm bool     `json:"confirm"`
	// What, for purge: "dead" (default) or "items".
	What string `json:"what"`
	Sink string `json:"sink"`
}

// badRequest answers 400 with the reason; a form post from the page is
// sent back to it with the reason.
func badRequest(w http.ResponseWriter, r *http.Request, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if isForm(r) {
		http.Redirect(w, r, "/?error="+url.QueryEscape(msg), http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
}

func decodeReq(w http.ResponseWriter, r *http.Request) (adminReq, bool) {
	var req adminReq
	if isForm(r) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
		if err := r.ParseForm(); err != nil {
			badRequest(w, r, "form: %v", err)
			return req, false
		}
		req.Stream, req.What, req.Sink = r.PostForm.Get("stream"), r.PostForm.Get("what"), r.PostForm.Get("sink")
		req.All, req.Confirm = r.PostForm.Get("all") == "true", r.PostForm.Get("confirm") == "true"
		for _, v := range r.PostForm["seq"] {
			q, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				badRequest(w, r, "seq %q is not a sequence number", v)
				return req, false
			}
			req.Seqs = append(req.Seqs, q)
		}
		return req, true
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		badRequest(w, r, "body must be JSON like {\"stream\": \"flow.sink\", \"seqs\": [1, 2]}: %v", err)
		return req, false
	}
	return req, true
}

// done answers an action: JSON for API clients, a redirect back to the
// page (with the outcome) for its forms.
func (a *App) done(w http.ResponseWriter, r *http.Request, code int, body map[string]any, msg string) {
	if isForm(r) {
		http.Redirect(w, r, "/?done="+url.QueryEscape(msg), http.StatusSeeOther)
		return
	}
	body["message"] = msg
	writeJSON(w, code, body)
}

// fail answers a refused action and audits it.
func (a *App) fail(w http.ResponseWriter, r *http.Request, c caller, action, target string, code int, err error) {
	a.audit.write(a.log, auditEntry{Who: c.Who, Role: c.Role, Remote: c.Remote, Action: action, Target: target, Result: "refused", Error: logging.RedactText(err.Error())})
	if isForm(r) {
		http.Redirect(w, r, "/?error="+url.QueryEscape(err.Error()), http.StatusSeeOther)
		return
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (a *App) knownStream(s string) bool {
	for _, n := range a.store.Streams() {
		if n == s {
			return true
		}
	}
	return false
}

// GET /api/v1/admin/dead?stream=S&q=TEXT&after=N&limit=N: dead letters
// of one stream or of all, oldest first, optionally only those whose key,
// id, reason or fields contain q (an order number, an id). Records held in
// doubt or parked are listed by /api/v1/admin/in-doubt, not here.
func (a *App) adminDead(w http.ResponseWriter, r *http.Request, _ caller) {
	qv := r.URL.Query()
	limit, _ := strconv.Atoi(qv.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	after, _ := strconv.ParseUint(qv.Get("after"), 10, 64)
	views, err := a.deadLetters(qv.Get("stream"), qv.Get("q"), after, limit)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"stream": qv.Get("stream"), "dead_letters": views})
}

func (a *App) deadLetters(stream, q string, after uint64, limit int) ([]DeadLetterView, error) {
	streams := []string{stream}
	if stream == "" {
		streams = a.store.Streams()
	} else if !a.knownStream(stream) {
		return nil, fmt.Errorf("no stream %q", stream)
	}
	views := []DeadLetterView{}
	for _, s := range streams {
		dead, err := a.store.ListDead(s, after, 0)
		if errors.Is(err, queue.ErrUnknownStream) && stream == "" {
			continue // named in the config, nothing written yet
		}
		if err != nil {
			return nil, err
		}
		holds, _ := a.store.Holds(s)
		held := map[uint64]bool{}
		for _, h := range holds {
			held[h.Seq] = true
		}
		for _, d := range dead {
			if d.OrigSeq != 0 && held[d.OrigSeq] {
				continue // listed with the records in doubt
			}
			v := ViewDeadLetter(s, d)
			if q != "" && !v.matches(q) {
				continue
			}
			views = append(views, v)
			if len(views) >= limit {
				return views, nil
			}
		}
	}
	return views, nil
}

// matches: q occurs in the dead letter's key, id, reason, fields or raw
// bytes (case-insensitive).
func (v DeadLetterView) matches(q string) bool {
	q = strings.ToLower(q)
	fields, _ := json.Marshal(v.Fields)
	for _, s := range []string{v.Key, v.ID, v.Reason, string(fields), v.Raw} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}

// GET /api/v1/admin/dead/{stream}/{seq}
func (a *App) adminDeadOne(w http.ResponseWriter, r *http.Request, _ caller) {
	stream := r.PathValue("stream")
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		badRequest(w, r, "seq %q is not a sequence number", r.PathValue("seq"))
		return
	}
	if !a.knownStream(stream) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no stream %q", stream)})
		return
	}
	dead, err := a.store.ListDead(stream, seq-1, 1)
	if err != nil || len(dead) == 0 || dead[0].Seq != seq {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("stream %s has no dead letter %d", stream, seq)})
		return
	}
	writeJSON(w, http.StatusOK, ViewDeadLetter(stream, dead[0]))
}

// POST /api/v1/admin/dead/replay {"stream", "seqs"} (no seqs: all of the
// stream). A record held in doubt is refused with a pointer to release.
func (a *App) adminReplay(w http.ResponseWriter, r *http.Request, c caller) {
	req, ok := decodeReq(w, r)
	if !ok {
		return
	}
	target := fmt.Sprintf("stream %s seqs %s", req.Stream, seqList(req.Seqs))
	if req.Stream == "" {
		badRequest(w, r, "stream is required")
		return
	}
	n, err := a.store.Replay(r.Context(), req.Stream, nilIfEmpty(req.Seqs))
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, queue.ErrHeld) {
			code = http.StatusConflict
			err = fmt.Errorf("%w (API: POST /api/v1/admin/in-doubt/release or /drop)", err)
		}
		a.fail(w, r, c, "replay", target, code, err)
		return
	}
	a.audit.write(a.log, auditEntry{Who: c.Who, Role: c.Role, Remote: c.Remote, Action: "replay", Target: target, Result: fmt.Sprintf("%d replayed", n)})
	a.done(w, r, http.StatusOK, map[string]any{"replayed": n}, fmt.Sprintf("replayed %d dead letters of %s", n, req.Stream))
}

// POST /api/v1/admin/dead/drop {"stream", "seqs" | "all": true,
// "confirm": true}: deletes dead letters for good.
func (a *App) adminDropDead(w http.ResponseWriter, r *http.Request, c caller) {
	req, ok := decodeReq(w, r)
	if !ok {
		return
	}
	a.purge(w, r, c, req, queue.PurgeDead)
}

// POST /api/v1/admin/purge {"stream", "seqs" | "all", "what": "dead" |
// "items", "confirm": true}
func (a *App) adminPurge(w http.ResponseWriter, r *http.Request, c caller) {
	req, ok := decodeReq(w, r)
	if !ok {
		return
	}
	what := queue.PurgeDead
	switch req.What {
	case "", "dead":
	case "items":
		what = queue.PurgeItems
	case "both":
		what = queue.PurgeItems | queue.PurgeDead
	case "stream":
		if !req.All || len(req.Seqs) > 0 {
			badRequest(w, r, "what: stream removes the whole stream: give all: true and no seqs")
			return
		}
		what = queue.PurgeStream
	default:
		badRequest(w, r, "what must be dead, items, both or stream")
		return
	}
	a.purge(w, r, c, req, what)
}

func (a *App) purge(w http.ResponseWriter, r *http.Request, c caller, req adminReq, what queue.PurgeWhat) {
	if req.Stream == "" {
		badRequest(w, r, "stream is required")
		return
	}
	if len(req.Seqs) == 0 && !req.All {
		badRequest(w, r, "name the records: seqs, or all: true for the whole stream")
		return
	}
	if !req.Confirm {
		badRequest(w, r, "dropping records is final: repeat with confirm: true")
		return
	}
	noun := "dead letters"
	switch what {
	case queue.PurgeItems:
		noun = "pending records"
	case queue.PurgeStream:
		noun = "records and dead letters"
	}
	target := fmt.Sprintf("%s of stream %s seqs %s", noun, req.Stream, seqList(req.Seqs))
	if req.All {
		target = fmt.Sprintf("all %s of stream %s", noun, req.Stream)
	}
	n, err := a.store.Purge(r.Context(), req.Stream, what, nilIfEmpty(req.Seqs))
	if err != nil {
		a.fail(w, r, c, "drop", target, http.StatusBadRequest, err)
		return
	}
	a.log.Warn().Str(logging.FieldStream, req.Stream).Int(logging.FieldCount, n).Str("who", c.Who).Msg("records dropped by operator")
	a.audit.write(a.log, auditEntry{Who: c.Who, Role: c.Role, Remote: c.Remote, Action: "drop", Target: target, Result: fmt.Sprintf("%d dropped", n)})
	a.done(w, r, http.StatusOK, map[string]any{"purged": n, "dropped": n}, fmt.Sprintf("dropped %d %s of %s", n, noun, req.Stream))
}

// RecordView is a pending record in the admin API.
type RecordView struct {
	Seq    uint64         `json:"seq"`
	Key    string         `json:"key,omitempty"`
	ID     string         `json:"id,omitempty"`
	Source string         `json:"source,omitempty"`
	Time   time.Time      `json:"time"`
	Fields map[string]any `json:"fields,omitempty"`
}

// GET /api/v1/admin/records?stream=S&after=N&limit=N: pending records.
func (a *App) adminRecords(w http.ResponseWriter, r *http.Request, _ caller) {
	qv := r.URL.Query()
	stream := qv.Get("stream")
	if !a.knownStream(stream) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no stream %q (streams: %s)", stream, strings.Join(a.store.Streams(), ", "))})
		return
	}
	limit, _ := strconv.Atoi(qv.Get("limit"))
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	after, _ := strconv.ParseUint(qv.Get("after"), 10, 64)
	recs, err := a.store.List(stream, after, limit)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	out := make([]RecordView, len(recs))
	for i, rec := range recs {
		out[i] = RecordView{Seq: rec.Seq, Key: rec.Key, ID: rec.ID, Source: rec.Source, Time: rec.Time, Fields: rec.Fields}
	}
	writeJSON(w, http.StatusOK, map[string]any{"stream": stream, "records": out})
}

// InDoubtEntry is a record held in doubt or parked behind one, with the
// record's id and fields so an operator can look for it in F&O.
type InDoubtEntry struct {
	Stream string `json:"stream"`
	pipeline.Hold
	ID     string         `json:"id,omitempty"`
	Fields map[string]any `json:"fields,omitempty"`
}

// GET /api/v1/admin/in-doubt?stream=S&q=TEXT
func (a *App) adminInDoubt(w http.ResponseWriter, r *http.Request, _ caller) {
	out, err := a.inDoubtEntries(r.URL.Query().Get("stream"), r.URL.Query().Get("q"))
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"in_doubt": out})
}

func (a *App) inDoubtEntries(stream, q string) ([]InDoubtEntry, error) {
	streams := []string{stream}
	if stream == "" {
		streams = a.store.Streams()
	} else if !a.knownStream(stream) {
		return nil, fmt.Errorf("no stream %q", stream)
	}
	out := []InDoubtEntry{}
	q = strings.ToLower(q)
	for _, s := range streams {
		holds, err := a.store.Holds(s)
		if errors.Is(err, queue.ErrUnknownStream) && stream == "" {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(holds) == 0 {
			continue
		}
		// Held and parked records wait as dead letters under their
		// original sequence.
		recs := map[uint64]pipeline.Record{}
		if dead, err := a.store.ListDead(s, 0, 0); err == nil {
			for _, d := range dead {
				if d.OrigSeq != 0 {
					recs[d.OrigSeq] = d.Record
				}
			}
		}
		for _, h := range holds {
			e := InDoubtEntry{Stream: s, Hold: h, ID: recs[h.Seq].ID, Fields: recs[h.Seq].Fields}
			if q != "" {
				f, _ := json.Marshal(e.Fields)
				if !strings.Contains(strings.ToLower(h.Key+" "+h.Target+" "+h.Reason+" "+strconv.FormatUint(h.Seq, 10)+" "+e.ID+" "+string(f)), q) {
					continue
				}
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// POST /api/v1/admin/in-doubt/release {"stream", "seqs" | "all": true}:
// sends the held records again, then the records parked behind them, in
// order. No stream with all: every stream.
func (a *App) adminRelease(w http.ResponseWriter, r *http.Request, c caller) {
	a.settle(w, r, c, false)
}

// POST /api/v1/admin/in-doubt/drop {"stream", "seqs" | "all": true,
// "confirm": true}: F&O has the held records; they become dead letters and
// the parked ones are delivered.
func (a *App) adminDropHeld(w http.ResponseWriter, r *http.Request, c caller) {
	a.settle(w, r, c, true)
}

func (a *App) settle(w http.ResponseWriter, r *http.Request, c caller, drop bool) {
	req, ok := decodeReq(w, r)
	if !ok {
		return
	}
	action := "release"
	if drop {
		action = "drop held"
	}
	if len(req.Seqs) == 0 && !req.All {
		badRequest(w, r, "name the held records: stream and seqs, or all: true")
		return
	}
	if len(req.Seqs) > 0 && req.Stream == "" {
		badRequest(w, r, "seqs need their stream")
		return
	}
	if drop && !req.Confirm {
		badRequest(w, r, "dropping says F&O already has these records, and they are never sent again: repeat with confirm: true")
		return
	}
	streams := []string{req.Stream}
	if req.Stream == "" {
		streams = nil
		for _, s := range a.store.Streams() {
			if hs, err := a.store.Holds(s); err == nil && len(hs) > 0 {
				streams = append(streams, s)
			}
		}
	}
	total := queue.ReleaseResult{}
	var done []string
	for _, s := range streams {
		res, err := a.releaseStream(r.Context(), s, nilIfEmpty(req.Seqs), drop)
		target := fmt.Sprintf("stream %s seqs %s", s, seqList(req.Seqs))
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, context.DeadlineExceeded) {
				code = http.StatusConflict
			}
			a.fail(w, r, c, action, target, code, err)
			return
		}
		total.Requeued += res.Requeued
		total.Dropped += res.Dropped
		total.Holders = append(total.Holders, res.Holders...)
		if len(res.Holders) > 0 {
			done = append(done, s)
			a.audit.write(a.log, auditEntry{Who: c.Who, Role: c.Role, Remote: c.Remote, Action: action, Target: fmt.Sprintf("stream %s seqs %s", s, seqList(res.Holders)),
				Result: fmt.Sprintf("%d held, %d requeued in order", len(res.Holders), res.Requeued)})
		}
	}
	verb := "released"
	if drop {
		verb = "dropped"
	}
	a.done(w, r, http.StatusOK, map[string]any{verb: len(total.Holders), "requeued": total.Requeued, "streams": done},
		fmt.Sprintf("%s %d held records; %d records requeued in order", verb, len(total.Holders), total.Requeued))
}

// releaseStream settles held records of stream while the gateway runs:
// the stream's runner is paused until it holds no lease, so no record of
// a released key is in delivery while the queue moves it.
func (a *App) releaseStream(ctx context.Context, stream string, seqs []uint64, drop bool) (queue.ReleaseResult, error) {
	for _, rn := range a.runners {
		if rn.Stream() != stream {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resume, err := rn.Quiesce(qctx)
		cancel()
		if err != nil {
			return queue.ReleaseResult{}, fmt.Errorf("could not pause delivery of %s to release its records: %w; pause the flow, then try again", stream, err)
		}
		defer resume()
	}
	return a.store.Release(ctx, stream, seqs, drop, d365.ReasonDropped)
}

// POST /api/v1/admin/dmf/close {"sink"}: closes the open batch of a
// batching sink now.
func (a *App) adminCloseBatch(w http.ResponseWriter, r *http.Request, c caller) {
	req, ok := decodeReq(w, r)
	if !ok {
		return
	}
	if req.Sink == "" {
		badRequest(w, r, "body must be JSON {\"sink\": \"<a fo.dmf sink>\"}")
		return
	}
	bc, ok := a.sinks[req.Sink].(batchCloser)
	if !ok {
		var names []string
		for n, s := range a.sinks {
			if _, ok := s.(batchCloser); ok {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		badRequest(w, r, "sink %q does not batch; batching sinks: %s", req.Sink, strings.Join(names, ", "))
		return
	}
	bc.CloseNow()
	a.log.Info().Str(logging.FieldSink, req.Sink).Msg("batch closed by operator")
	a.audit.write(a.log, auditEntry{Who: c.Who, Role: c.Role, Remote: c.Remote, Action: "close batch", Target: "sink " + req.Sink, Result: "closing"})
	a.done(w, r, http.StatusAccepted, map[string]any{"closing": req.Sink}, "closing the open batch of "+req.Sink)
}

// batchCloser is implemented by sinks that close batches (fo.dmf).
type batchCloser interface{ CloseNow() }

const pausedScope = "_admin"

// POST /api/v1/admin/flows/{flow}/pause and .../resume: a paused flow's
// records keep being received and queued; none is delivered (a DMF
// stream closes no new batch). Pauses outlive a restart.
func (a *App) adminPause(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("flow")
	pause := strings.HasSuffix(r.URL.Path, "/pause")
	action := "resume flow"
	if pause {
		action = "pause flow"
	}
	if _, ok := a.cfg.Flows[name]; !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no flow %q (flows: %s)", name, strings.Join(a.cfg.FlowOrder, ", "))})
		return
	}
	var val []byte
	if pause {
		val = []byte(time.Now().UTC().Format(time.RFC3339))
	}
	st := a.store.Scope(pausedScope)
	var err error
	if pause {
		err = st.Put(r.Context(), "paused/"+name, val)
	} else {
		err = st.Delete(r.Context(), "paused/"+name)
	}
	if err != nil {
		a.fail(w, r, c, action, "flow "+name, http.StatusInternalServerError, err)
		return
	}
	a.mu.Lock()
	if pause {
		a.paused[name] = true
	} else {
		delete(a.paused, name)
	}
	a.mu.Unlock()
	shared := a.applyPauses()
	a.audit.write(a.log, auditEntry{Who: c.Who, Role: c.Role, Remote: c.Remote, Action: action, Target: "flow " + name, Result: "ok"})
	a.log.Info().Str(logging.FieldFlow, name).Bool("paused", pause).Str("who", c.Who).Msg("flow paused or resumed by operator")
	body := map[string]any{"flow": name, "paused": pause}
	msg := fmt.Sprintf("flow %s paused", name)
	if !pause {
		msg = fmt.Sprintf("flow %s resumed", name)
	}
	if s := shared[name]; len(s) > 0 {
		body["shares_streams_with"] = s
		msg += "; its sink's stream is shared with " + strings.Join(s, ", ") + ", which pause with it"
	}
	a.done(w, r, http.StatusOK, body, msg)
}

// loadPauses reads the flows paused before a restart.
func (a *App) loadPauses() {
	st := a.store.Scope(pausedScope)
	for _, name := range a.cfg.FlowOrder {
		if _, ok, _ := st.Get("paused/" + name); ok {
			a.mu.Lock()
			a.paused[name] = true
			a.mu.Unlock()
		}
	}
	a.applyPauses()
}

// applyPauses pauses every stream of a paused flow and resumes the
// others; it returns, per paused flow, the other flows sharing a stream
// with it.
func (a *App) applyPauses() map[string][]string {
	a.mu.Lock()
	paused := map[string]bool{}
	for f := range a.paused {
		paused[f] = true
	}
	a.mu.Unlock()
	streamPaused := map[string]bool{}
	flowsOf := map[string][]string{}
	sinkOf := map[string]string{}
	for _, fl := range a.flows {
		sinks := fl.Sinks
		if o := a.cfg.Flows[fl.Name].Overflow.Sink; o != "" {
			sinks = append(append([]string(nil), sinks...), o)
		}
		for _, sn := range sinks {
			s := fl.Stream(sn)
			sinkOf[s] = sn
			flowsOf[s] = append(flowsOf[s], fl.Name)
			if paused[fl.Name] {
				streamPaused[s] = true
			}
		}
	}
	for _, rn := range a.runners {
		if streamPaused[rn.Stream()] {
			rn.Pause()
		} else if rn.Paused() {
			rn.Resume()
		}
	}
	for s, sn := range sinkOf {
		if p, ok := a.sinks[sn].(pipeline.StreamPauser); ok {
			p.PauseStream(s, streamPaused[s])
		}
	}
	shared := map[string][]string{}
	for _, fs := range flowsOf {
		for _, f := range fs {
			for _, g := range fs {
				if g != f && (paused[f] || paused[g]) {
					shared[f] = appendOnce(shared[f], g)
				}
			}
		}
	}
	return shared
}

func appendOnce(l []string, s string) []string {
	for _, x := range l {
		if x == s {
			return l
		}
	}
	return append(l, s)
}

func (a *App) pausedFlows() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.paused))
	for f := range a.paused {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// GET /api/v1/admin/audit?limit=N: the newest operator actions.
func (a *App) adminAudit(w http.ResponseWriter, r *http.Request, _ caller) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	entries, err := a.audit.tail(limit)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"audit": entries})
}

func nilIfEmpty(s []uint64) []uint64 {
	if len(s) == 0 {
		return nil
	}
	return s
}

func seqList(s []uint64) string {
	if len(s) == 0 {
		return "all"
	}
	parts := make([]string, len(s))
	for i, q := range s {
		parts[i] = strconv.FormatUint(q, 10)
	}
	return strings.Join(parts, ",")
}

// basicAuthHeader builds a Basic Authorization value (tests, CLI).
func basicAuthHeader(user, token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+token))
}
