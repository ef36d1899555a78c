package foemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/plantgate/plantgate/internal/foemu/odata"
	"github.com/plantgate/plantgate/internal/logging"
)

// maxBatchBytes bounds a $batch body.
const maxBatchBytes = 256 << 20

// serveBatch answers POST /data/$batch. Each changeset runs atomically: if
// an operation fails, the changes of the earlier ones are undone and the
// changeset's answer holds only the failing operation's response, as the
// OData stack of F&O does. Operations outside changesets run one by one.
// The outer status is 200 whatever the parts answered. Every operation
// counts against the client's throttling budget; throttled operations
// answer 429 with Retry-After inside the batch.
func (e *Emulator) serveBatch(w http.ResponseWriter, r *http.Request, cl *ClientConfig) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeODataError(w, http.StatusMethodNotAllowed, "The requested resource does not support http method '"+r.Method+"'.", typeOData, "")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBatchBytes))
	if err != nil {
		writeODataError(w, http.StatusRequestEntityTooLarge, "The batch request body is too large.", typeOData, "")
		return
	}
	parts, err := odata.ParseBatch(r.Header.Get("Content-Type"), bytes.NewReader(body), e.cfg.OData.MaxBatchOperations)
	if err != nil {
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), odata.ErrTooManyOperations.Error()+": "), odata.ErrMalformedBatch.Error()+": ")
		if errors.Is(err, odata.ErrMalformedBatch) {
			msg = "The batch request is not valid: " + msg
		}
		writeODataError(w, http.StatusBadRequest, msg, typeOData, "")
		return
	}
	var out []odata.BatchResponsePart
	ops, throttled := 0, 0
	for _, part := range parts {
		ops += len(part.Operations)
		v := e.throttle.acquire(cl.ClientID, len(part.Operations), false, time.Now())
		if !v.ok {
			throttled += len(part.Operations)
			resp := throttledResponse(v)
			if part.Changeset {
				resp.ContentID = part.Operations[0].ContentID
				out = append(out, odata.BatchResponsePart{Changeset: true, Responses: []odata.OperationResponse{resp}})
				continue
			}
			out = append(out, odata.BatchResponsePart{Responses: []odata.OperationResponse{resp}})
			continue
		}
		if part.Changeset {
			out = append(out, odata.BatchResponsePart{Changeset: true, Responses: e.runChangeset(cl, part.Operations)})
			continue
		}
		op := part.Operations[0]
		e.mu.Lock()
		resp := e.runOperation(cl, op, nil, nil)
		e.mu.Unlock()
		out = append(out, odata.BatchResponsePart{Responses: []odata.OperationResponse{toPartResponse(op, resp)}})
	}
	e.stats.recordBatchOps(cl.ClientID, ops, throttled)
	e.log.Debug().Str(logging.FieldClientID, cl.ClientID).Int(logging.FieldCount, ops).Int(logging.FieldThrottled, throttled).Msg("batch")
	boundary := odata.NewBoundary("batchresponse_")
	var buf bytes.Buffer
	if err := odata.WriteBatchResponse(&buf, boundary, out); err != nil {
		writeODataError(w, http.StatusInternalServerError, "Writing the batch response failed: "+err.Error(), typeServer, "")
		return
	}
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundary)
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

func throttledResponse(v verdict) odata.OperationResponse {
	return odata.OperationResponse{
		Status: http.StatusTooManyRequests,
		Header: http.Header{"Retry-After": {strconv.Itoa(v.retryAfter)}, "Content-Type": {"application/json; odata.metadata=minimal"}},
		Body:   odataErrorBody(v.message, typeThrottle, ""),
	}
}

// runChangeset executes a changeset under one lock, all or nothing.
func (e *Emulator) runChangeset(cl *ClientConfig, ops []odata.Operation) []odata.OperationResponse {
	e.mu.Lock()
	defer e.mu.Unlock()
	undo := &undoLog{}
	ids := map[string]string{}
	var out []odata.OperationResponse
	for _, op := range ops {
		resp := e.runOperation(cl, op, undo, ids)
		if !resp.ok() {
			undo.rollback()
			return []odata.OperationResponse{toPartResponse(op, resp)}
		}
		if op.ContentID != "" && resp.entityPath != "" {
			ids[op.ContentID] = resp.entityPath
		}
		out = append(out, toPartResponse(op, resp))
	}
	return out
}

// runOperation executes one batch operation. The caller holds e.mu.
func (e *Emulator) runOperation(cl *ClientConfig, op odata.Operation, undo *undoLog, ids map[string]string) odataResp {
	path, query, msg := e.batchTarget(op.URL, ids)
	if msg != "" {
		return errResp(http.StatusBadRequest, msg, typeOData, "")
	}
	return e.execOData(odataReq{
		method: op.Method, path: path, query: query, header: op.Header, body: op.Body,
		client: cl, inBatch: true, undo: undo,
	})
}

// batchTarget resolves an operation URL (absolute, /data/..., relative to
// the service root, or $<Content-ID>) to a path below /data/ and a query.
func (e *Emulator) batchTarget(raw string, ids map[string]string) (string, url.Values, string) {
	if strings.HasPrefix(raw, "$") {
		end := strings.IndexAny(raw, "/?")
		if end < 0 {
			end = len(raw)
		}
		id := raw[1:end]
		target, ok := ids[id]
		if !ok {
			return "", nil, fmt.Sprintf("The Content-ID '%s' referenced in the request URI was not found in the change set.", id)
		}
		raw = target + raw[end:]
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Sprintf("The request URI '%s' is not valid.", raw)
	}
	if u.IsAbs() && !e.sameHostURL(u) {
		return "", nil, fmt.Sprintf("The request URI '%s' is not valid. Since this is a batch request, the URI must be relative to the service root or point at it.", raw)
	}
	p := strings.TrimPrefix(u.Path, "/")
	switch {
	case p == "data":
		p = ""
	case strings.HasPrefix(p, "data/"):
		p = strings.TrimPrefix(p, "data/")
	}
	if p == "$batch" {
		return "", nil, "A batch request must not contain another batch request."
	}
	return p, u.Query(), ""
}

func toPartResponse(op odata.Operation, r odataResp) odata.OperationResponse {
	h := r.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	return odata.OperationResponse{ContentID: op.ContentID, Status: r.status, Header: h, Body: r.body}
}
