package odata

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleBatchCT = "multipart/mixed; boundary=batch_6f1b2c6e-1d9e-4a43-9d0b-3b9c1a2f0001"

// sampleBatch follows the layout PowerShell and .NET clients send to F&O:
// one changeset with two inserts, then a standalone GET.
var sampleBatch = strings.ReplaceAll(`--batch_6f1b2c6e-1d9e-4a43-9d0b-3b9c1a2f0001
Content-Type: multipart/mixed; boundary=changeset_4d0f0d8e-5a7a-4d2b-8c11-0b1f4e9c0002

--changeset_4d0f0d8e-5a7a-4d2b-8c11-0b1f4e9c0002
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST https://fo.example/data/ProductionOrderHeaders HTTP/1.1
OData-Version: 4.0
OData-MaxVersion: 4.0
Content-Type: application/json;odata.metadata=minimal

{"ProductionOrderNumber":"P1"}
--changeset_4d0f0d8e-5a7a-4d2b-8c11-0b1f4e9c0002
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

PATCH $1 HTTP/1.1
Content-Type: application/json

{"ScheduledQuantity":5}
--changeset_4d0f0d8e-5a7a-4d2b-8c11-0b1f4e9c0002--

--batch_6f1b2c6e-1d9e-4a43-9d0b-3b9c1a2f0001
Content-Type: application/http
Content-Transfer-Encoding: binary

GET ProductionOrderHeaders?$top=1 HTTP/1.1
Accept: application/json

--batch_6f1b2c6e-1d9e-4a43-9d0b-3b9c1a2f0001--
`, "\n", "\r\n")

func TestParseBatch(t *testing.T) {
	parts, err := ParseBatch(sampleBatchCT, strings.NewReader(sampleBatch), 5000)
	if err != nil {
		t.Fatal(err)
	}
	type opView struct{ ID, Method, URL, Body string }
	var got [][]opView
	for _, p := range parts {
		var ops []opView
		for _, o := range p.Operations {
			ops = append(ops, opView{o.ContentID, o.Method, o.URL, string(o.Body)})
		}
		got = append(got, ops)
	}
	want := [][]opView{
		{{"1", "POST", "https://fo.example/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"P1"}`}, {"2", "PATCH", "$1", `{"ScheduledQuantity":5}`}},
		{{"", "GET", "ProductionOrderHeaders?$top=1", ""}},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("got -, want +:\n%s", diff)
	}
	if !parts[0].Changeset || parts[1].Changeset {
		t.Errorf("changeset flags = %v, %v; want true, false", parts[0].Changeset, parts[1].Changeset)
	}
	if ct := parts[0].Operations[0].Header.Get("Content-Type"); ct != "application/json;odata.metadata=minimal" {
		t.Errorf("inner Content-Type = %q", ct)
	}
}

func TestParseBatchLFOnly(t *testing.T) {
	body := strings.ReplaceAll(sampleBatch, "\r\n", "\n")
	parts, err := ParseBatch(sampleBatchCT, strings.NewReader(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(parts); got != 2 {
		t.Errorf("parts = %d, want 2", got)
	}
}

func TestParseBatchErrors(t *testing.T) {
	getInChangeset := strings.Replace(sampleBatch, "PATCH $1", "GET $1", 1)
	tests := []struct {
		name, ct, body string
		maxOps         int
		want           error
	}{
		{"not multipart", "application/json", "{}", 0, ErrMalformedBatch},
		{"no boundary", "multipart/mixed", sampleBatch, 0, ErrMalformedBatch},
		{"wrong boundary", "multipart/mixed; boundary=other", sampleBatch, 0, ErrMalformedBatch},
		{"empty", sampleBatchCT, "", 0, ErrMalformedBatch},
		{"too many", sampleBatchCT, sampleBatch, 2, ErrTooManyOperations},
		{"get in changeset", sampleBatchCT, getInChangeset, 0, ErrMalformedBatch},
		{"bad request line", sampleBatchCT, strings.Replace(sampleBatch, "GET ProductionOrderHeaders?$top=1 HTTP/1.1", "hello", 1), 0, ErrMalformedBatch},
		{"bad method", sampleBatchCT, strings.Replace(sampleBatch, "GET ProductionOrderHeaders", "BREW ProductionOrderHeaders", 1), 0, ErrMalformedBatch},
		{"part type", sampleBatchCT, strings.Replace(sampleBatch, "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET", "Content-Type: text/plain\r\n\r\nGET", 1), 0, ErrMalformedBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBatch(tt.ct, strings.NewReader(tt.body), tt.maxOps)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBatchResponseRoundTrip(t *testing.T) {
	parts := []BatchResponsePart{
		{Changeset: true, Responses: []OperationResponse{
			{ContentID: "1", Status: 201, Header: map[string][]string{"Content-Type": {"application/json; odata.metadata=minimal"}}, Body: []byte(`{"a":1}`)},
			{ContentID: "2", Status: 204},
		}},
		{Responses: []OperationResponse{{Status: 429, Header: map[string][]string{"Retry-After": {"3"}}}}},
	}
	var buf bytes.Buffer
	b := NewBoundary("batchresponse_")
	if err := WriteBatchResponse(&buf, b, parts); err != nil {
		t.Fatal(err)
	}
	items, err := ParseBatchResponse("multipart/mixed; boundary="+b, &buf)
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		CS     int
		ID     string
		Status int
		Body   string
		Retry  string
	}
	var got []view
	for _, it := range items {
		got = append(got, view{it.Changeset, it.ContentID, it.Status, string(it.Body), it.Header.Get("Retry-After")})
	}
	want := []view{{1, "1", 201, `{"a":1}`, ""}, {1, "2", 204, "", ""}, {0, "", 429, "", "3"}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("got -, want +:\n%s", diff)
	}
}

// FuzzParseBatch checks that no input makes the batch parser panic, and
// that the operation limit always holds. Seeds: f.Add below and
// testdata/fuzz/FuzzParseBatch.
func FuzzParseBatch(f *testing.F) {
	f.Add(sampleBatchCT, []byte(sampleBatch))
	f.Add(sampleBatchCT, []byte(strings.ReplaceAll(sampleBatch, "\r\n", "\n")))
	f.Add("multipart/mixed; boundary=b", []byte("--b\r\nContent-Type: application/http\r\n\r\nGET X HTTP/1.1\r\n\r\n--b--\r\n"))
	seeds, _ := filepath.Glob("testdata/batches/*.txt")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(sampleBatchCT, b)
		}
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		parts, err := ParseBatch(ct, bytes.NewReader(body), 10)
		if err != nil {
			return
		}
		n := 0
		for _, p := range parts {
			n += len(p.Operations)
			if len(p.Operations) == 0 {
				t.Fatal("part without operations")
			}
		}
		if n > 10 {
			t.Fatalf("%d operations passed a limit of 10", n)
		}
	})
}
