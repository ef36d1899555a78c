package foemu_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/odata"
)

// batchOp is one operation of a test batch.
type batchOp struct {
	id, method, url, body string
}

// batchBody builds a $batch body: each element of parts is either a
// changeset ([]batchOp with more than zero ops, changeset=true) or a single
// operation.
type batchPart struct {
	changeset bool
	ops       []batchOp
}

func batchBody(parts ...batchPart) (string, string) {
	var b strings.Builder
	const boundary = "batch_11111111-2222-3333-4444-555555555555"
	writeOp := func(op batchOp) {
		b.WriteString("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n")
		if op.id != "" {
			b.WriteString("Content-ID: " + op.id + "\r\n")
		}
		b.WriteString("\r\n" + op.method + " " + op.url + " HTTP/1.1\r\nOData-Version: 4.0\r\nOData-MaxVersion: 4.0\r\n")
		if op.body != "" {
			b.WriteString("Content-Type: application/json;odata.metadata=minimal\r\n\r\n" + op.body + "\r\n")
		} else {
			b.WriteString("\r\n")
		}
	}
	for i, p := range parts {
		b.WriteString("--" + boundary + "\r\n")
		if !p.changeset {
			writeOp(p.ops[0])
			continue
		}
		cs := fmt.Sprintf("changeset_%d", i)
		b.WriteString("Content-Type: multipart/mixed; boundary=" + cs + "\r\n\r\n")
		for _, op := range p.ops {
			b.WriteString("--" + cs + "\r\n")
			writeOp(op)
		}
		b.WriteString("--" + cs + "--\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return "multipart/mixed; boundary=" + boundary, b.String()
}

func (a *api) batch(parts ...batchPart) (reply, []odata.ResponseItem) {
	a.t.Helper()
	ct, body := batchBody(parts...)
	r := a.do(http.MethodPost, "/data/$batch", body, "Content-Type", ct)
	if r.status != http.StatusOK {
		return r, nil
	}
	items, err := odata.ParseBatchResponse(r.header.Get("Content-Type"), bytes.NewReader(r.body))
	if err != nil {
		a.t.Fatalf("parse batch response: %v\n%s", err, r.body)
	}
	return r, items
}

func statuses(items []odata.ResponseItem) []string {
	var out []string
	for _, it := range items {
		out = append(out, fmt.Sprintf("%d:%s:%d", it.Changeset, it.ContentID, it.Status))
	}
	return out
}

func TestBatchChangesetCommits(t *testing.T) {
	a := newAPI(t)
	_, items := a.batch(
		batchPart{changeset: true, ops: []batchOp{
			{"1", "POST", a.em.BaseURL() + "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"B1","ItemNumber":"FG-1000"}`},
			{"2", "PATCH", "$1", `{"ScheduledQuantity":9}`},
			{"3", "POST", "ProductionOrderHeaders", `{"ProductionOrderNumber":"B2","ItemNumber":"FG-1000"}`},
		}},
		batchPart{ops: []batchOp{{"", "GET", "ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='B1')", ""}}},
	)
	if got, want := strings.Join(statuses(items), " "), "1:1:201 1:2:204 1:3:201 0::200"; got != want {
		t.Fatalf("part statuses = %s, want %s", got, want)
	}
	if !strings.Contains(string(items[3].Body), `"ScheduledQuantity":9`) {
		t.Errorf("GET after the changeset: %s", items[3].Body)
	}
}

func TestBatchChangesetIsAtomic(t *testing.T) {
	a := newAPI(t)
	r, items := a.batch(
		batchPart{changeset: true, ops: []batchOp{
			{"1", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"A1","ItemNumber":"FG-1000"}`},
			{"2", "PATCH", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P000101')", `{"ScheduledQuantity":1}`},
			{"3", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"P000102","ItemNumber":"FG-1000"}`},
		}},
		batchPart{ops: []batchOp{{"9", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"A2","ItemNumber":"FG-1000"}`}}},
	)
	if r.status != http.StatusOK {
		t.Fatalf("outer status = %d, want 200", r.status)
	}
	if got, want := strings.Join(statuses(items), " "), "1:3:500 0:9:201"; got != want {
		t.Fatalf("part statuses = %s, want %s (a failed changeset answers only the failing operation)", got, want)
	}
	inner := reply{status: items[0].Status, body: items[0].Body}
	if msg := inner.innerMessage(t); !strings.Contains(msg, "The record already exists.") {
		t.Errorf("failing part message = %q", msg)
	}
	recs, _ := a.em.Records("ProductionOrderHeaders")
	for _, rec := range recs {
		if rec["ProductionOrderNumber"] == "A1" {
			t.Error("A1 was created although its changeset failed")
		}
		if rec["ProductionOrderNumber"] == "P000101" && rec["ScheduledQuantity"] != float64(100) {
			t.Errorf("P000101 quantity = %v, want the PATCH rolled back to 100", rec["ScheduledQuantity"])
		}
	}
	found := false
	for _, rec := range recs {
		found = found || rec["ProductionOrderNumber"] == "A2"
	}
	if !found {
		t.Error("A2, outside the changeset, was not created")
	}
}

func TestBatchErrors(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.OData.MaxBatchOperations = 2 })
	ops := batchPart{changeset: true, ops: []batchOp{
		{"1", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"X1"}`},
		{"2", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"X2"}`},
		{"3", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"X3"}`},
	}}
	r, _ := a.batch(ops)
	if r.status != 400 || !strings.Contains(r.innerMessage(t), "Only batch messages with a maximum number of '2'") {
		t.Errorf("too many operations: %d %s", r.status, r.body)
	}
	r = a.do(http.MethodPost, "/data/$batch", "not multipart", "Content-Type", "text/plain")
	if r.status != 400 || !strings.Contains(r.innerMessage(t), "multipart/mixed") {
		t.Errorf("not multipart: %d %s", r.status, r.body)
	}
	_, items := a.batch(batchPart{changeset: true, ops: []batchOp{{"1", "PATCH", "$7", `{}`}}})
	if len(items) != 1 || items[0].Status != 400 {
		t.Errorf("unknown Content-ID reference: %v", statuses(items))
	}
}

func TestBatchThrottledParts(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) {
		c.Throttling.RequestsPerSecond = 0.001
		c.Throttling.Burst = 3
	})
	// The outer request takes one unit, the first changeset two; the
	// second changeset no longer fits and answers 429 as a whole.
	_, items := a.batch(
		batchPart{changeset: true, ops: []batchOp{
			{"1", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"T1"}`},
			{"2", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"T2"}`},
		}},
		batchPart{changeset: true, ops: []batchOp{{"3", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"T3"}`}}},
	)
	if got, want := strings.Join(statuses(items), " "), "1:1:201 1:2:201 2:3:429"; got != want {
		t.Fatalf("part statuses = %s, want %s", got, want)
	}
	if items[2].Header.Get("Retry-After") == "" {
		t.Error("throttled part has no Retry-After")
	}
	cs := a.em.Stats().Clients["plantgate-demo"]
	if cs.BatchOperations != 3 || cs.ThrottledOperations != 1 {
		t.Errorf("client stats = %+v", cs)
	}
}
