package odata

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
)

// maxPartBytes bounds one operation inside a $batch body.
const maxPartBytes = 32 << 20

// Operation is one HTTP request inside a $batch body.
type Operation struct {
	// ContentID is the Content-ID of the part, empty if absent. Later
	// operations of the same changeset may refer to the entity an operation
	// created as $<ContentID>.
	ContentID string
	// Method is the request method, upper case.
	Method string
	// URL is the request target exactly as written: absolute, relative to
	// the service root, or starting with $<ContentID>.
	URL string
	// Header holds the inner request headers.
	Header http.Header
	// Body is the request body with trailing white space removed.
	Body []byte
}

// BatchPart is a top-level part of a $batch request: either a single
// operation, or a changeset whose operations succeed or fail together.
type BatchPart struct {
	Changeset  bool        // the part is a changeset
	Operations []Operation // one operation, or the changeset operations
}

// ParseBatch reads a multipart/mixed $batch body. contentType is the
// request's Content-Type header, which names the boundary. maxOps bounds
// the total number of operations (0 means no bound); beyond it ParseBatch
// returns an error wrapping ErrTooManyOperations. Other problems wrap
// ErrMalformedBatch.
func ParseBatch(contentType string, body io.Reader, maxOps int) ([]BatchPart, error) {
	boundary, err := multipartBoundary(contentType)
	if err != nil {
		return nil, err
	}
	mr := multipart.NewReader(body, boundary)
	var parts []BatchPart
	ops := 0
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errorf(ErrMalformedBatch, "%v", err)
		}
		mt, params, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			return nil, errorf(ErrMalformedBatch, "part %d: missing or invalid Content-Type", len(parts)+1)
		}
		switch mt {
		case "multipart/mixed":
			cs, err := parseChangeset(p, params["boundary"], &ops, maxOps)
			if err != nil {
				return nil, err
			}
			parts = append(parts, BatchPart{Changeset: true, Operations: cs})
		case "application/http":
			op, err := readOperation(p)
			if err != nil {
				return nil, err
			}
			ops++
			if maxOps > 0 && ops > maxOps {
				return nil, tooMany(maxOps)
			}
			parts = append(parts, BatchPart{Operations: []Operation{op}})
		default:
			return nil, errorf(ErrMalformedBatch, "part %d has content type %q; expected application/http or multipart/mixed", len(parts)+1, mt)
		}
	}
	if len(parts) == 0 {
		return nil, errorf(ErrMalformedBatch, "the batch contains no parts")
	}
	return parts, nil
}

func tooMany(maxOps int) error {
	return errorf(ErrTooManyOperations, "The current batch message contains too many parts. Only batch messages with a maximum number of '%d' query operations and change sets are allowed.", maxOps)
}

func multipartBoundary(contentType string) (string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/mixed" {
		return "", errorf(ErrMalformedBatch, "the content type %q is not multipart/mixed", contentType)
	}
	b := params["boundary"]
	if b == "" || len(b) > 70 {
		return "", errorf(ErrMalformedBatch, "the content type has no valid boundary parameter")
	}
	return b, nil
}

func parseChangeset(r io.Reader, boundary string, ops *int, maxOps int) ([]Operation, error) {
	if boundary == "" || len(boundary) > 70 {
		return nil, errorf(ErrMalformedBatch, "changeset without a valid boundary")
	}
	mr := multipart.NewReader(r, boundary)
	var out []Operation
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errorf(ErrMalformedBatch, "changeset: %v", err)
		}
		mt, _, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil || mt != "application/http" {
			return nil, errorf(ErrMalformedBatch, "changeset part %d must have content type application/http", len(out)+1)
		}
		op, err := readOperation(p)
		if err != nil {
			return nil, err
		}
		if op.Method == http.MethodGet {
			return nil, errorf(ErrMalformedBatch, "a changeset must not contain a GET request")
		}
		*ops++
		if maxOps > 0 && *ops > maxOps {
			return nil, tooMany(maxOps)
		}
		out = append(out, op)
	}
	if len(out) == 0 {
		return nil, errorf(ErrMalformedBatch, "empty changeset")
	}
	return out, nil
}

var methods = map[string]bool{
	http.MethodGet: true, http.MethodPost: true, http.MethodPatch: true,
	http.MethodPut: true, http.MethodDelete: true, "MERGE": true,
}

// readOperation parses an application/http part: a request line, headers,
// an empty line and the body.
func readOperation(p *multipart.Part) (Operation, error) {
	raw, err := io.ReadAll(io.LimitReader(p, maxPartBytes+1))
	if err != nil {
		return Operation{}, errorf(ErrMalformedBatch, "%v", err)
	}
	if len(raw) > maxPartBytes {
		return Operation{}, errorf(ErrMalformedBatch, "operation larger than %d bytes", maxPartBytes)
	}
	br := bufio.NewReader(bytes.NewReader(raw))
	tp := textproto.NewReader(br)
	var line string
	for {
		line, err = tp.ReadLine()
		if err != nil {
			return Operation{}, errorf(ErrMalformedBatch, "operation without a request line")
		}
		if strings.TrimSpace(line) != "" {
			break
		}
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/") {
		return Operation{}, errorf(ErrMalformedBatch, "invalid request line %q", truncate(line, 200))
	}
	method := strings.ToUpper(f[0])
	if !methods[method] {
		return Operation{}, errorf(ErrMalformedBatch, "unsupported method %q", truncate(f[0], 20))
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return Operation{}, errorf(ErrMalformedBatch, "invalid headers in operation %q: %v", truncate(line, 200), err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return Operation{}, errorf(ErrMalformedBatch, "%v", err)
	}
	op := Operation{
		ContentID: p.Header.Get("Content-ID"),
		Method:    method,
		URL:       f[1],
		Header:    http.Header(hdr),
		Body:      bytes.TrimRight(body, " \t\r\n"),
	}
	if op.ContentID == "" {
		op.ContentID = op.Header.Get("Content-ID")
	}
	return op, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// OperationResponse is the answer to one Operation.
type OperationResponse struct {
	ContentID string      // Content-ID of the request, echoed
	Status    int         // HTTP status of the operation
	Header    http.Header // response headers of the operation
	Body      []byte      // response body of the operation
}

// BatchResponsePart answers one BatchPart. A changeset answer lists one
// response per operation when all succeeded, or only the failing one.
type BatchResponsePart struct {
	Changeset bool                // answer a changeset
	Responses []OperationResponse // operation responses
}

// NewBoundary returns a random multipart boundary with the given prefix,
// e.g. NewBoundary("batchresponse_").
func NewBoundary(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	h := hex.EncodeToString(b[:])
	return prefix + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// WriteBatchResponse writes a multipart/mixed $batch response body with the
// given boundary (which the caller also puts in the Content-Type header).
func WriteBatchResponse(w io.Writer, boundary string, parts []BatchResponsePart) error {
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(boundary); err != nil {
		return err
	}
	for _, p := range parts {
		if !p.Changeset {
			for _, r := range p.Responses {
				if err := writeOperationResponse(mw, r); err != nil {
					return err
				}
			}
			continue
		}
		cb := NewBoundary("changesetresponse_")
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", "multipart/mixed; boundary="+cb)
		pw, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		cw := multipart.NewWriter(pw)
		if err := cw.SetBoundary(cb); err != nil {
			return err
		}
		for _, r := range p.Responses {
			if err := writeOperationResponse(cw, r); err != nil {
				return err
			}
		}
		if err := cw.Close(); err != nil {
			return err
		}
	}
	return mw.Close()
}

func writeOperationResponse(mw *multipart.Writer, r OperationResponse) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "application/http")
	h.Set("Content-Transfer-Encoding", "binary")
	if r.ContentID != "" {
		h.Set("Content-ID", r.ContentID)
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(r.Status) + " " + http.StatusText(r.Status) + "\r\n")
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	b.Write(r.Body)
	if len(r.Body) > 0 {
		b.WriteString("\r\n")
	}
	_, err = pw.Write(b.Bytes())
	return err
}

// ResponseItem is one operation response read back by ParseBatchResponse.
type ResponseItem struct {
	// Changeset is the 1-based index of the changeset the response belongs
	// to, 0 outside changesets.
	Changeset int
	ContentID string      // Content-ID of the part
	Status    int         // status line code
	Header    http.Header // headers of the part
	Body      []byte      // body of the part
}

// ParseBatchResponse reads a $batch response body, flattening changesets.
// The emulator's tests and tools use it to check what a client would see.
func ParseBatchResponse(contentType string, body io.Reader) ([]ResponseItem, error) {
	boundary, err := multipartBoundary(contentType)
	if err != nil {
		return nil, err
	}
	mr := multipart.NewReader(body, boundary)
	var out []ResponseItem
	cs := 0
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, errorf(ErrMalformedBatch, "%v", err)
		}
		mt, params, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if mt == "multipart/mixed" {
			cs++
			inner := multipart.NewReader(p, params["boundary"])
			for {
				ip, err := inner.NextPart()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, errorf(ErrMalformedBatch, "%v", err)
				}
				it, err := readResponse(ip)
				if err != nil {
					return nil, err
				}
				it.Changeset = cs
				out = append(out, it)
			}
			continue
		}
		it, err := readResponse(p)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
}

func readResponse(p *multipart.Part) (ResponseItem, error) {
	br := bufio.NewReader(p)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return ResponseItem{}, errorf(ErrMalformedBatch, "%v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return ResponseItem{}, errorf(ErrMalformedBatch, "%v", err)
	}
	return ResponseItem{
		ContentID: p.Header.Get("Content-ID"),
		Status:    resp.StatusCode,
		Header:    resp.Header,
		Body:      bytes.TrimRight(body, "\r\n"),
	}, nil
}
