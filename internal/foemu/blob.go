package foemu

import (
	"bytes"
	"context"
	"crypto/md5" //nolint:gosec // Content-MD5 is the Azure Blob integrity check of the protocol, not a security control
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/plantgate/plantgate/internal/logging"
)

// blobStore holds DMF packages and error files. The builtin store keeps
// them in memory behind /_blob/; the Azurite store uses a real storage
// account. Both hand out SAS URLs.
type blobStore interface {
	// signedURL returns a SAS URL for a blob with the given permissions
	// (a subset of "rcw") valid until expiry.
	signedURL(container, name, perms string, expiry time.Time) (string, error)
	// fetch downloads a blob by URL, at most max bytes.
	fetch(ctx context.Context, rawURL string, max int64) ([]byte, error)
	// put stores a blob.
	put(ctx context.Context, container, name string, data []byte) error
}

func newBlobStore(cfg DMFConfig, baseURL string, client *http.Client) (blobStore, error) {
	switch cfg.Blob.Mode {
	case BlobAzurite:
		return newAzuriteStore(cfg.Blob, client)
	default:
		return newBuiltinStore(baseURL, client)
	}
}

// escapeBlobName escapes each path segment of a blob name.
func escapeBlobName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// sasValues are the signature values the emulator issues: no protocol
// restriction (so plain-HTTP Azurite accepts them), a start five minutes in
// the past for clock skew.
func sasValues(container, name, perms string, expiry time.Time) sas.BlobSignatureValues {
	p := sas.BlobPermissions{Read: strings.Contains(perms, "r"), Create: strings.Contains(perms, "c"), Write: strings.Contains(perms, "w")}
	return sas.BlobSignatureValues{
		StartTime:     time.Now().UTC().Add(-5 * time.Minute).Truncate(time.Second),
		ExpiryTime:    expiry.UTC().Truncate(time.Second),
		Permissions:   p.String(),
		ContainerName: container,
		BlobName:      name,
	}
}

// httpFetch downloads a URL with a GET.
func httpFetch(ctx context.Context, client *http.Client, rawURL string, max int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBlob, logging.RedactText(err.Error()))
	}
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBlob, logging.RedactText(err.Error()))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		code := resp.Header.Get("x-ms-error-code")
		return nil, fmt.Errorf("%w: the blob service answered %d %s", ErrBlob, resp.StatusCode, code)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBlob, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: the package is larger than %d bytes", ErrBlob, max)
	}
	return b, nil
}

// builtinAccount is the account name in the canonical resource of the
// builtin store's SAS signatures.
const builtinAccount = "foemulator"

// builtinStore is an in-memory blob service under /_blob/<container>/<blob>
// that speaks enough of the Azure Blob REST API for the azblob SDK: Put
// Blob, Put Block, Put Block List, Get Blob, Get Blob Properties and Delete
// Blob, with SAS signatures it checks.
type builtinStore struct {
	base   string
	cred   *sas.SharedKeyCredential
	client *http.Client

	mu    sync.Mutex
	blobs map[string]*memBlob
}

type memBlob struct {
	data     []byte
	blocks   map[string][]byte
	ctype    string
	etag     string
	modified time.Time
}

func newBuiltinStore(base string, client *http.Client) (*builtinStore, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	cred, err := azblob.NewSharedKeyCredential(builtinAccount, base64.StdEncoding.EncodeToString(key))
	if err != nil {
		return nil, err
	}
	return &builtinStore{base: base, cred: cred, client: client, blobs: map[string]*memBlob{}}, nil
}

func (b *builtinStore) signedURL(container, name, perms string, expiry time.Time) (string, error) {
	qp, err := sasValues(container, name, perms, expiry).SignWithSharedKey(b.cred)
	if err != nil {
		return "", fmt.Errorf("%w: sign SAS: %w", ErrBlob, err)
	}
	return b.base + "/_blob/" + container + "/" + escapeBlobName(name) + "?" + qp.Encode(), nil
}

func (b *builtinStore) fetch(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err == nil && strings.HasPrefix(u.Path, "/_blob/") && strings.HasPrefix(rawURL, b.base+"/") {
		container, name, ok := splitBlobPath(u.Path)
		if ok {
			b.mu.Lock()
			defer b.mu.Unlock()
			mb := b.blobs[container+"/"+name]
			if mb == nil || mb.data == nil {
				return nil, fmt.Errorf("%w: the blob %s/%s does not exist", ErrBlob, container, name)
			}
			if int64(len(mb.data)) > max {
				return nil, fmt.Errorf("%w: the package is larger than %d bytes", ErrBlob, max)
			}
			return append([]byte(nil), mb.data...), nil
		}
	}
	return httpFetch(ctx, b.client, rawURL, max)
}

func (b *builtinStore) put(_ context.Context, container, name string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blobs[container+"/"+name] = &memBlob{data: data, ctype: "application/octet-stream", etag: newETag(), modified: time.Now().UTC()}
	return nil
}

// splitBlobPath splits /_blob/<container>/<blob>.
func splitBlobPath(p string) (string, string, bool) {
	rest := strings.TrimPrefix(p, "/_blob/")
	container, name, ok := strings.Cut(rest, "/")
	if !ok || container == "" || name == "" {
		return "", "", false
	}
	return container, name, true
}

func newETag() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return fmt.Sprintf(`"0x%X"`, b)
}

// blobError writes an Azure Storage error.
func blobError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><Error><Code>`)
	_ = xml.EscapeText(&b, []byte(code))
	b.WriteString(`</Code><Message>`)
	_ = xml.EscapeText(&b, []byte(msg+"\nRequestId:"+randomGUID()+"\nTime:"+time.Now().UTC().Format(time.RFC3339Nano)))
	b.WriteString(`</Message></Error>`)
	_, _ = w.Write(b.Bytes())
}

// serveBlob answers /_blob/ in builtin mode.
func (e *Emulator) serveBlob(w http.ResponseWriter, r *http.Request) {
	b, ok := e.blobs.(*builtinStore)
	if !ok {
		blobError(w, http.StatusNotFound, "ResourceNotFound", "The emulator uses an external blob store (azurite mode); /_blob/ is disabled.")
		return
	}
	b.serve(w, r)
}

func (b *builtinStore) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", randomGUID())
	w.Header().Set("x-ms-version", "2026-12-06")
	if b.serveContainerSAS(w, r) { // event readers (eventblob.go)
		return
	}
	container, name, ok := splitBlobPath(r.URL.Path)
	if !ok {
		blobError(w, http.StatusBadRequest, "InvalidUri", "The requested URI does not represent any resource on the server.")
		return
	}
	q := r.URL.Query()
	need := "r"
	switch r.Method {
	case http.MethodPut:
		need = "cw"
	case http.MethodDelete:
		need = "d"
	}
	if code, msg := b.checkSAS(q, container, name, need); code != "" {
		status := http.StatusForbidden
		blobError(w, status, code, msg)
		return
	}
	key := container + "/" + name
	switch r.Method {
	case http.MethodPut:
		b.servePut(w, r, key, q)
	case http.MethodGet, http.MethodHead:
		b.mu.Lock()
		mb := b.blobs[key]
		var data []byte
		var blob memBlob
		if mb != nil && mb.data != nil {
			blob = *mb
			data = mb.data
		}
		b.mu.Unlock()
		if data == nil {
			blobError(w, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
			return
		}
		w.Header().Set("Content-Type", blob.ctype)
		w.Header().Set("ETag", blob.etag)
		w.Header().Set("x-ms-blob-type", "BlockBlob")
		w.Header().Set("Accept-Ranges", "bytes")
		http.ServeContent(w, r, "", blob.modified, bytes.NewReader(data))
	case http.MethodDelete:
		b.mu.Lock()
		_, found := b.blobs[key]
		delete(b.blobs, key)
		b.mu.Unlock()
		if !found {
			blobError(w, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		blobError(w, http.StatusMethodNotAllowed, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.")
	}
}

// maxBuiltinBlob bounds a blob or block in the builtin store.
const maxBuiltinBlob = 1 << 30

func (b *builtinStore) servePut(w http.ResponseWriter, r *http.Request, key string, q url.Values) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBuiltinBlob))
	if err != nil {
		blobError(w, http.StatusRequestEntityTooLarge, "RequestBodyTooLarge", "The request body is too large.")
		return
	}
	if md5h := r.Header.Get("Content-MD5"); md5h != "" {
		sum := md5.Sum(body) //nolint:gosec // see the import
		if base64.StdEncoding.EncodeToString(sum[:]) != md5h {
			blobError(w, http.StatusBadRequest, "Md5Mismatch", "The MD5 value specified in the request did not match with the MD5 value calculated by the server.")
			return
		}
	}
	now := time.Now().UTC()
	b.mu.Lock()
	defer b.mu.Unlock()
	mb := b.blobs[key]
	switch q.Get("comp") {
	case "":
		if bt := r.Header.Get("x-ms-blob-type"); bt == "" {
			blobError(w, http.StatusBadRequest, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified. x-ms-blob-type")
			return
		} else if bt != "BlockBlob" {
			blobError(w, http.StatusBadRequest, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format. x-ms-blob-type")
			return
		}
		ct := r.Header.Get("x-ms-blob-content-type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		b.blobs[key] = &memBlob{data: body, ctype: ct, etag: newETag(), modified: now}
	case "block":
		id := q.Get("blockid")
		if id == "" {
			blobError(w, http.StatusBadRequest, "InvalidQueryParameterValue", "Value for one of the query parameters specified in the request URI is invalid. blockid")
			return
		}
		if mb == nil {
			mb = &memBlob{ctype: "application/octet-stream", modified: now}
			b.blobs[key] = mb
		}
		if mb.blocks == nil {
			mb.blocks = map[string][]byte{}
		}
		mb.blocks[id] = body
	case "blocklist":
		var list struct {
			Items []struct {
				XMLName xml.Name
				ID      string `xml:",chardata"`
			} `xml:",any"`
		}
		if err := xml.Unmarshal(body, &list); err != nil {
			blobError(w, http.StatusBadRequest, "InvalidXmlDocument", "XML specified is not syntactically valid.")
			return
		}
		var data []byte
		for _, it := range list.Items {
			var blk []byte
			var ok bool
			if mb != nil && mb.blocks != nil {
				blk, ok = mb.blocks[it.ID]
			}
			if !ok {
				blobError(w, http.StatusBadRequest, "InvalidBlockList", "The specified block list is invalid.")
				return
			}
			data = append(data, blk...)
		}
		ct := r.Header.Get("x-ms-blob-content-type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		b.blobs[key] = &memBlob{data: data, ctype: ct, etag: newETag(), modified: now}
	default:
		blobError(w, http.StatusBadRequest, "InvalidQueryParameterValue", "Value for one of the query parameters specified in the request URI is invalid. comp")
		return
	}
	if cur := b.blobs[key]; cur.etag != "" {
		w.Header().Set("ETag", cur.etag)
	}
	w.Header().Set("Last-Modified", now.Format(http.TimeFormat))
	w.Header().Set("x-ms-request-server-encrypted", "true")
	w.WriteHeader(http.StatusCreated)
}

// checkSAS verifies a SAS the store issued: signature, time window and
// permissions. It returns an Azure error code and message, or "".
func (b *builtinStore) checkSAS(q url.Values, container, name, need string) (string, string) {
	if q.Get("sig") == "" {
		return "AuthenticationFailed", "Server failed to authenticate the request. The request carries no shared access signature."
	}
	qp := sas.NewQueryParameters(q, false)
	v := sas.BlobSignatureValues{
		Version: qp.Version(), Protocol: qp.Protocol(), StartTime: qp.StartTime(), ExpiryTime: qp.ExpiryTime(),
		Permissions: qp.Permissions(), IPRange: qp.IPRange(), Identifier: qp.Identifier(),
		ContainerName: container, BlobName: name,
	}
	if qp.Resource() != "b" {
		return "AuthenticationFailed", "Signature did not match. The emulator issues blob SAS tokens only (sr=b)."
	}
	signed, err := v.SignWithSharedKey(b.cred)
	if err != nil || subtle.ConstantTimeCompare([]byte(signed.Signature()), []byte(qp.Signature())) != 1 {
		return "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."
	}
	now := time.Now().UTC()
	if now.After(qp.ExpiryTime()) || (!qp.StartTime().IsZero() && now.Before(qp.StartTime())) {
		return "AuthenticationFailed", fmt.Sprintf("Signature not valid in the specified time frame: Start [%s] - Expiry [%s] - Current [%s]",
			qp.StartTime().Format(http.TimeFormat), qp.ExpiryTime().Format(http.TimeFormat), now.Format(http.TimeFormat))
	}
	for _, c := range need {
		if c == 'd' || !strings.ContainsRune(qp.Permissions(), c) {
			return "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission."
		}
	}
	return "", ""
}

// azuriteStore keeps packages in a real storage account (Azurite in tests,
// path-style URLs), signing SAS URLs with the account key.
type azuriteStore struct {
	endpoint string
	cred     *azblob.SharedKeyCredential
	svc      *azblob.Client
	client   *http.Client

	mu      sync.Mutex
	created map[string]bool
}

func newAzuriteStore(cfg BlobConfig, client *http.Client) (*azuriteStore, error) {
	cred, err := azblob.NewSharedKeyCredential(cfg.Account, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: storage account key: %w", ErrConfig, err)
	}
	endpoint := strings.TrimRight(cfg.Endpoint, "/")
	svc, err := azblob.NewClientWithSharedKeyCredential(endpoint+"/", cred, &azblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: client, Retry: policy.RetryOptions{MaxRetries: 2}},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: blob client: %w", ErrConfig, err)
	}
	return &azuriteStore{endpoint: endpoint, cred: cred, svc: svc, client: client, created: map[string]bool{}}, nil
}

// ensureContainer creates a container once.
func (a *azuriteStore) ensureContainer(ctx context.Context, container string) error {
	a.mu.Lock()
	done := a.created[container]
	a.mu.Unlock()
	if done {
		return nil
	}
	if _, err := a.svc.CreateContainer(ctx, container, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("%w: create container %s: %s", ErrBlob, container, shortAzError(err))
	}
	a.mu.Lock()
	a.created[container] = true
	a.mu.Unlock()
	return nil
}

func (a *azuriteStore) signedURL(container, name, perms string, expiry time.Time) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.ensureContainer(ctx, container); err != nil {
		return "", err
	}
	qp, err := sasValues(container, name, perms, expiry).SignWithSharedKey(a.cred)
	if err != nil {
		return "", fmt.Errorf("%w: sign SAS: %w", ErrBlob, err)
	}
	return a.endpoint + "/" + container + "/" + escapeBlobName(name) + "?" + qp.Encode(), nil
}

func (a *azuriteStore) fetch(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	return httpFetch(ctx, a.client, rawURL, max)
}

func (a *azuriteStore) put(ctx context.Context, container, name string, data []byte) error {
	if err := a.ensureContainer(ctx, container); err != nil {
		return err
	}
	if _, err := a.svc.UploadBuffer(ctx, container, name, data, nil); err != nil {
		return fmt.Errorf("%w: upload %s/%s: %s", ErrBlob, container, name, shortAzError(err))
	}
	return nil
}

// shortAzError keeps the first line of an azcore error (which otherwise
// spans a whole response dump).
func shortAzError(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("%d %s", re.StatusCode, re.ErrorCode)
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return logging.RedactText(s)
}
