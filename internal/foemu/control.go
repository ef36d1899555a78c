package foemu

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// serveControl answers the /_emulator inspection and fault endpoints. They
// need no authentication unless control.token is configured.
func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request) {
	if t := e.cfg.Control.Token; t != "" {
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(t)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fo-emulator control"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the control endpoints need Authorization: Bearer <control.token>"})
			return
		}
	}
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/_emulator"), "/")
	head, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	get := r.Method == http.MethodGet
	switch {
	case head == "" && get:
		writeJSON(w, http.StatusOK, map[string]any{"endpoints": []string{
			"GET /_emulator/records", "GET /_emulator/records/{EntitySet}", "GET /_emulator/messages",
			"GET /_emulator/executions", "GET /_emulator/executions/{executionId}", "GET /_emulator/production-orders",
			"GET /_emulator/stats", "GET|POST|DELETE /_emulator/faults", "GET /_emulator/events", "GET|POST|DELETE /_emulator/events/config", "POST /_emulator/reset", "GET /_emulator/config",
		}})
	case head == "records" && rest == "" && get:
		e.mu.Lock()
		counts := map[string]int{}
		for _, s := range e.schema.sets() {
			counts[s] = len(e.store.tables[s].rows)
		}
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, counts)
	case head == "records" && get:
		recs, err := e.Records(rest)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"entity_set": rest, "count": len(recs), "value": recs})
	case head == "messages" && rest == "" && get:
		msgs := e.Messages()
		if st := r.URL.Query().Get("state"); st != "" {
			kept := msgs[:0]
			for _, m := range msgs {
				if strings.EqualFold(string(m.State), st) {
					kept = append(kept, m)
				}
			}
			msgs = kept
		}
		writeJSON(w, http.StatusOK, map[string]any{"count": len(msgs), "value": msgs})
	case head == "executions" && rest == "" && get:
		ex := e.Executions()
		writeJSON(w, http.StatusOK, map[string]any{"count": len(ex), "value": ex})
	case head == "executions" && get:
		ex, ok := e.Execution(rest)
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no execution " + rest})
			return
		}
		writeJSON(w, http.StatusOK, ex)
	case head == "production-orders" && rest == "" && get:
		po := e.ProductionOrders()
		writeJSON(w, http.StatusOK, map[string]any{"count": len(po), "value": po})
	case head == "stats" && rest == "" && get:
		writeJSON(w, http.StatusOK, e.Stats())
	case head == "config" && rest == "" && get:
		writeJSON(w, http.StatusOK, e.cfg)
	case head == "faults" && rest == "":
		e.serveFaults(w, r)
	case head == "events":
		e.serveEvents(w, r, rest)
	case head == "reset" && rest == "" && r.Method == http.MethodPost:
		if err := e.Reset(); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "reset"})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no control endpoint " + r.Method + " " + r.URL.Path + "; GET /_emulator/ lists them"})
	}
}

func (e *Emulator) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, e.Faults())
	case http.MethodDelete:
		_ = e.SetFaults(Faults{}) // empty faults always validate
		writeJSON(w, http.StatusOK, Faults{})
	case http.MethodPost, http.MethodPut:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large"})
			return
		}
		var f Faults
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid faults: " + err.Error()})
			return
		}
		if err := e.SetFaults(f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": strings.TrimPrefix(err.Error(), ErrConfig.Error()+": ")})
			return
		}
		writeJSON(w, http.StatusOK, e.Faults())
	default:
		w.Header().Set("Allow", "GET, POST, PUT, DELETE")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
	}
}

// Records returns copies of the records of an entity set (all companies),
// in key order, as JSON-ready maps. Dates are RFC 3339 strings, enums their
// member names, decimals float64 and integers int64.
func (e *Emulator) Records(set string) ([]map[string]any, error) {
	ent, ok := e.schema.Entity(set)
	if !ok {
		return nil, fmt.Errorf("%w: %s (names are case sensitive)", ErrUnknownEntitySet, set)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rows := e.store.rows(ent)
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = copyRecord(r.vals)
	}
	return out, nil
}

// Reset restores the seed data, drops messages and executions, clears the
// statistics and throttling buckets, and restores the faults of the
// configuration.
func (e *Emulator) Reset() error {
	if err := e.resetState(); err != nil {
		return err
	}
	e.stats.reset()
	e.throttle.reset()
	if err := e.SetFaults(e.cfg.Faults); err != nil {
		return err
	}
	e.log.Info().Msg("emulator state reset")
	return nil
}

func readAllLimited(w http.ResponseWriter, r *http.Request, n int64) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, n))
}
