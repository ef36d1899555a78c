package foemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
)

// SnapshotFile is the state file in the data directory.
const SnapshotFile = "state.json"

// snapshot is the persisted state. DMF packages and generated error files
// are not kept; executions keep their results.
type snapshot struct {
	Version    int                         `json:"version"`
	SavedAt    time.Time                   `json:"saved_at"`
	Records    map[string][]map[string]any `json:"records"`
	Messages   []Message                   `json:"messages"`
	MsgSeq     int64                       `json:"msg_seq"`
	Executions []Execution                 `json:"executions"`
	Production map[string]*prodState       `json:"production"`
	Sequences  map[string]int64            `json:"sequences"`
}

func (e *Emulator) snapshotPath() string { return filepath.Join(e.cfg.DataDir, SnapshotFile) }

// saveSnapshot writes the state to the data directory atomically.
func (e *Emulator) saveSnapshot() error {
	e.mu.Lock()
	s := snapshot{Version: 1, SavedAt: time.Now().UTC(), Records: map[string][]map[string]any{}, MsgSeq: e.msgSeq,
		Production: e.prod, Sequences: e.store.seqs}
	for _, set := range e.schema.sets() {
		ent, _ := e.schema.Entity(set)
		for _, r := range e.store.rows(ent) {
			s.Records[set] = append(s.Records[set], r.vals)
		}
	}
	for _, m := range e.messages {
		s.Messages = append(s.Messages, *m)
	}
	for _, id := range e.execOrder {
		if ex := e.executions[id]; ex != nil {
			s.Executions = append(s.Executions, copyExecution(ex))
		}
	}
	b, err := json.Marshal(s)
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	tmp := e.snapshotPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := os.Rename(tmp, e.snapshotPath()); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	e.log.Info().Str(logging.FieldPath, e.snapshotPath()).Msg("state snapshot saved")
	return nil
}

// loadSnapshot restores the state saved by saveSnapshot, if any. Messages
// that were Queued are queued again; executions that had not finished are
// marked Failed, since their packages are gone.
func (e *Emulator) loadSnapshot() error {
	b, err := os.ReadFile(e.snapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: %s is not a valid snapshot (delete it to start from the seed): %w", ErrConfig, e.snapshotPath(), err)
	}
	st, err := newStore(e.schema, &Seed{DefaultCompany: e.cfg.seed.DefaultCompany, Companies: e.cfg.seed.Companies})
	if err != nil {
		return err
	}
	for set, recs := range s.Records {
		ent, ok := e.schema.Entity(set)
		if !ok {
			e.log.Warn().Str(logging.FieldSet, set).Msg("snapshot: entity set no longer in the schema; records dropped")
			continue
		}
		for _, rec := range recs {
			vals := map[string]any{}
			for _, f := range ent.all {
				v, ok := rec[f.Name]
				if !ok || v == nil {
					vals[f.Name] = e.schema.zero(f)
					continue
				}
				vals[f.Name] = e.schema.coerce(f, v)
			}
			st.insert(ent, vals)
		}
	}
	if s.Sequences != nil {
		st.seqs = s.Sequences
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.store = st
	e.msgSeq = s.MsgSeq
	e.messages, e.queued = nil, nil
	now := time.Now().UTC()
	for i := range s.Messages {
		m := s.Messages[i]
		m.gen = e.gen
		m.next = now
		e.messages = append(e.messages, &m)
		if m.State == MessageQueued {
			e.queued = append(e.queued, &m)
		}
	}
	e.executions, e.execOrder = map[string]*Execution{}, nil
	for i := range s.Executions {
		ex := s.Executions[i]
		ex.keysAsked, ex.files, ex.gen = map[string]time.Time{}, map[string]string{}, e.gen
		for j := range ex.Entities {
			ex.Entities[j].entity, _ = e.schema.Entity(ex.Entities[j].EntitySet)
			if ex.Entities[j].entity == nil {
				ex.Entities[j].entity = &Entity{Set: ex.Entities[j].EntitySet}
			}
		}
		if ex.FinishedAt == nil {
			ex.Status = StatusFailed
			ex.FinishedAt = &now
			for j := range ex.Entities {
				ex.Entities[j].Status = "Error"
				ex.Entities[j].Message = "The emulator restarted while the import was running; the package was not kept."
			}
		}
		e.executions[ex.ID] = &ex
		e.execOrder = append(e.execOrder, ex.ID)
	}
	e.prod = map[string]*prodState{}
	for k, ps := range s.Production {
		if ps.Consumption == nil {
			ps.Consumption = map[string]float64{}
		}
		if ps.Operations == nil {
			ps.Operations = map[int64]*OperationState{}
		}
		e.prod[strings.ToLower(k)] = ps
	}
	e.log.Info().Str(logging.FieldPath, e.snapshotPath()).Int(logging.FieldCount, len(s.Messages)).Msg("state snapshot restored")
	return nil
}
