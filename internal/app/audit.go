package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// auditEntry is one operator action: who, what, when, and how it ended.
type auditEntry struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	Role   string    `json:"role"`
	Remote string    `json:"remote,omitempty"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Result string    `json:"result"`
	Error  string    `json:"error,omitempty"`
}

// auditLog appends operator actions to a JSON-lines file, each written
// and fsync'd before the API answers, and to the log. A plain file rather
// than the queue: it must be readable with standard tools, survive a
// queue file that is purged or rebuilt, and be shipped by the plant's log
// collection. It is never rotated by plantgate (logrotate with
// copytruncate works).
type auditLog struct {
	mu   sync.Mutex
	path string
}

func newAuditLog(path string) *auditLog { return &auditLog{path: path} }

func (l *auditLog) write(log zerolog.Logger, e auditEntry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	log.Info().Str("audit_who", e.Who).Str("audit_action", e.Action).Str("audit_target", e.Target).Str("audit_result", e.Result).Msg("operator action")
	if l == nil {
		return
	}
	b, err := json.Marshal(e)
	if err == nil {
		err = l.append(append(b, '\n'))
	}
	if err != nil {
		log.Error().Err(err).Str("path", l.path).Msg("audit log not written")
	}
}

func (l *auditLog) append(b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Group-readable: the plant's log shipping reads it as the service's group.
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640) //nolint:gosec // no secrets in it
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// tail returns up to n of the newest entries, oldest first.
func (l *auditLog) tail(n int) ([]auditEntry, error) {
	out := []auditEntry{}
	if l == nil {
		return out, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e auditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a line cut by a power loss
		}
		out = append(out, e)
		if len(out) > n {
			out = out[1:]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}
