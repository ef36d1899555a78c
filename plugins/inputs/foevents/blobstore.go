package foevents

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/plantgate/plantgate/internal/logging"
)

// blobStore lists, reads and deletes the event blobs of one container
// over the Blob service's REST API, authenticated by a SAS: the one
// configured, or a container SAS (list, read, delete) signed with the
// account key by the azblob SDK's sas package.
//
// It is written here instead of using azblob.Client because listing a
// container goes through the SDK's container package, which links Apache
// Arrow and its dependencies (about 6.5 MB of the gateway's static binary,
// against a footprint target of 25 MB) for a feature plantgate does not
// use. The three calls are plain HTTP requests with a documented XML list.
type blobStore struct {
	base      string // the account URL, ending in /
	container string
	hc        *http.Client

	fixedSAS string // a configured SAS, or "" when signed from the key
	cred     *sas.SharedKeyCredential

	mu      sync.Mutex
	sas     string
	expires time.Time
}

// errBlobNotFound: the blob is gone.
var errBlobNotFound = errors.New("blob not found")

// apiVersion is the Blob service version the requests ask for.
const apiVersion = "2021-12-02"

func newBlobStore(accountURL, container, fixedSAS, account, key string, hc *http.Client) (*blobStore, error) {
	s := &blobStore{base: strings.TrimRight(accountURL, "/") + "/", container: container, hc: hc,
		fixedSAS: strings.TrimPrefix(fixedSAS, "?")}
	if s.fixedSAS == "" {
		cred, err := blob.NewSharedKeyCredential(account, key)
		if err != nil {
			return nil, fmt.Errorf("account key: %w", err)
		}
		s.cred = cred
	}
	return s, nil
}

// token returns the SAS query to send, signing a fresh container SAS
// (valid one hour) when the one in hand has less than ten minutes left.
func (s *blobStore) token() (string, error) {
	if s.fixedSAS != "" {
		return s.fixedSAS, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC()
	if s.sas != "" && s.expires.Sub(now) > 10*time.Minute {
		return s.sas, nil
	}
	perms := (&sas.ContainerPermissions{Read: true, List: true, Delete: true}).String()
	qp, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, StartTime: now.Add(-5 * time.Minute), ExpiryTime: now.Add(time.Hour),
		Permissions: perms, ContainerName: s.container}.SignWithSharedKey(s.cred)
	if err != nil {
		return "", fmt.Errorf("sign a container SAS: %w", err)
	}
	s.sas, s.expires = qp.Encode(), now.Add(time.Hour)
	return s.sas, nil
}

func (s *blobStore) do(ctx context.Context, method, path string, query url.Values) (*http.Response, error) {
	tok, err := s.token()
	if err != nil {
		return nil, err
	}
	q := query.Encode()
	if q != "" {
		q += "&"
	}
	u := s.base + path + "?" + q + tok
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, errors.New("bad blob URL")
	}
	req.Header.Set("x-ms-version", apiVersion)
	resp, err := s.hc.Do(req)
	if err != nil {
		// The URL holds the SAS: say only what failed.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s%s: %s", method, s.base, path, logging.RedactText(err.Error()))
	}
	if resp.StatusCode/100 != 2 {
		defer func() { _ = resp.Body.Close() }()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		code := resp.Header.Get("x-ms-error-code")
		if resp.StatusCode == http.StatusNotFound && code == "BlobNotFound" {
			return nil, errBlobNotFound
		}
		return nil, fmt.Errorf("%s %s%s: %d %s", method, s.base, path, resp.StatusCode, code)
	}
	return resp, nil
}

// listing is the List Blobs answer.
type listing struct {
	Blobs struct {
		Blob []struct {
			Name       string `xml:"Name"`
			Properties struct {
				LastModified string `xml:"Last-Modified"`
			} `xml:"Properties"`
		} `xml:"Blob"`
	} `xml:"Blobs"`
	NextMarker string `xml:"NextMarker"`
}

// list returns the blobs whose names start with prefix, at most max (0:
// all).
func (s *blobStore) list(ctx context.Context, prefix string, max int) ([]blobRef, error) {
	var out []blobRef
	marker := ""
	for {
		q := url.Values{"restype": {"container"}, "comp": {"list"}}
		if prefix != "" {
			q.Set("prefix", prefix)
		}
		if marker != "" {
			q.Set("marker", marker)
		}
		if max > 0 {
			q.Set("maxresults", fmt.Sprint(max))
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := s.do(lctx, http.MethodGet, url.PathEscape(s.container), q)
		if err != nil {
			cancel()
			return nil, err
		}
		var l listing
		err = xml.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(&l)
		_ = resp.Body.Close()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list answer: %w", err)
		}
		for _, b := range l.Blobs.Blob {
			r := blobRef{name: b.Name}
			if t, err := time.Parse(time.RFC1123, b.Properties.LastModified); err == nil {
				r.mod = t
			}
			out = append(out, r)
		}
		if l.NextMarker == "" || max > 0 {
			return out, nil
		}
		marker = l.NextMarker
	}
}

func (s *blobStore) blobPath(name string) string {
	return url.PathEscape(s.container) + "/" + (&url.URL{Path: name}).EscapedPath()
}

// read returns a blob's bytes, at most limit of them.
func (s *blobStore) read(ctx context.Context, name string, limit int64) ([]byte, error) {
	resp, err := s.do(ctx, http.MethodGet, s.blobPath(name), nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}

// remove deletes a blob; one already gone is errBlobNotFound.
func (s *blobStore) remove(ctx context.Context, name string) error {
	resp, err := s.do(ctx, http.MethodDelete, s.blobPath(name), nil)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	return nil
}
