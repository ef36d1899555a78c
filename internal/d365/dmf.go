package d365

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// DMF: the data package REST API, OData actions bound to the entity set
// DataManagementDefinitionGroups. Each answers {"value": ...}; Env.Do
// classifies failures like any other call. They go at normal priority:
// a batch makes a handful of calls, and at low priority a long OData
// drain would starve its status polls.

const dmfActionPath = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."

// DMFExecution statuses (DMFExecutionSummaryStatus).
const (
	DMFUnknown            = "Unknown"
	DMFNotRun             = "NotRun"
	DMFExecuting          = "Executing"
	DMFSucceeded          = "Succeeded"
	DMFPartiallySucceeded = "PartiallySucceeded"
	DMFFailed             = "Failed"
	DMFCanceled           = "Canceled"
)

// ErrExecutionNotFound is returned while F&O does not know an execution
// id: right after ImportFromPackage (before its batch job created the
// record) or for an import that never reached F&O.
var ErrExecutionNotFound = errors.New("execution not found")

func (e *Env) dmfAction(ctx context.Context, action string, body map[string]any, prio Priority) (json.RawMessage, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", action, err)
	}
	resp, err := e.Do(ctx, &Request{Method: http.MethodPost, Path: dmfActionPath + action, Body: b, Op: "dmf", Priority: prio})
	if err != nil {
		if StatusOf(err) == http.StatusBadRequest && strings.Contains(err.Error(), "were not found") {
			return nil, fmt.Errorf("%w: %w", ErrExecutionNotFound, err)
		}
		return nil, err
	}
	var v struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(resp.Body, &v); err != nil || v.Value == nil {
		return nil, &Error{Op: "POST " + action, Status: resp.Status, Message: "the answer holds no value: " + clip(string(resp.Body))}
	}
	return v.Value, nil
}

func (e *Env) dmfString(ctx context.Context, action string, body map[string]any, prio Priority) (string, error) {
	v, err := e.dmfAction(ctx, action, body, prio)
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", &Error{Op: "POST " + action, Message: "the value is not a string: " + clip(string(v))}
	}
	return s, nil
}

// GetAzureWriteURL asks for a SAS URL to upload a package named name. F&O
// answers a JSON document inside the string value
// ("{\"BlobId\":\"{GUID}\",\"BlobUrl\":\"https://...?<SAS>\"}"), decoded
// here. The URL is a credential: it is never logged or shown.
func (e *Env) GetAzureWriteURL(ctx context.Context, name string) (blobID, blobURL string, err error) {
	s, err := e.dmfString(ctx, "GetAzureWriteUrl", map[string]any{"uniqueFileName": name}, PriorityNormal)
	if err != nil {
		return "", "", err
	}
	var inner struct {
		BlobID  string `json:"BlobId"`
		BlobURL string `json:"BlobUrl"`
	}
	if err := json.Unmarshal([]byte(s), &inner); err != nil || inner.BlobURL == "" {
		return "", "", &Error{Op: "POST GetAzureWriteUrl", Message: "the value is not the expected {BlobId, BlobUrl} document"}
	}
	return inner.BlobID, inner.BlobURL, nil
}

// ImportRequest is an ImportFromPackage call.
type ImportRequest struct {
	PackageURL, DefinitionGroup, ExecutionID, LegalEntity string
	Execute, Overwrite                                    bool
}

// ImportFromPackage starts an import; it returns the execution id F&O
// answers.
func (e *Env) ImportFromPackage(ctx context.Context, r ImportRequest) (string, error) {
	return e.dmfString(ctx, "ImportFromPackage", map[string]any{
		"packageUrl": r.PackageURL, "definitionGroupId": r.DefinitionGroup, "executionId": r.ExecutionID,
		"execute": r.Execute, "overwrite": r.Overwrite, "legalEntityId": r.LegalEntity,
	}, PriorityNormal)
}

// ExecutionStatus returns GetExecutionSummaryStatus of an execution;
// ErrExecutionNotFound while F&O does not know it.
func (e *Env) ExecutionStatus(ctx context.Context, executionID string) (string, error) {
	return e.dmfString(ctx, "GetExecutionSummaryStatus", map[string]any{"executionId": executionID}, PriorityNormal)
}

// ExecutionErrors returns GetExecutionErrors: a JSON list of messages in
// the string value (its exact shape is not documented: a string that is
// not a list is returned as one message).
func (e *Env) ExecutionErrors(ctx context.Context, executionID string) ([]string, error) {
	s, err := e.dmfString(ctx, "GetExecutionErrors", map[string]any{"executionId": executionID}, PriorityNormal)
	if err != nil {
		return nil, err
	}
	var list []string
	if json.Unmarshal([]byte(s), &list) == nil {
		return list, nil
	}
	var objs []map[string]any
	if json.Unmarshal([]byte(s), &objs) == nil {
		for _, o := range objs {
			b, _ := json.Marshal(o) // decoded JSON always marshals
			list = append(list, string(b))
		}
		return list, nil
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	return []string{s}, nil
}

// TargetErrorKeysURL asks F&O to generate an entity's target error keys
// file (GenerateImportTargetErrorKeysFile) and returns its URL once ready
// (GetImportTargetErrorKeysFileUrl answers "" while generating): ok is
// false when the entity had no target errors, ready false when the file is
// not there yet (ask again later).
func (e *Env) TargetErrorKeysURL(ctx context.Context, executionID, entity string, generated bool) (url string, ok, ready bool, err error) {
	if !generated {
		v, err := e.dmfAction(ctx, "GenerateImportTargetErrorKeysFile", map[string]any{"executionId": executionID, "entityName": entity}, PriorityNormal)
		if err != nil {
			return "", false, false, err
		}
		var has bool
		if err := json.Unmarshal(v, &has); err != nil {
			return "", false, false, &Error{Op: "POST GenerateImportTargetErrorKeysFile", Message: "the value is not a boolean: " + clip(string(v))}
		}
		if !has {
			return "", false, true, nil
		}
	}
	u, err := e.dmfString(ctx, "GetImportTargetErrorKeysFileUrl", map[string]any{"executionId": executionID, "entityName": entity}, PriorityNormal)
	if err != nil {
		return "", true, false, err
	}
	return u, true, u != "", nil
}

// StagingErrorFileURL returns GetImportStagingErrorFileUrl ("" when the
// entity had no staging errors).
func (e *Env) StagingErrorFileURL(ctx context.Context, executionID, entity string) (string, error) {
	return e.dmfString(ctx, "GetImportStagingErrorFileUrl", map[string]any{"executionId": executionID, "entityName": entity}, PriorityNormal)
}

// Download reads a file F&O named by a SAS URL (an error file), at most
// limit bytes, with the environment's TLS trust.
func (e *Env) Download(ctx context.Context, sasURL string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sasURL, nil)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", redactedURL(sasURL), err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("download %s: %d %s", redactedURL(sasURL), resp.StatusCode, clip(string(b)))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", redactedURL(sasURL), err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("download %s: larger than %d bytes", redactedURL(sasURL), limit)
	}
	return b, nil
}

func redactedURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?<SAS>"
	}
	return u
}

// HTTPClient is the environment's HTTP client (TLS trust of ca_file), for
// the blob store F&O hands SAS URLs of.
func (e *Env) HTTPClient() *http.Client { return e.hc }

// ImportLock serialises DMF imports of the environment: F&O's
// ImportFromPackage must not run in parallel (parallel calls fail with
// duplicate-key errors), so every fo.dmf sink of an environment holds it
// from ImportFromPackage until the execution reached a final status.
func (e *Env) ImportLock() *ImportLock {
	e.importOnce.Do(func() { e.importLock = &ImportLock{ch: make(chan struct{}, 1)} })
	return e.importLock
}

// ImportLock is a lock that can be waited for with a context.
type ImportLock struct {
	ch     chan struct{}
	mu     sync.Mutex
	holder string
}

// Lock waits for the lock or ctx; holder names who holds it (status).
func (l *ImportLock) Lock(ctx context.Context, holder string) error {
	select {
	case l.ch <- struct{}{}:
		l.mu.Lock()
		l.holder = holder
		l.mu.Unlock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TryLock takes the lock if it is free.
func (l *ImportLock) TryLock(holder string) bool {
	select {
	case l.ch <- struct{}{}:
		l.mu.Lock()
		l.holder = holder
		l.mu.Unlock()
		return true
	default:
		return false
	}
}

// Unlock releases the lock.
func (l *ImportLock) Unlock() {
	l.mu.Lock()
	l.holder = ""
	l.mu.Unlock()
	<-l.ch
}

// Holder names who holds the lock ("" when free).
func (l *ImportLock) Holder() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holder
}
