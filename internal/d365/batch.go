package d365

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// ErrMalformedBatch is wrapped by ParseBatchResponse for a $batch answer
// that cannot be read.
var ErrMalformedBatch = errors.New("malformed $batch response")

// Limits of ParseBatchResponse, so a hostile or broken answer cannot
// exhaust memory.
const (
	maxBatchParts    = 10000
	maxBatchPartBody = 16 << 20
)

// BatchOp is one operation of a $batch request.
type BatchOp struct {
	// Method is POST, PATCH, PUT or DELETE (changesets never hold GET).
	Method string
	// URL is the target relative to the service root (e.g.
	// "ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P1')")
	// or absolute.
	URL string
	// Body is the JSON body, if any.
	Body []byte
	// ContentID identifies the operation in the answer; it must be unique
	// within the request.
	ContentID string
}

// WriteBatch writes a $batch request body holding each element of
// changesets as one changeset (atomic in F&O: all operations succeed or
// none), and returns the Content-Type header to send with it.
func WriteBatch(w io.Writer, serviceRoot string, changesets [][]BatchOp) (string, error) {
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(newBoundary("batch_")); err != nil {
		return "", err
	}
	root := strings.TrimRight(serviceRoot, "/") + "/"
	for _, cs := range changesets {
		cb := newBoundary("changeset_")
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", "multipart/mixed; boundary="+cb)
		pw, err := mw.CreatePart(h)
		if err != nil {
			return "", err
		}
		cw := multipart.NewWriter(pw)
		if err := cw.SetBoundary(cb); err != nil {
			return "", err
		}
		for _, op := range cs {
			oh := textproto.MIMEHeader{}
			oh.Set("Content-Type", "application/http")
			oh.Set("Content-Transfer-Encoding", "binary")
			if op.ContentID != "" {
				oh.Set("Content-ID", op.ContentID)
			}
			ow, err := cw.CreatePart(oh)
			if err != nil {
				return "", err
			}
			target := op.URL
			if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
				target = root + strings.TrimPrefix(target, "/")
			}
			var b bytes.Buffer
			b.WriteString(op.Method + " " + target + " HTTP/1.1\r\n")
			b.WriteString("Accept: application/json\r\n")
			b.WriteString("OData-Version: 4.0\r\nOData-MaxVersion: 4.0\r\n")
			if op.Body != nil {
				b.WriteString("Content-Type: application/json; odata.metadata=minimal\r\n")
			}
			b.WriteString("\r\n")
			b.Write(op.Body)
			b.WriteString("\r\n")
			if _, err := ow.Write(b.Bytes()); err != nil {
				return "", err
			}
		}
		if err := cw.Close(); err != nil {
			return "", err
		}
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	return "multipart/mixed; boundary=" + mw.Boundary(), nil
}

func newBoundary(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms
	h := hex.EncodeToString(b[:])
	return prefix + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// PartResponse is the answer to one operation of a $batch request.
type PartResponse struct {
	// Changeset is the 1-based index of the changeset the answer belongs
	// to, 0 for an answer outside a changeset.
	Changeset int
	// ContentID is the Content-ID of the operation answered, if F&O sent it.
	ContentID string
	Status    int
	Header    http.Header
	Body      []byte
}

// ParseBatchResponse reads the multipart/mixed answer to a $batch request
// and returns every operation's answer in order, changesets flattened. A
// changeset that failed holds only the failing operation's answer (its
// other operations were rolled back); a throttled one holds one 429. It
// returns an error wrapping ErrMalformedBatch for anything it cannot
// read, and never panics, whatever the input.
func ParseBatchResponse(contentType string, body []byte) ([]PartResponse, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("%w: content type %q is not multipart/mixed with a boundary (%s)", ErrMalformedBatch, clip(contentType), ErrorText(contentType, body))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var out []PartResponse
	cs := 0
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformedBatch, err)
		}
		if len(out) >= maxBatchParts {
			return nil, fmt.Errorf("%w: more than %d parts", ErrMalformedBatch, maxBatchParts)
		}
		pmt, pparams, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if pmt == "multipart/mixed" {
			if pparams["boundary"] == "" {
				return nil, fmt.Errorf("%w: changeset without a boundary", ErrMalformedBatch)
			}
			cs++
			inner := multipart.NewReader(p, pparams["boundary"])
			for {
				ip, err := inner.NextPart()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, fmt.Errorf("%w: changeset %d: %w", ErrMalformedBatch, cs, err)
				}
				if len(out) >= maxBatchParts {
					return nil, fmt.Errorf("%w: more than %d parts", ErrMalformedBatch, maxBatchParts)
				}
				it, err := readPartResponse(ip)
				if err != nil {
					return nil, fmt.Errorf("%w: changeset %d: %w", ErrMalformedBatch, cs, err)
				}
				it.Changeset = cs
				out = append(out, it)
			}
			continue
		}
		it, err := readPartResponse(p)
		if err != nil {
			return nil, fmt.Errorf("%w: part %d: %w", ErrMalformedBatch, len(out)+1, err)
		}
		out = append(out, it)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no parts", ErrMalformedBatch)
	}
	return out, nil
}

// readPartResponse reads an application/http part: a status line,
// headers, an empty line and the body.
func readPartResponse(p *multipart.Part) (PartResponse, error) {
	raw, err := io.ReadAll(io.LimitReader(p, maxBatchPartBody+1))
	if err != nil {
		return PartResponse{}, err
	}
	if len(raw) > maxBatchPartBody {
		return PartResponse{}, fmt.Errorf("part larger than %d bytes", maxBatchPartBody)
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	var line string
	for {
		line, err = tp.ReadLine()
		if err != nil {
			return PartResponse{}, errors.New("part without a status line")
		}
		if strings.TrimSpace(line) != "" {
			break
		}
	}
	proto, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/") || err != nil || status < 100 || status > 999 {
		return PartResponse{}, fmt.Errorf("invalid status line %q", clip(line))
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return PartResponse{}, fmt.Errorf("invalid headers after %q: %w", clip(line), err)
	}
	body, _ := io.ReadAll(tp.R)
	it := PartResponse{
		ContentID: p.Header.Get("Content-ID"),
		Status:    status,
		Header:    http.Header(hdr),
		Body:      bytes.TrimRight(body, "\r\n"),
	}
	if it.ContentID == "" {
		it.ContentID = it.Header.Get("Content-ID")
	}
	return it, nil
}
