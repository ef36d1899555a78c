package fodmf

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/dmfpackage"
	"github.com/plantgate/plantgate/internal/logging"
	"github.com/plantgate/plantgate/internal/pipeline"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return hex.EncodeToString(b)
}

// advance runs b's current step. done is true when the batch is settled
// (acked and dead-lettered) and its state deleted.
func (s *Sink) advance(ctx context.Context, st *streamState, q pipeline.StreamQueue, b *batch) (bool, error) {
	switch b.Step {
	case StepClosed:
		return false, s.buildPackage(ctx, st, q, b)
	case StepPackaged:
		if err := s.checkPackage(b); err != nil {
			s.log.Warn().Err(err).Str("batch", b.ID).Msg("package file lost or damaged; building it again")
			return false, s.stepTo(ctx, st, b, StepClosed)
		}
		if err := s.uploadPackage(ctx, st, b); err != nil {
			return false, err
		}
		return false, s.stepTo(ctx, st, b, StepUploaded)
	case StepUploaded, StepImporting:
		return false, s.importPackage(ctx, st, q, b)
	case StepPolling:
		return false, s.poll(ctx, st, q, b)
	case StepSettling:
		return true, s.settle(ctx, st, q, b, nil, "")
	}
	return false, fmt.Errorf("batch %s: unknown step %q", b.ID, b.Step)
}

// lines lists the batch's records in order, as their lines: per entity
// the 1-based line number and the data-file values.
type line struct {
	rec    pipeline.Record
	entity int
	no     int
	vals   map[string]any
}

func (s *Sink) lines(q pipeline.StreamQueue, b *batch, fn func(line) error) error {
	after := b.From - 1
	counts := make([]int, len(s.ents))
	for {
		page, err := q.List(after, 10000)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, r := range page {
			if r.Seq > b.To {
				return nil
			}
			after = r.Seq
			if r.Remap {
				nr, err := q.Remap(r)
				if err != nil {
					return fmt.Errorf("replayed record %d no longer maps: %w", r.Seq, err)
				}
				r = nr
			}
			i, err := s.entityOf(r)
			if err != nil {
				return fmt.Errorf("record %d: %w", r.Seq, err)
			}
			counts[i]++
			_, vals, err := s.row(r, counts[i])
			if err != nil {
				return fmt.Errorf("record %d: %w", r.Seq, err)
			}
			if err := fn(line{rec: r, entity: i, no: counts[i], vals: vals}); err != nil {
				return err
			}
		}
	}
}

// buildPackage writes the batch's package file (synced, then renamed into
// place) and persists its size and hash. A package over max_package_bytes
// is split: the batch keeps its first half, the rest waits for the next.
func (s *Sink) buildPackage(ctx context.Context, st *streamState, q pipeline.StreamQueue, b *batch) error {
	start := s.now()
	path := s.packagePath(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("package dir: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create package: %w", err)
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	bld, err := dmfpackage.New(w, s.spec, filepath.Dir(path))
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("start package: %w", err)
	}
	n := 0
	var seqs []uint64
	err = s.lines(q, b, func(l line) error {
		n++
		seqs = append(seqs, l.rec.Seq)
		_, err := bld.Add(l.entity, l.vals)
		return err
	})
	if err != nil {
		bld.Abort()
		_ = f.Close()
		return fmt.Errorf("build package: %w", err)
	}
	if _, err := bld.Close(); err != nil {
		_ = f.Close()
		return fmt.Errorf("build package: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync package: %w", err)
	}
	size, _ := f.Seek(0, io.SeekCurrent)
	if err := f.Close(); err != nil {
		return fmt.Errorf("close package: %w", err)
	}
	if n == 0 {
		// Every record of the range left the stream (purged by an
		// operator): nothing to import.
		_ = os.Remove(tmp)
		return s.settle(ctx, st, q, b, nil, "")
	}
	if size > int64(s.cfg.MaxPackageBytes) && n > 1 {
		_ = os.Remove(tmp)
		half := seqs[n/2-1]
		s.log.Warn().Str("batch", b.ID).Int64("package_bytes", size).Int("lines", n).Int("kept", n/2).
			Msg("DMF package over max_package_bytes: the batch is split; the rest goes into the next")
		b.To, b.Lines = half, n/2
		s.mu.Lock()
		st.splitRest = true
		s.mu.Unlock()
		return s.save(ctx, st, b)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("place package: %w", err)
	}
	syncDir(filepath.Dir(path))
	b.Lines, b.PackageFile, b.PackageBytes, b.PackageSHA256 = n, path, size, hex.EncodeToString(h.Sum(nil))
	s.m.packageBytes.WithLabelValues(s.name).Observe(float64(size))
	s.log.Info().Str("batch", b.ID).Int("lines", n).Int64("package_bytes", size).Dur("took", s.now().Sub(start)).Msg("DMF package built")
	return s.stepTo(ctx, st, b, StepPackaged)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// checkPackage verifies the package file against its persisted hash.
func (s *Sink) checkPackage(b *batch) error {
	f, err := os.Open(b.PackageFile)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != b.PackageBytes || hex.EncodeToString(h.Sum(nil)) != b.PackageSHA256 {
		return fmt.Errorf("package %s: %d bytes, hash differs from the one recorded", b.PackageFile, n)
	}
	return nil
}

// uploadPackage asks F&O for an upload URL and uploads the package,
// asking for a new URL when the blob store refuses one (an expired SAS).
func (s *Sink) uploadPackage(ctx context.Context, st *streamState, b *batch) error {
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		_, u, err := s.env.GetAzureWriteURL(ctx, s.blobName(b))
		if err != nil {
			return fmt.Errorf("GetAzureWriteUrl: %w", err)
		}
		err = s.uploadFn(ctx, u, b.PackageFile)
		if err == nil {
			s.mu.Lock()
			st.sasURL = u
			s.mu.Unlock()
			b.Blob = s.blobName(b)
			return nil
		}
		last = err
		if !refused(err) {
			return fmt.Errorf("upload package: %w", err)
		}
		s.log.Warn().Str("batch", b.ID).Str(logging.FieldReason, logging.RedactText(err.Error())).Msg("the blob store refused the upload URL (expired?); asking F&O for a new one")
	}
	return fmt.Errorf("upload package: the blob store refused %d upload URLs in a row: %w", 3, last)
}

// refused reports a blob store answer that a new SAS URL may cure (403:
// expired or refused signature).
func refused(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

func (s *Sink) upload(ctx context.Context, sasURL, file string) error {
	c, err := blockblob.NewClientWithNoCredential(sasURL, &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: s.env.HTTPClient(), Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond},
	}})
	if err != nil {
		return fmt.Errorf("blob client: %w", err)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	_, err = c.UploadFile(ctx, f, &blockblob.UploadFileOptions{BlockSize: 4 << 20, Concurrency: 2})
	if err != nil {
		return redactErr(err, sasURL)
	}
	return nil
}

// redactErr keeps a SAS URL's signature out of an error text.
func redactErr(err error, sasURL string) error {
	text := err.Error()
	if i := strings.IndexByte(sasURL, '?'); i >= 0 {
		text = strings.ReplaceAll(text, sasURL[i+1:], "<SAS>")
	}
	return &redacted{err: err, text: logging.RedactText(text)}
}

type redacted struct {
	err  error
	text string
}

func (r *redacted) Error() string { return r.text }
func (r *redacted) Unwrap() error { return r.err }

// executionID is the id plantgate chooses for a batch's import attempt.
func (s *Sink) executionID(b *batch) string {
	return fmt.Sprintf("plantgate-%s-%s-%s-%d", sanitize(s.gateway), sanitize(s.name), b.ID, b.Attempt)
}

// importPackage requests the import: the executionId is persisted first,
// then ImportFromPackage is called, under the environment's import lock,
// which the batch keeps until F&O answered its import. After a restart in
// StepImporting it asks F&O first whether it knows the execution.
func (s *Sink) importPackage(ctx context.Context, st *streamState, q pipeline.StreamQueue, b *batch) error {
	if err := s.ensureLock(ctx, st, b); err != nil {
		return err
	}
	if b.Step == StepImporting && b.ExecutionID != "" {
		status, err := s.env.ExecutionStatus(ctx, b.ExecutionID)
		switch {
		case err == nil:
			b.Status = status
			return s.stepTo(ctx, st, b, StepPolling)
		case !errors.Is(err, d365.ErrExecutionNotFound):
			return err
		case !b.RequestedAt.IsZero() && s.now().Sub(b.RequestedAt) < s.cfg.NotFoundGrace:
			// Requested moments ago: F&O's batch job may not have created the
			// execution yet. Poll for it.
			return s.stepTo(ctx, st, b, StepPolling)
		}
	}
	s.mu.Lock()
	sas := st.sasURL
	s.mu.Unlock()
	if sas == "" {
		// The upload URL lives in memory only: after a restart, upload again.
		if err := s.checkPackage(b); err != nil {
			s.log.Warn().Err(err).Str("batch", b.ID).Msg("package file lost or damaged; building it again")
			s.releaseLock(st)
			return s.stepTo(ctx, st, b, StepClosed)
		}
		if err := s.uploadPackage(ctx, st, b); err != nil {
			return err
		}
		s.mu.Lock()
		sas = st.sasURL
		s.mu.Unlock()
	}
	if b.ExecutionID == "" {
		b.ExecutionID = s.executionID(b)
	}
	b.RequestedAt = s.now().UTC()
	if err := s.stepTo(ctx, st, b, StepImporting); err != nil {
		return err
	}
	_, err := s.env.ImportFromPackage(ctx, d365.ImportRequest{PackageURL: sas, DefinitionGroup: s.cfg.DefinitionGroup,
		ExecutionID: b.ExecutionID, LegalEntity: s.legal, Execute: true, Overwrite: s.cfg.Overwrite})
	switch {
	case err == nil, d365.IsInDoubt(err):
		// In doubt: the status tells whether F&O took it.
		s.log.Info().Str("batch", b.ID).Str("execution_id", b.ExecutionID).Int("lines", b.Lines).Msg("DMF import requested")
		return s.stepTo(ctx, st, b, StepPolling)
	case pipeline.IsPermanent(err) && packageUnreachable(err):
		// F&O could not download the package (the blob store was down, or
		// the upload URL no longer works): nothing is wrong with the lines.
		// Upload it again under a fresh URL and import again, after the
		// step's backoff.
		s.log.Warn().Str("batch", b.ID).Str(logging.FieldReason, logging.RedactText(err.Error())).Msg("F&O could not download the package; uploading it again")
		s.mu.Lock()
		st.sasURL = ""
		s.mu.Unlock()
		b.RequestedAt = time.Time{}
		if serr := s.stepTo(ctx, st, b, StepUploaded); serr != nil {
			return serr
		}
		return err
	case pipeline.IsPermanent(err):
		// F&O refused the package itself: nothing was imported.
		return s.failed(ctx, st, q, b, []string{err.Error()})
	}
	if d365.StatusOf(err) == 0 {
		// The request provably never left (refused, no token): request it
		// again at once, under the same executionId.
		b.RequestedAt = time.Time{}
		if serr := s.stepTo(ctx, st, b, StepUploaded); serr != nil {
			return serr
		}
		return err
	}
	// F&O answered an error (a 5xx): it may still have taken the import.
	// The next attempt asks for the execution first (StepImporting).
	return err
}

// ensureLock takes the environment's import lock for the stream unless it
// holds it already.
func (s *Sink) ensureLock(ctx context.Context, st *streamState, b *batch) error {
	s.mu.Lock()
	held := st.lockHeld
	s.mu.Unlock()
	if held {
		return nil
	}
	if err := s.env.ImportLock().Lock(ctx, s.name+"/"+b.ID); err != nil {
		return err
	}
	s.mu.Lock()
	st.lockHeld = true
	s.mu.Unlock()
	return nil
}

// releaseLock releases the import lock if the stream holds it.
func (s *Sink) releaseLock(st *streamState) {
	s.mu.Lock()
	held := st.lockHeld
	st.lockHeld = false
	s.mu.Unlock()
	if held {
		s.env.ImportLock().Unlock()
	}
}

// poll asks F&O for the execution's status, with backoff, until it is
// final; then it books the outcome.
func (s *Sink) poll(ctx context.Context, st *streamState, q pipeline.StreamQueue, b *batch) error {
	// Resumed after a restart: nobody else may import meanwhile.
	if err := s.ensureLock(ctx, st, b); err != nil {
		return err
	}
	delay := s.cfg.PollInitial
	for n := 0; ctx.Err() == nil; n++ {
		status, err := s.env.ExecutionStatus(ctx, b.ExecutionID)
		switch {
		case errors.Is(err, d365.ErrExecutionNotFound):
			if s.now().Sub(b.RequestedAt) >= s.cfg.NotFoundGrace {
				s.log.Warn().Str("batch", b.ID).Str("execution_id", b.ExecutionID).Dur("grace", s.cfg.NotFoundGrace).
					Msg("F&O does not know the import it was asked for; requesting it again under the same executionId")
				s.mu.Lock()
				st.sasURL = ""
				s.mu.Unlock()
				b.RequestedAt = time.Time{}
				return s.stepTo(ctx, st, b, StepUploaded)
			}
		case err != nil:
			// The token source refreshes on expiry and Do retries a 401
			// once, so a long poll survives token lifetimes.
			b.LastError = logging.RedactText(err.Error())
			s.setBatch(st, b)
		default:
			switch status {
			case d365.DMFSucceeded:
				b.Status = status
				return s.settle(ctx, st, q, b, nil, "")
			case d365.DMFPartiallySucceeded:
				b.Status = status
				failed, err := s.failedLines(ctx, q, b)
				if err != nil {
					return err
				}
				return s.settle(ctx, st, q, b, failed, "")
			case d365.DMFFailed, d365.DMFCanceled, d365.DMFUnknown:
				b.Status = status
				msgs, err := s.env.ExecutionErrors(ctx, b.ExecutionID)
				if err != nil {
					msgs = []string{"(GetExecutionErrors failed: " + err.Error() + ")"}
				}
				return s.failed(ctx, st, q, b, msgs)
			case d365.DMFNotRun, d365.DMFExecuting:
				b.Status = status
			default:
				b.Status = status
				b.LastError = fmt.Sprintf("F&O answered the status %q, which is not a DMF execution status; polling on", status)
				s.log.Warn().Str("batch", b.ID).Str("status", status).Msg("unknown DMF execution status")
			}
			s.setBatch(st, b)
		}
		if !b.Stalled && s.now().Sub(b.RequestedAt) >= s.cfg.ImportDeadline {
			b.Stalled = true
			s.m.stalled.WithLabelValues(s.name).Inc()
			s.log.Error().Str("batch", b.ID).Str("execution_id", b.ExecutionID).Dur("deadline", s.cfg.ImportDeadline).Str("status", b.Status).
				Msg("DMF import still running past import_deadline: held and polled on, never imported again; check it in F&O's Data management workspace")
			if err := s.save(ctx, st, b); err != nil {
				return err
			}
		}
		if wait(ctx, delay) != nil {
			return ctx.Err()
		}
		delay = min(delay*2, s.cfg.PollMax)
	}
	return ctx.Err()
}

// packageUnreachable tells an import F&O refused because it could not
// fetch the package from its upload URL ("The data package could not be
// downloaded from ..."), which a new upload cures.
func packageUnreachable(err error) bool {
	return strings.Contains(err.Error(), "could not be downloaded")
}

// failed books an import F&O answered Failed (or refused): per on_failed,
// another attempt under a new executionId, or every line dead-lettered
// with F&O's errors.
func (s *Sink) failed(ctx context.Context, st *streamState, q pipeline.StreamQueue, b *batch, msgs []string) error {
	text := strings.Join(msgs, "; ")
	if text == "" {
		text = "no error text"
	}
	if s.cfg.OnFailed == OnFailedRetry && b.Attempt+1 < s.cfg.MaxAttempts {
		s.releaseLock(st)
		s.m.batches.WithLabelValues(s.name, "retried").Inc()
		s.log.Warn().Str("batch", b.ID).Str("execution_id", b.ExecutionID).Str(logging.FieldReason, logging.RedactText(text)).Int("attempt", b.Attempt+1).
			Msg("DMF import failed; importing the batch again under a new executionId")
		b.Attempt++
		b.ExecutionID, b.Status, b.RequestedAt, b.LastError = "", "", time.Time{}, clip("attempt failed: "+text)
		s.mu.Lock()
		st.sasURL = ""
		s.mu.Unlock()
		return s.stepTo(ctx, st, b, StepUploaded)
	}
	reason := fmt.Sprintf("DMF import %s failed (%s): %s", b.ExecutionID, b.Status, clip(text))
	if b.Status == "" {
		reason = "DMF import refused: " + clip(text)
	}
	b.Outcome = "failed"
	return s.settle(ctx, st, q, b, nil, reason)
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// settle books a batch: failed lines (by seq; with all set, every line
// with that reason) are dead-lettered with F&O's reasons, the rest acked,
// and the batch's state deleted: two transactions, the first persisting
// StepSettling so a restart between them only acks.
func (s *Sink) settle(ctx context.Context, st *streamState, q pipeline.StreamQueue, b *batch, failed map[uint64]string, all string) error {
	defer s.releaseLock(st)
	everyLine := all != ""
	var seqs []uint64
	var dead []pipeline.DeadRecord
	err := s.lines(q, b, func(l line) error {
		switch why, ok := failed[l.rec.Seq]; {
		case everyLine:
			dead = append(dead, pipeline.DeadRecord{Seq: l.rec.Seq, Reason: all})
		case ok:
			dead = append(dead, pipeline.DeadRecord{Seq: l.rec.Seq, Reason: why})
		default:
			seqs = append(seqs, l.rec.Seq)
		}
		return nil
	})
	if err != nil && b.Step != StepSettling {
		return err
	}
	if b.Step != StepSettling {
		if b.Outcome == "" {
			b.Outcome = map[bool]string{true: "partially_succeeded", false: "succeeded"}[len(dead) > 0]
		}
		b.Failed = len(dead)
		s.observeStep(b)
		b.Step, b.StepAt = StepSettling, s.now().UTC()
		v, _ := json.Marshal(b) // plain fields always marshal
		if err := q.DeadLetter(ctx, dead, pipeline.StateWrite{Name: stateName(b.Stream), Value: v}); err != nil {
			return fmt.Errorf("dead-letter failed lines: %w", err)
		}
		s.setBatch(st, b)
		s.m.linesDead.WithLabelValues(s.name).Add(float64(len(dead)))
		for _, d := range dead[:min(len(dead), 20)] {
			s.log.Error().Str("batch", b.ID).Uint64(logging.FieldSeq, d.Seq).Str(logging.FieldReason, d.Reason).Msg("line dead-lettered by F&O's import")
		}
	}
	if err := q.Ack(ctx, seqs, pipeline.StateWrite{Name: stateName(b.Stream), Delete: true}); err != nil {
		return fmt.Errorf("ack imported lines: %w", err)
	}
	if b.Stalled {
		s.m.stalled.WithLabelValues(s.name).Dec()
	}
	s.m.linesOK.WithLabelValues(s.name).Add(float64(len(seqs)))
	s.m.batches.WithLabelValues(s.name, b.Outcome).Inc()
	if b.PackageFile != "" {
		_ = os.RemoveAll(filepath.Dir(b.PackageFile))
	} else {
		_ = os.RemoveAll(filepath.Dir(s.packagePath(b)))
	}
	s.log.Info().Str("batch", b.ID).Str("execution_id", b.ExecutionID).Str("outcome", b.Outcome).Int("imported", len(seqs)).Int("dead_lettered", b.Failed).
		Msg("DMF batch settled")
	s.setBatch(st, nil)
	return nil
}

// failedLines reads F&O's error files of a partly imported batch and
// matches each error row to the line it names: a row's values (the
// staging file's source columns, the target file's key columns) must equal
// the line's values in every column both have; each row takes the first
// such line not taken yet. Rows that match no line are returned as notes
// for the log and status.
func (s *Sink) failedLines(ctx context.Context, q pipeline.StreamQueue, b *batch) (map[uint64]string, error) {
	type errRow struct {
		cols map[string]string
		msg  string
		file string
	}
	perEntity := make([][]errRow, len(s.ents))
	for i, e := range s.ents {
		var urls []string
		u, err := s.env.StagingErrorFileURL(ctx, b.ExecutionID, e.Name)
		if err != nil {
			return nil, fmt.Errorf("staging error file of %s: %w", e.Name, err)
		}
		if u != "" {
			urls = append(urls, u)
		}
		generated := false
		for tries := 0; ; tries++ {
			ku, has, ready, err := s.env.TargetErrorKeysURL(ctx, b.ExecutionID, e.Name, generated)
			if err != nil {
				return nil, fmt.Errorf("target error keys of %s: %w", e.Name, err)
			}
			generated = true
			if !has {
				break
			}
			if ready {
				urls = append(urls, ku)
				break
			}
			if tries > 120 || wait(ctx, 500*time.Millisecond) != nil {
				return nil, fmt.Errorf("target error keys file of %s not ready", e.Name)
			}
		}
		for _, u := range urls {
			data, err := s.env.Download(ctx, u, 256<<20)
			if err != nil {
				return nil, err
			}
			header, rows, err := readErrorCSV(data)
			if err != nil {
				return nil, fmt.Errorf("error file of %s: %w", e.Name, err)
			}
			for _, r := range rows {
				er := errRow{cols: map[string]string{}, file: e.Name}
				for j, h := range header {
					if j < len(r) {
						if strings.EqualFold(h, "ERROR") {
							er.msg = r[j]
						} else {
							er.cols[strings.ToUpper(h)] = r[j]
						}
					}
				}
				perEntity[i] = append(perEntity[i], er)
			}
		}
	}
	failed := map[uint64]string{}
	taken := make([][]bool, len(s.ents))
	for i := range s.ents {
		taken[i] = make([]bool, len(perEntity[i]))
	}
	err := s.lines(q, b, func(l line) error {
		for j, er := range perEntity[l.entity] {
			if taken[l.entity][j] || !matches(er.cols, l.vals) {
				continue
			}
			taken[l.entity][j] = true
			if _, dup := failed[l.rec.Seq]; !dup {
				failed[l.rec.Seq] = fmt.Sprintf("DMF import %s (%s), entity %q, line %d: %s", b.ExecutionID, b.Status, s.ents[l.entity].Name, l.no, er.msg)
			}
			break
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	unmatched := 0
	for i := range s.ents {
		for j := range perEntity[i] {
			if !taken[i][j] {
				unmatched++
			}
		}
	}
	if unmatched > 0 {
		s.log.Error().Str("batch", b.ID).Int("rows", unmatched).Msg("F&O's error files name rows that match no line of the package; set line_field so each line is named exactly")
		b.LastError = fmt.Sprintf("%d error rows matched no line", unmatched)
	}
	return failed, nil
}

// matches reports whether an error row's columns equal a line's values.
func matches(cols map[string]string, vals map[string]any) bool {
	shared := 0
	for k, v := range vals {
		got, ok := cols[strings.ToUpper(k)]
		if !ok {
			continue
		}
		want, err := dmfpackage.FormatValue(v)
		if err != nil || !sameCell(got, want) {
			return false
		}
		shared++
	}
	return shared > 0
}

// sameCell compares a cell of an error file with a line's value: exactly,
// or as numbers (F&O may write 5 as 5.00), ignoring case for text.
func sameCell(got, want string) bool {
	if got == want || strings.EqualFold(strings.TrimSpace(got), strings.TrimSpace(want)) {
		return true
	}
	var a, b float64
	if _, err := fmt.Sscan(got, &a); err == nil {
		if _, err := fmt.Sscan(want, &b); err == nil {
			return a == b
		}
	}
	return false
}

// readErrorCSV reads an error file: UTF-16 LE (with BOM) or UTF-8.
func readErrorCSV(data []byte) ([]string, [][]string, error) {
	if len(data) >= 2 && data[0] == 0xFF && data[1] == 0xFE {
		u := make([]uint16, 0, (len(data)-2)/2)
		for i := 2; i+1 < len(data); i += 2 {
			u = append(u, uint16(data[i])|uint16(data[i+1])<<8)
		}
		data = []byte(string(utf16.Decode(u)))
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	all, err := r.ReadAll()
	if err != nil {
		return nil, nil, err
	}
	if len(all) == 0 {
		return nil, nil, nil
	}
	return all[0], all[1:], nil
}
