package foemu_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/plantgate/plantgate/internal/foemu"
)

func orderNumbers(t *testing.T, r reply) []string {
	t.Helper()
	var out []string
	for _, v := range values(t, r) {
		out = append(out, v["ProductionOrderNumber"].(string))
	}
	return out
}

func TestODataQuery(t *testing.T) {
	a := newAPI(t)
	q := func(s string) string { return "/data/ProductionOrderHeaders?" + s }
	tests := []struct {
		name, path string
		want       []string
	}{
		{"all of the default company", "/data/ProductionOrderHeaders", []string{"P000101", "P000102", "P000103", "P000104"}},
		{"cross-company in key order", q("cross-company=true"), []string{"P000201", "P000101", "P000102", "P000103", "P000104"}},
		{"cross-company one company", q("cross-company=true&$filter=" + url.QueryEscape("dataAreaId eq 'demf'")), []string{"P000201"}},
		{"eq", q("$filter=" + url.QueryEscape("ProductionOrderNumber eq 'P000102'")), []string{"P000102"}},
		{"eq ignores case", q("$filter=" + url.QueryEscape("ProductionOrderNumber eq 'p000102'")), []string{"P000102"}},
		{"ne and enum", q("$filter=" + url.QueryEscape("ProductionOrderStatus ne Microsoft.Dynamics.DataEntities.ProdStatus'Released'")), []string{"P000103", "P000104"}},
		{"or", q("$filter=" + url.QueryEscape("ProductionOrderNumber eq 'P000101' or ProductionOrderNumber eq 'P000104'")), []string{"P000101", "P000104"}},
		{"number gt and", q("$filter=" + url.QueryEscape("ScheduledQuantity gt 30 and ScheduledQuantity le 50")), []string{"P000102", "P000104"}},
		{"date ge", q("$filter=" + url.QueryEscape("ScheduledStartDate ge 2025-03-04")), []string{"P000102", "P000104"}},
		{"date lt datetime", q("$filter=" + url.QueryEscape("ScheduledStartDate lt 2025-03-03T00:00:00Z")), []string{"P000103"}},
		{"wildcard", q("$filter=" + url.QueryEscape("ProductionOrderNumber eq '*0103'")), []string{"P000103"}},
		{"top skip", q("$top=2&$skip=1"), []string{"P000102", "P000103"}},
		{"orderby desc", q("$orderby=" + url.QueryEscape("ScheduledQuantity desc") + "&$top=2"), []string{"P000101", "P000102"}},
		{"quote escape", q("$filter=" + url.QueryEscape("ProductionOrderName eq 'O''Brien'")), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := orderNumbers(t, a.do(http.MethodGet, tt.path, ""))
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("orders: got -, want +:\n%s", diff)
			}
		})
	}
}

func TestODataSelectCountAndContext(t *testing.T) {
	a := newAPI(t)
	r := a.do(http.MethodGet, "/data/ProductionOrderHeaders?$select=ProductionOrderNumber,ItemNumber&$count=true&$top=1", "")
	m := r.json(t)
	if got, want := m["@odata.count"], float64(4); got != want {
		t.Errorf("@odata.count = %v, want %v", got, want)
	}
	if got, want := m["@odata.context"], a.em.BaseURL()+"/data/$metadata#ProductionOrderHeaders(ProductionOrderNumber,ItemNumber)"; got != want {
		t.Errorf("@odata.context = %v, want %v", got, want)
	}
	row := values(t, r)[0]
	keys := []string{}
	for k := range row {
		keys = append(keys, k)
	}
	if len(keys) != 3 || row["@odata.etag"] == nil || row["ItemNumber"] != "FG-1000" {
		t.Errorf("selected row = %v, want @odata.etag, ProductionOrderNumber and ItemNumber", row)
	}
	if r := a.do(http.MethodGet, "/data/ProductionOrderHeaders/$count", ""); string(r.body) != "4" {
		t.Errorf("$count segment = %q, want 4", r.body)
	}
}

func TestODataPaging(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.OData.PageSize = 2 })
	var got []string
	next := "/data/ProductionOrderHeaders?cross-company=true"
	pages := 0
	for next != "" {
		r := a.do(http.MethodGet, next, "")
		got = append(got, orderNumbers(t, r)...)
		link, _ := r.json(t)["@odata.nextLink"].(string)
		next = strings.TrimPrefix(link, a.em.BaseURL())
		pages++
		if pages > 5 {
			t.Fatal("too many pages")
		}
	}
	if diff := cmp.Diff(got, []string{"P000201", "P000101", "P000102", "P000103", "P000104"}); diff != "" {
		t.Errorf("paged orders: got -, want +:\n%s", diff)
	}
	if pages != 3 {
		t.Errorf("pages = %d, want 3", pages)
	}
	// Prefer: odata.maxpagesize lowers the page size further.
	r := a.do(http.MethodGet, "/data/ProductionOrderHeaders", "", "Prefer", "odata.maxpagesize=1")
	if n := len(values(t, r)); n != 1 || r.json(t)["@odata.nextLink"] == nil {
		t.Errorf("maxpagesize=1 gave %d rows and nextLink %v", n, r.json(t)["@odata.nextLink"])
	}
}

func TestODataQueryErrors(t *testing.T) {
	a := newAPI(t)
	tests := []struct {
		name, path string
		status     int
		want       string
	}{
		{"set names are case sensitive", "/data/productionorderheaders", 404, "Resource not found for the segment 'productionorderheaders'."},
		{"unknown property", "/data/ProductionOrderHeaders?$filter=" + url.QueryEscape("Nope eq 1"), 400, "Could not find a property named 'Nope' on type 'Microsoft.Dynamics.DataEntities.ProductionOrderHeader'."},
		{"incompatible types", "/data/ProductionOrderHeaders?$filter=" + url.QueryEscape("ScheduledQuantity eq 'x'"), 400, "incompatible types"},
		{"in operator", "/data/ProductionOrderHeaders?$filter=" + url.QueryEscape("ItemNumber in ('a')"), 400, "not supported"},
		{"bad top", "/data/ProductionOrderHeaders?$top=-1", 400, "$top query option requires a non-negative integer"},
		{"bad select", "/data/ProductionOrderHeaders?$select=Nope", 400, "Could not find a property named 'Nope'"},
		{"expand", "/data/ProductionOrderHeaders?$expand=Lines", 400, "$expand"},
		{"key count", "/data/ProductionOrderHeaders('P000101')", 400, "The number of keys specified in the URI does not match number of key properties"},
		{"other company without cross-company", "/data/ProductionOrderHeaders(dataAreaId='demf',ProductionOrderNumber='P000201')", 404, "cross-company"},
		{"unknown key", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='NOPE')", 404, "No resource was found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(http.MethodGet, tt.path, "")
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.status, r.body)
			}
			if got := r.innerMessage(t); !strings.Contains(got, tt.want) {
				t.Errorf("innererror.message = %q, want it to contain %q", got, tt.want)
			}
		})
	}
	r := a.do(http.MethodGet, "/data/ProductionOrderHeaders(dataAreaId='demf',ProductionOrderNumber='P000201')?cross-company=true", "")
	if r.status != 200 {
		t.Errorf("keyed read with cross-company=true: status %d: %s", r.status, r.body)
	}
}

func TestODataCreateReadUpdateDelete(t *testing.T) {
	a := newAPI(t)
	body := `{"ProductionOrderNumber":"P000777","ItemNumber":"FG-1000","ScheduledQuantity":12.5,"ProductionOrderStatus":"Released","ScheduledStartDate":"2025-04-01"}`
	r := a.do(http.MethodPost, "/data/ProductionOrderHeaders", body)
	if r.status != http.StatusCreated {
		t.Fatalf("POST status = %d: %s", r.status, r.body)
	}
	loc := a.em.BaseURL() + "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P000777')"
	if got := r.header.Get("Location"); got != loc {
		t.Errorf("Location = %q, want %q", got, loc)
	}
	created := r.json(t)
	if created["dataAreaId"] != "usmf" || created["ScheduledStartDate"] != "2025-04-01T12:00:00Z" || created["ScheduledQuantity"] != 12.5 {
		t.Errorf("created entity = %v", created)
	}
	key := "/data/ProductionOrderHeaders(dataAreaId='USMF',ProductionOrderNumber='P000777')"
	if r := a.do(http.MethodPatch, key, `{"ScheduledQuantity":20,"ProductionOrderName":"rush"}`); r.status != http.StatusNoContent {
		t.Fatalf("PATCH status = %d: %s", r.status, r.body)
	}
	got := a.do(http.MethodGet, key, "").json(t)
	if got["ScheduledQuantity"] != float64(20) || got["ProductionOrderName"] != "rush" || got["ItemNumber"] != "FG-1000" {
		t.Errorf("after PATCH: %v", got)
	}
	recs, err := a.em.Records("ProductionOrderHeaders")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(recs); n != 6 {
		t.Errorf("Records = %d, want 6", n)
	}
	if r := a.do(http.MethodDelete, key, ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE status = %d: %s", r.status, r.body)
	}
	if r := a.do(http.MethodGet, key, ""); r.status != http.StatusNotFound {
		t.Errorf("GET after DELETE status = %d", r.status)
	}
}

func TestODataWriteErrors(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path, body string
		status     int
		want       string
	}{
		{"duplicate key", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"P000101","ItemNumber":"FG-1000"}`, 400,
			"Write failed for table row of type 'ProdProductionOrderHeaderEntity'. Infolog: Error: Cannot create a record in Production order headers (ProdProductionOrderHeaderEntity). dataAreaId: usmf, ProductionOrderNumber: P000101. The record already exists."},
		{"mandatory field", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"P9"}`, 400,
			"Write failed for table row of type 'ProdProductionOrderHeaderEntity'. Infolog: Warning: Field 'ItemNumber' must be filled in.; Warning: validateField failed on field 'ProdProductionOrderHeaderEntity.ItemNumber'."},
		{"too long", "POST", "/data/ReleasedProductsV2", `{"ItemNumber":"ABCDEFGHIJKLMNOPQRSTUVWXYZ"}`, 400,
			"Write failed for table row of type 'EcoResReleasedProductV2Entity'. Infolog: Warning: The value 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' of field 'ItemNumber' is too long; the maximum length is 20.; Warning: validateField failed on field 'EcoResReleasedProductV2Entity.ItemNumber'."},
		{"unknown company", "POST", "/data/ReleasedProductsV2", `{"dataAreaId":"xxxx","ItemNumber":"A"}`, 400, "Error: Company 'xxxx' does not exist."},
		{"malformed JSON", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":`, 400, "Invalid JSON."},
		{"unknown property", "POST", "/data/ProductionOrderHeaders", `{"Nope":1}`, 400, "The property 'Nope' does not exist on type 'Microsoft.Dynamics.DataEntities.ProductionOrderHeader'."},
		{"wrong type", "POST", "/data/ProductionOrderHeaders", `{"ScheduledQuantity":"ten"}`, 400, "Cannot convert the literal 'ten' to the expected type 'Edm.Decimal'."},
		{"bad enum", "POST", "/data/ProductionOrderHeaders", `{"ProductionOrderStatus":"Running"}`, 400, "Requested value 'Running' was not found."},
		{"nested object", "POST", "/data/ProductionOrderHeaders", `{"ItemNumber":{"x":1}}`, 400, "An unexpected 'StartObject' node was found"},
		{"key change", "PATCH", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P000101')", `{"ProductionOrderNumber":"P2"}`, 400, "The key field 'ProductionOrderNumber' cannot be changed."},
		{"patch empties mandatory", "PATCH", "/data/ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P000101')", `{"ItemNumber":""}`, 400, "Field 'ItemNumber' must be filled in."},
	}
	a := newAPI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.do(tt.method, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.status, r.body)
			}
			if got := r.innerMessage(t); !strings.Contains(got, tt.want) {
				t.Errorf("innererror.message:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	t.Run("write failure type and stack", func(t *testing.T) {
		r := a.do("POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"P000101","ItemNumber":"FG-1000"}`)
		inner := r.json(t)["error"].(map[string]any)["innererror"].(map[string]any)
		if inner["type"] != "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException" {
			t.Errorf("type = %v", inner["type"])
		}
		if !strings.Contains(inner["stacktrace"].(string), "CreateEntity_Save") {
			t.Errorf("stacktrace = %v", inner["stacktrace"])
		}
	})
}

func TestODataWriteErrorStatusSwitch(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.OData.WriteErrorStatus = 500 })
	r := a.do("POST", "/data/ProductionOrderHeaders", `{"ProductionOrderNumber":"P000101","ItemNumber":"FG-1000"}`)
	if r.status != 500 {
		t.Errorf("status = %d, want 500", r.status)
	}
	// Malformed JSON stays a 400: it never reaches the write.
	if r := a.do("POST", "/data/ProductionOrderHeaders", `{`); r.status != 400 {
		t.Errorf("malformed JSON status = %d, want 400", r.status)
	}
}

func TestODataJournalNumbering(t *testing.T) {
	a := newAPI(t)
	post := func(body string) map[string]any {
		r := a.do("POST", "/data/ProductionPickingListJournalEntries", body)
		if r.status != 201 {
			t.Fatalf("POST status %d: %s", r.status, r.body)
		}
		return r.json(t)
	}
	first := post(`{"ProductionOrderNumber":"P000101","ItemNumber":"RM-2000","ConsumptionBomQuantity":1}`)
	if first["JournalNumber"] != "PPL-000001" || first["JournalLineNumber"] != float64(1) {
		t.Errorf("first line: journal %v line %v, want PPL-000001 and 1", first["JournalNumber"], first["JournalLineNumber"])
	}
	second := post(`{"JournalNumber":"PPL-000001","ProductionOrderNumber":"P000101","ItemNumber":"RM-2001"}`)
	if second["JournalLineNumber"] != float64(2) {
		t.Errorf("second line number = %v, want 2", second["JournalLineNumber"])
	}
	if second["IsPosted"] != "No" || second["ConsumptionDate"] != "1900-01-01T12:00:00Z" {
		t.Errorf("defaults: IsPosted %v ConsumptionDate %v", second["IsPosted"], second["ConsumptionDate"])
	}
}

func TestODataServiceDocumentAndMetadata(t *testing.T) {
	a := newAPI(t)
	r := a.do("GET", "/data/", "")
	if r.status != 200 || !strings.Contains(string(r.body), `"name":"ProductionPickingListJournalEntries"`) {
		t.Errorf("service document: %d %s", r.status, r.body)
	}
	r = a.do("GET", "/data/$metadata", "")
	if r.status != 200 || !strings.Contains(string(r.body), `<EntitySet Name="ReportAsFinishedProductionJournalEntries"`) {
		t.Errorf("$metadata: %d", r.status)
	}
}
