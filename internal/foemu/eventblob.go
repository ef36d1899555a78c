package foemu

import (
	"bytes"
	"crypto/subtle"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
)

// Container access to the builtin store, for a reader of business event
// blobs (plantgate's fo.events source): a container SAS (sr=c) with read,
// delete and list permissions, issued by GET /_emulator/events/sas, lets
// it list the container (List Blobs, flat, with a prefix), read and delete
// the blobs. The DMF blob SAS (sr=b) stays as it was: no delete.

// ContainerSAS returns the builtin store's service URL and a container SAS
// (read, delete, list) valid for d. It fails in azurite mode, where the
// account's own key serves.
func (e *Emulator) ContainerSAS(container string, d time.Duration) (serviceURL, token string, err error) {
	b, ok := e.blobs.(*builtinStore)
	if !ok {
		return "", "", fmt.Errorf("%w: the emulator uses an external blob store (azurite mode); use its account key", ErrBlob)
	}
	v := sas.BlobSignatureValues{
		StartTime: time.Now().UTC().Add(-5 * time.Minute).Truncate(time.Second), ExpiryTime: time.Now().UTC().Add(d).Truncate(time.Second),
		Permissions: (&sas.ContainerPermissions{Read: true, Delete: true, List: true}).String(), ContainerName: container,
	}
	qp, err := v.SignWithSharedKey(b.cred)
	if err != nil {
		return "", "", fmt.Errorf("%w: sign SAS: %w", ErrBlob, err)
	}
	return b.base + "/_blob", qp.Encode(), nil
}

// serveContainerSAS answers requests signed with a container SAS; it
// reports false for others (the blob SAS path).
func (b *builtinStore) serveContainerSAS(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	if q.Get("sr") != "c" {
		return false
	}
	rest := strings.TrimPrefix(r.URL.Path, "/_blob/")
	container, name, _ := strings.Cut(rest, "/")
	list := name == "" && q.Get("restype") == "container" && q.Get("comp") == "list"
	need := "r"
	switch {
	case list:
		need = "l"
	case r.Method == http.MethodDelete:
		need = "d"
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		blobError(w, http.StatusForbidden, "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission.")
		return true
	}
	if container == "" || (name == "" && !list) {
		blobError(w, http.StatusBadRequest, "InvalidUri", "The requested URI does not represent any resource on the server.")
		return true
	}
	if code, msg := b.checkContainerSAS(q, container, need); code != "" {
		blobError(w, http.StatusForbidden, code, msg)
		return true
	}
	key := container + "/" + name
	switch {
	case list:
		b.serveList(w, container, q)
	case r.Method == http.MethodDelete:
		b.mu.Lock()
		_, found := b.blobs[key]
		delete(b.blobs, key)
		b.mu.Unlock()
		if !found {
			blobError(w, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
			return true
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		b.mu.Lock()
		mb := b.blobs[key]
		var blob memBlob
		if mb != nil {
			blob = *mb
		}
		b.mu.Unlock()
		if blob.data == nil {
			blobError(w, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
			return true
		}
		w.Header().Set("Content-Type", blob.ctype)
		w.Header().Set("ETag", blob.etag)
		w.Header().Set("x-ms-blob-type", "BlockBlob")
		http.ServeContent(w, r, "", blob.modified, bytes.NewReader(blob.data))
	}
	return true
}

func (b *builtinStore) checkContainerSAS(q url.Values, container, need string) (string, string) {
	if q.Get("sig") == "" {
		return "AuthenticationFailed", "Server failed to authenticate the request. The request carries no shared access signature."
	}
	qp := sas.NewQueryParameters(q, false)
	v := sas.BlobSignatureValues{
		Version: qp.Version(), Protocol: qp.Protocol(), StartTime: qp.StartTime(), ExpiryTime: qp.ExpiryTime(),
		Permissions: qp.Permissions(), IPRange: qp.IPRange(), Identifier: qp.Identifier(), ContainerName: container,
	}
	signed, err := v.SignWithSharedKey(b.cred)
	if err != nil || subtle.ConstantTimeCompare([]byte(signed.Signature()), []byte(qp.Signature())) != 1 {
		return "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."
	}
	now := time.Now().UTC()
	if now.After(qp.ExpiryTime()) || (!qp.StartTime().IsZero() && now.Before(qp.StartTime())) {
		return "AuthenticationFailed", "Signature not valid in the specified time frame."
	}
	if !strings.Contains(qp.Permissions(), need) {
		return "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission."
	}
	return "", ""
}

type listResult struct {
	XMLName       xml.Name   `xml:"EnumerationResults"`
	ContainerName string     `xml:"ContainerName,attr"`
	Prefix        string     `xml:"Prefix"`
	Blobs         []listBlob `xml:"Blobs>Blob"`
	NextMarker    string     `xml:"NextMarker"`
}

type listBlob struct {
	Name       string `xml:"Name"`
	Properties struct {
		LastModified  string `xml:"Last-Modified"`
		Etag          string `xml:"Etag"`
		ContentLength int    `xml:"Content-Length"`
		ContentType   string `xml:"Content-Type"`
		BlobType      string `xml:"BlobType"`
	} `xml:"Properties"`
}

// serveList answers List Blobs (flat) for container, with prefix, in name
// order, in pages of maxresults (default 5000) continued by marker.
func (b *builtinStore) serveList(w http.ResponseWriter, container string, q url.Values) {
	prefix, marker := q.Get("prefix"), q.Get("marker")
	max := 5000
	if n, err := fmt.Sscan(q.Get("maxresults"), &max); n != 1 || err != nil || max < 1 {
		max = 5000
	}
	res := listResult{ContainerName: container, Prefix: prefix}
	b.mu.Lock()
	var names []string
	for k, mb := range b.blobs {
		c, n, _ := strings.Cut(k, "/")
		if c == container && strings.HasPrefix(n, prefix) && n > marker && mb.data != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) > max {
		res.NextMarker = names[max-1]
		names = names[:max]
	}
	for _, n := range names {
		mb := b.blobs[container+"/"+n]
		var lb listBlob
		lb.Name = n
		lb.Properties.LastModified = mb.modified.UTC().Format(http.TimeFormat)
		lb.Properties.Etag, lb.Properties.ContentLength, lb.Properties.ContentType = mb.etag, len(mb.data), mb.ctype
		lb.Properties.BlobType = "BlockBlob"
		res.Blobs = append(res.Blobs, lb)
	}
	b.mu.Unlock()
	out, err := xml.Marshal(res)
	if err != nil {
		blobError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write(append([]byte(xml.Header), out...))
}
