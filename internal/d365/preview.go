package d365

import (
	"net/http"
	"sort"

	"github.com/plantgate/plantgate/internal/pipeline"
)

// TokenPlaceholder stands for the access token in a previewed request.
const TokenPlaceholder = "<access token from the identity platform>"

// requestHeader is the header of r as Do sends it with token tok.
func requestHeader(r *Request, tok string) http.Header {
	h := make(http.Header, len(r.Header)+5)
	for k, v := range r.Header {
		h[k] = v
	}
	h.Set("Authorization", "Bearer "+tok)
	if h.Get("Accept") == "" {
		h.Set("Accept", "application/json")
	}
	h.Set("OData-Version", "4.0")
	h.Set("OData-MaxVersion", "4.0")
	if r.Body != nil {
		ct := r.ContentType
		if ct == "" {
			ct = "application/json; charset=utf-8"
		}
		h.Set("Content-Type", ct)
	}
	return h
}

// Preview describes r as Do would send it to the environment, with the
// access token replaced by TokenPlaceholder. It does no I/O.
func (e *Env) Preview(r *Request) pipeline.RequestPreview {
	h := requestHeader(r, TokenPlaceholder)
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	hdr := make(map[string]string, len(h))
	for _, k := range names {
		hdr[k] = h.Get(k)
	}
	return pipeline.RequestPreview{Method: r.Method, URL: e.url, Path: r.Path, Header: hdr, Body: r.Body}
}
