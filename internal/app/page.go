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
}

const pageListMax = 50

func (a *App) statusPage(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	d := pageData{Status: a.Status(), Query: q, Done: r.URL.Query().Get("done"), Error: r.URL.Query().Get("error"),
		Admin: a.cfg.HTTP.AdminToken.Reveal() != ""}
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
