package d365

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"
	"time"
)

func TestWriteBatch(t *testing.T) {
	var buf bytes.Buffer
	ct, err := WriteBatch(&buf, "https://fo.example/data", [][]BatchOp{
		{{Method: "POST", URL: "ProductionOrderHeaders", Body: []byte(`{"a":1}`), ContentID: "1"},
			{Method: "PATCH", URL: "ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P1')", Body: []byte(`{"b":2}`), ContentID: "2"}},
		{{Method: "POST", URL: "https://fo.example/data/Other", Body: []byte(`{}`), ContentID: "3"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/mixed" || !strings.HasPrefix(params["boundary"], "batch_") {
		t.Fatalf("content type %q", ct)
	}
	mr := multipart.NewReader(&buf, params["boundary"])
	var lines []string
	sets := 0
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sets++
		_, cp, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if !strings.HasPrefix(cp["boundary"], "changeset_") {
			t.Fatalf("changeset boundary %q", cp["boundary"])
		}
		cr := multipart.NewReader(p, cp["boundary"])
		for {
			op, err := cr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if op.Header.Get("Content-Type") != "application/http" || op.Header.Get("Content-Transfer-Encoding") != "binary" || op.Header.Get("Content-ID") == "" {
				t.Errorf("operation headers %v", op.Header)
			}
			b, _ := io.ReadAll(op)
			lines = append(lines, strings.SplitN(string(b), "\r\n", 2)[0])
		}
	}
	want := []string{
		"POST https://fo.example/data/ProductionOrderHeaders HTTP/1.1",
		"PATCH https://fo.example/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P1') HTTP/1.1",
		"POST https://fo.example/data/Other HTTP/1.1",
	}
	if sets != 2 || strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %d changesets with\n%s\nwant 2 with\n%s", sets, strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// batchAnswer is F&O's answer to a batch of two changesets: the first
// succeeded (two operations), the second failed on its operation 4.
const batchAnswer = "--batchresponse_1\r\n" +
	"Content-Type: multipart/mixed; boundary=changesetresponse_a\r\n\r\n" +
	"--changesetresponse_a\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n" +
	"HTTP/1.1 201 Created\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n{\"ProductionOrderNumber\":\"P1\"}\r\n" +
	"--changesetresponse_a\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n" +
	"HTTP/1.1 204 No Content\r\n\r\n\r\n" +
	"--changesetresponse_a--\r\n" +
	"--batchresponse_1\r\n" +
	"Content-Type: multipart/mixed; boundary=changesetresponse_b\r\n\r\n" +
	"--changesetresponse_b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 4\r\n\r\n" +
	"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n" + writeFailed + "\r\n" +
	"--changesetresponse_b--\r\n" +
	"--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n" +
	"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n\r\n\r\n" +
	"--batchresponse_1--\r\n"

func TestParseBatchResponse(t *testing.T) {
	parts, err := ParseBatchResponse("multipart/mixed; boundary=batchresponse_1", []byte(batchAnswer))
	if err != nil {
		t.Fatal(err)
	}
	type p struct {
		cs     int
		id     string
		status int
	}
	var got []p
	for _, x := range parts {
		got = append(got, p{x.Changeset, x.ContentID, x.Status})
	}
	want := []p{{1, "1", 201}, {1, "2", 204}, {2, "4", 500}, {0, "", 429}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("part %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if ErrorText("", parts[2].Body) == "" || !strings.Contains(string(parts[0].Body), "P1") || parts[3].Header.Get("Retry-After") != "3" {
		t.Errorf("bodies or headers lost: %+v", parts)
	}
	if err := Classify("POST", parts[2].Status, parts[2].Header, parts[2].Body, time.Now()); err == nil || !strings.Contains(err.Error(), "Write failed") {
		t.Errorf("failed part classified %v", err)
	}
}

func TestParseBatchResponseErrors(t *testing.T) {
	for _, tc := range []struct{ name, ct, body, want string }{
		{"html instead of multipart", "text/html", "<html><title>504 Gateway Time-out</title></html>", "504 Gateway Time-out"},
		{"no boundary", "multipart/mixed", "", "not multipart/mixed with a boundary"},
		{"no parts", "multipart/mixed; boundary=b", "--b--\r\n", "no parts"},
		{"bad status line", "multipart/mixed; boundary=b", "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 abc\r\n\r\n--b--\r\n", "invalid status line"},
		{"truncated", "multipart/mixed; boundary=b", "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 200 OK\r\n", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBatchResponse(tc.ct, []byte(tc.body))
			if !errors.Is(err, ErrMalformedBatch) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrMalformedBatch with %q", err, tc.want)
			}
		})
	}
}

func FuzzParseBatchResponse(f *testing.F) {
	f.Add("multipart/mixed; boundary=batchresponse_1", []byte(batchAnswer))
	f.Add("multipart/mixed; boundary=b", []byte("--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 200 OK\r\nX: y\r\n\r\nbody\r\n--b--\r\n"))
	f.Add("multipart/mixed; boundary=b", []byte("--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nHTTP/1.1 500 x\r\n\r\n--c--\r\n--b--"))
	f.Add("text/html", []byte("<html>"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		parts, err := ParseBatchResponse(ct, body)
		if err != nil {
			if !errors.Is(err, ErrMalformedBatch) {
				t.Fatalf("error %v does not wrap ErrMalformedBatch", err)
			}
			return
		}
		if len(parts) == 0 {
			t.Fatal("no parts and no error")
		}
		for _, p := range parts {
			if p.Status < 100 || p.Status > 999 {
				t.Fatalf("part %+v", p)
			}
			_ = Classify("POST", p.Status, p.Header, p.Body, time.Now())
		}
	})
}
