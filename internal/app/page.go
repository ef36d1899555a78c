package app

import (
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The status page is rendered on the server from page.html: no front-end
// build, no script needed to read it. Its buttons are plain form posts to
// the admin API, which asks the browser for the admin token (Basic auth,
// the operator's name as user) and redirects back with the outcome.

//go:embed page.html
var pageFS embed.FS

var statusTmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"bytes": func(n int64) string {
		const unit = 1024
		if n < unit {
			return strconv.FormatInt(n, 10) + " B"
		}
		div, exp := int64(unit), 0
		for m := n / unit; m >= unit; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
	},
	"age": func(d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return d.Round(time.Second).String()
	},
	"rate": rateWords,
	"secs": func(s float64) string {
		d := time.Duration(s * float64(time.Second))
		if d >= time.Second {
			return d.Round(time.Second).String()
		}
		return d.Round(time.Millisecond).String()
	},
	// ts shows a time in UTC with the plant's local time beside it.
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		u := t.UTC().Format("2006-01-02 15:04:05Z")
		if l := t.Local(); l.Format("-0700") != "+0000" {
			return u + " (" + l.Format("15:04:05 MST") + ")"
		}
		return u
	},
	"local": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") },
	"utc":   func(t time.Time) string { return t.UTC().Format("15:04:05 UTC") },
	"stateClass": func(s string) string {
		switch s {
		case "up", StateReady:
			return "ok"
		case StateDegraded, StateStarting, StateReloading:
			return "warn"
		default:
			return "bad"
		}
	},
	"stateWord": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
}).ParseFS(pageFS, "page.html"))

// pageData is what page.html renders.
type pageData struct {
	Status
	Query       string
	Done, Error string
	Dead        []DeadLetterView
	DeadMore    bool
	Held        []InDoubtEntry
	Admin       bool
	// Outcomes are the F&O outcome counts of the sinks that track them.
	Outcomes []OutcomeRow
}

// OutcomeRow is one fo.mes sink's F&O outcomes (track_outcomes) on the
// status page, read from its status (outcomes).
type OutcomeRow struct {
	Sink string
	// Confirmed: F&O processed; Failed: F&O failed (dead letters);
	// Awaiting: sent, no outcome yet; Overdue: of those, no outcome
	// within Timeout (outcome_timeout).
	Confirmed, Failed, Awaiting, Overdue int64
	// Duplicates and Unknown are events received again and events that
	// match no message the sink sent.
	Duplicates, Unknown int64
	Timeout             string
}

func outcomeRows(sinks []ComponentStatus) []OutcomeRow {
	var rows []OutcomeRow
	for _, s := range sinks {
		o, ok := s.Details["outcomes"].(map[string]any)
		if !ok {
			continue
		}
		n := func(k string) int64 {
			switch v := o[k].(type) {
			case int:
				return int64(v)
			case int64:
				return v
			case float64:
				return int64(v)
			}
			return 0
		}
		timeout, _ := o["timeout"].(string)
		rows = append(rows, OutcomeRow{Sink: s.Name, Confirmed: n("confirmed"), Failed: n("failed_in_fo"), Awaiting: n("awaiting_outcome"),
			Overdue: n("overdue"), Duplicates: n("duplicate_events"), Unknown: n("unknown_events"), Timeout: timeout})
	}
	return rows
}

const pageListMax = 50

func (a *App) statusPage(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	d := pageData{Status: a.Status(), Query: q, Done: r.URL.Query().Get("done"), Error: r.URL.Query().Get("error"),
		Admin: a.cfg.HTTP.AdminToken.Reveal() != ""}
	d.Outcomes = outcomeRows(d.Sinks)
	if dead, err := a.deadLetters("", q, 0, pageListMax+1); err == nil {
		if len(dead) > pageListMax {
			dead, d.DeadMore = dead[:pageListMax], true
		}
		d.Dead = dead
	}
	if held, err := a.inDoubtEntries("", q); err == nil {
		d.Held = held
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := statusTmpl.Execute(w, d); err != nil {
		a.log.Warn().Err(err).Msg("render status page")
	}
}
