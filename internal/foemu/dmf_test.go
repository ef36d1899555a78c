package foemu_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/google/go-cmp/cmp"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

const pickingLabel = "Production order picking list journal lines"

var pickingColumns = []string{"PRODUCTIONORDERNUMBER", "ITEMNUMBER", "CONSUMPTIONBOMQUANTITY", "CONSUMPTIONDATE"}

// pickingPackage builds a CSV-Unicode package for the picking list journal.
func pickingPackage(t testing.TB, rows [][]string, edit func(*dmfpkg.Manifest, map[string][]byte)) []byte {
	t.Helper()
	m := dmfpkg.Manifest{DefinitionGroupName: "MES-PickingList", Description: "MES-PickingList", Entities: []dmfpkg.Entity{{
		EntityName: pickingLabel, SourceFormat: dmfpkg.FormatCSVUnicode, InputFilePath: "lines.csv",
		HasEntityMapList: true, EntityMapList: dmfpkg.MapColumns(pickingColumns...), RunBusinessLogic: true, RunBusinessValid: true,
	}}}
	files := map[string][]byte{"lines.csv": dmfpkg.WriteCSVUnicode(pickingColumns, rows)}
	if edit != nil {
		edit(&m, files)
	}
	var buf bytes.Buffer
	if err := dmfpkg.Build(&buf, dmfpkg.Header{Description: m.DefinitionGroupName}, m, files); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeURL calls GetAzureWriteUrl and decodes its double-encoded value.
func (a *api) writeURL(name string) (blobID, blobURL string) {
	a.t.Helper()
	v, r := a.action("GetAzureWriteUrl", map[string]any{"uniqueFileName": name})
	s, ok := v.(string)
	if !ok {
		a.t.Fatalf("GetAzureWriteUrl: status %d, value %v: %s", r.status, v, r.body)
	}
	var inner struct{ BlobId, BlobUrl string }
	if err := json.Unmarshal([]byte(s), &inner); err != nil {
		a.t.Fatalf("value %q is not a JSON document in a string: %v", s, err)
	}
	return inner.BlobId, inner.BlobUrl
}

// blobClient builds an azblob client from a SAS URL only, as a gateway does.
func blobClient(t testing.TB, sasURL string, hc *http.Client) *blockblob.Client {
	t.Helper()
	c, err := blockblob.NewClientWithNoCredential(sasURL, &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: hc, Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 10 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// submit uploads a package and calls ImportFromPackage.
func (a *api) submit(pkg []byte, executionID string, stream bool) (string, reply) {
	a.t.Helper()
	_, u := a.writeURL("pkg-" + strings.ToLower(strings.ReplaceAll(a.t.Name(), "/", "-")) + ".zip")
	bc := blobClient(a.t, u, a.hc)
	ctx := context.Background()
	var err error
	if stream {
		_, err = bc.UploadStream(ctx, bytes.NewReader(pkg), &blockblob.UploadStreamOptions{BlockSize: 512, Concurrency: 3})
	} else {
		_, err = bc.UploadBuffer(ctx, pkg, nil)
	}
	if err != nil {
		a.t.Fatalf("upload: %v", err)
	}
	v, r := a.action("ImportFromPackage", map[string]any{
		"packageUrl": u, "definitionGroupId": "MES-PickingList", "executionId": executionID,
		"execute": true, "overwrite": true, "legalEntityId": "USMF",
	})
	id, _ := v.(string)
	return id, r
}

// waitStatus polls GetExecutionSummaryStatus until a final status and
// returns the distinct statuses seen, in order.
func (a *api) waitStatus(id string) []string {
	a.t.Helper()
	var seen []string
	foemutest.WaitFor(a.t, 10*time.Second, "execution "+id+" to finish", func() bool {
		v, r := a.action("GetExecutionSummaryStatus", map[string]any{"executionId": id})
		s, _ := v.(string)
		if r.status == 400 {
			s = "400"
		}
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
		switch s {
		case foemu.StatusSucceeded, foemu.StatusPartiallySucceeded, foemu.StatusFailed, foemu.StatusCanceled, foemu.StatusUnknown:
			return true
		}
		return false
	})
	return seen
}

func TestDMFWriteURL(t *testing.T) {
	a := newAPI(t)
	id, u := a.writeURL("batch 1.zip")
	if len(id) != 38 || id[0] != '{' || id[37] != '}' || strings.ToUpper(id) != id {
		t.Errorf("BlobId = %q, want an upper-case GUID in braces", id)
	}
	prefix := a.em.BaseURL() + "/_blob/dmf/batch%201.zip?"
	if !strings.HasPrefix(u, prefix) || !strings.Contains(u, "sig=") || strings.Contains(u, "spr=") {
		t.Errorf("BlobUrl = %q, want %s...sig=... without spr", u, prefix)
	}
	r := a.do(http.MethodPost, "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetAzureWriteUrl", `{"uniqueFileName":"x"}`)
	if ctx := r.json(t)["@odata.context"]; ctx != a.em.BaseURL()+"/data/$metadata#Edm.String" {
		t.Errorf("@odata.context = %v", ctx)
	}
}

func TestDMFImport(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := "UploadBuffer"
		if stream {
			name = "UploadStream"
		}
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, func(c *foemu.Config) {
				c.DMF.NotFoundWindow = foemu.Duration(60 * time.Millisecond)
				c.DMF.QueuedTime = foemu.Duration(160 * time.Millisecond)
				c.DMF.ExecutionTime = foemu.Duration(80 * time.Millisecond)
			})
			var rows [][]string
			for i := range 40 {
				rows = append(rows, []string{"P000101", "RM-2000", "1.5", "2025-03-0" + string(rune('1'+i%9))})
			}
			id, r := a.submit(pickingPackage(t, rows, nil), "", stream)
			if id == "" {
				t.Fatalf("ImportFromPackage: %d %s", r.status, r.body)
			}
			if !strings.HasPrefix(id, "MES-PickingList-") {
				t.Errorf("generated executionId = %q", id)
			}
			if diff := cmp.Diff(a.waitStatus(id), []string{"400", "NotRun", "Executing", "Succeeded"}); diff != "" {
				t.Errorf("statuses: got -, want +:\n%s", diff)
			}
			recs, _ := a.em.Records("ProductionPickingListJournalEntries")
			if len(recs) != 40 {
				t.Fatalf("records = %d, want 40", len(recs))
			}
			if r := recs[39]; r["JournalNumber"] != "PPL-000001" || r["JournalLineNumber"] != float64(40) || r["ConsumptionBomQuantity"] != 1.5 || r["dataAreaId"] != "usmf" {
				t.Errorf("last record = %v", r)
			}
			ex, _ := a.em.Execution(id)
			if ee := ex.Entities[0]; ee.EntitySet != "ProductionPickingListJournalEntries" || ee.StagingRecords != 40 || ee.TargetRecords != 40 || ee.Status != "Finished" {
				t.Errorf("entity execution = %+v", ee)
			}
			if v, _ := a.action("GetExecutionErrors", map[string]any{"executionId": id}); v != "[]" {
				t.Errorf("GetExecutionErrors = %v, want \"[]\"", v)
			}
		})
	}
}

func TestDMFPartialSuccessAndErrorFiles(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.DMF.ErrorFileDelay = foemu.Duration(100 * time.Millisecond) })
	rows := [][]string{
		{"P000101", "RM-2000", "1", "2025-03-01"},
		{"P000101", "RM-2001", "lots", "2025-03-01"},    // staging: not a number
		{"P000101", "", "1", "2025-03-01"},              // target: ItemNumber is mandatory
		{"P000101", "RM-2002", "2", "2025-03-01"},       // fine
		{"P000101", "RM-2002", "2", "the third of May"}, // staging: not a date
	}
	id, r := a.submit(pickingPackage(t, rows, nil), "exec-partial-1", false)
	if id != "exec-partial-1" {
		t.Fatalf("ImportFromPackage: %d %s", r.status, r.body)
	}
	if got := a.waitStatus(id); got[len(got)-1] != "PartiallySucceeded" {
		t.Fatalf("statuses = %v", got)
	}
	ex, _ := a.em.Execution(id)
	ee := ex.Entities[0]
	if ee.StagingRecords != 3 || ee.StagingErrorCount != 2 || ee.TargetRecords != 2 || ee.TargetErrorCount != 1 {
		t.Errorf("counts = staging %d/%d target %d/%d, want 3/2 and 2/1", ee.StagingRecords, ee.StagingErrorCount, ee.TargetRecords, ee.TargetErrorCount)
	}
	v, _ := a.action("GetExecutionErrors", map[string]any{"executionId": id})
	var errs []string
	if err := json.Unmarshal([]byte(v.(string)), &errs); err != nil {
		t.Fatalf("GetExecutionErrors value %v: %v", v, err)
	}
	if len(errs) != 3 || !strings.Contains(errs[0], "row 3 (staging)") || !strings.Contains(errs[1], "row 4 (target): Write failed for table row of type 'ProdProductionPickingListJournalEntryEntity'. Infolog: Warning: Field 'ItemNumber' must be filled in.") {
		t.Errorf("errors = %q", errs)
	}
	params := map[string]any{"executionId": id, "entityName": pickingLabel}
	if v, _ := a.action("GetImportTargetErrorKeysFileUrl", params); v != "" {
		t.Errorf("keys file URL before Generate = %v, want empty", v)
	}
	if v, r := a.action("GenerateImportTargetErrorKeysFile", params); v != true {
		t.Fatalf("GenerateImportTargetErrorKeysFile = %v: %s", v, r.body)
	}
	if v, _ := a.action("GetImportTargetErrorKeysFileUrl", params); v != "" {
		t.Errorf("keys file URL right after Generate = %v, want empty while it is generated", v)
	}
	var keysURL string
	foemutest.WaitFor(t, 3*time.Second, "the target error keys file", func() bool {
		v, _ := a.action("GetImportTargetErrorKeysFileUrl", params)
		keysURL, _ = v.(string)
		return keysURL != ""
	})
	keys := download(t, a, keysURL)
	if !strings.HasPrefix(keys, "DATAAREAID,JOURNALNUMBER,JOURNALLINENUMBER,ERROR\r\nUSMF,") || !strings.Contains(keys, "must be filled in") {
		t.Errorf("keys file:\n%s", keys)
	}
	v, _ = a.action("GetImportStagingErrorFileUrl", params)
	staging := download(t, a, v.(string))
	if !strings.HasPrefix(staging, "PRODUCTIONORDERNUMBER,ITEMNUMBER,CONSUMPTIONBOMQUANTITY,CONSUMPTIONDATE,ERROR\r\nP000101,RM-2001,lots,") {
		t.Errorf("staging error file:\n%s", staging)
	}
	// A read-only SAS must not allow writes.
	_, err := blobClient(t, v.(string), a.hc).UploadBuffer(context.Background(), []byte("x"), nil)
	if !bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch) {
		t.Errorf("write with a read-only SAS: %v", err)
	}
}

func download(t *testing.T, a *api, u string) string {
	t.Helper()
	resp, err := blobClient(t, u, a.hc).DownloadStream(context.Background(), nil)
	if err != nil {
		t.Fatalf("download %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDMFFailedExecutions(t *testing.T) {
	good := [][]string{{"P000101", "RM-2000", "1", "2025-03-01"}}
	utf8CSV := []byte(strings.Join(pickingColumns, ",") + "\r\nP000101,RM-2000,1,2025-03-01\r\n")
	lfCSV := dmfpkg.EncodeUTF16LE(strings.Join(pickingColumns, ",") + "\nP000101,RM-2000,1,2025-03-01\n")
	tests := []struct {
		name string
		edit func(*dmfpkg.Manifest, map[string][]byte)
		want string
	}{
		{"UTF-8 CSV", func(_ *dmfpkg.Manifest, f map[string][]byte) { f["lines.csv"] = utf8CSV }, "Selected file is not Unicode."},
		{"LF line ends", func(_ *dmfpkg.Manifest, f map[string][]byte) { f["lines.csv"] = lfCSV }, "The mapping is incorrect for entity " + pickingLabel + " and field {"},
		{"data file missing", func(m *dmfpkg.Manifest, _ map[string][]byte) { m.Entities[0].InputFilePath = "other.csv" }, "The file 'other.csv' named by InputFilePath"},
		{"no EntityMapList", func(m *dmfpkg.Manifest, _ map[string][]byte) {
			m.Entities[0].HasEntityMapList, m.Entities[0].EntityMapList = false, nil
		}, "EntityMapList is missing"},
		{"unsupported source format", func(m *dmfpkg.Manifest, _ map[string][]byte) { m.Entities[0].SourceFormat = "XML-Element" }, "The source data format 'XML-Element' is not supported by the fo-emulator"},
		{"mapped column missing", func(m *dmfpkg.Manifest, _ map[string][]byte) { m.Entities[0].EntityMapList[0].XMLField = "ORDER" }, "The column ORDER of the mapping"},
		{"unknown staging field", func(m *dmfpkg.Manifest, _ map[string][]byte) { m.Entities[0].EntityMapList[0].EntityField = "NOPE" }, "The field NOPE in the mapping"},
	}
	a := newAPI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			id, r := a.submit(pickingPackage(t, good, tt.edit), "", false)
			if id == "" {
				t.Fatalf("ImportFromPackage: %d %s", r.status, r.body)
			}
			if got := a.waitStatus(id); got[len(got)-1] != "Failed" {
				t.Fatalf("statuses = %v, want Failed", got)
			}
			v, _ := a.action("GetExecutionErrors", map[string]any{"executionId": id})
			if s, _ := v.(string); !strings.Contains(s, tt.want) {
				t.Errorf("errors = %s, want %q", s, tt.want)
			}
		})
	}
}

func TestDMFSucceedEmptyWithoutEntityMap(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.DMF.MissingEntityMap = "succeed_empty" })
	pkg := pickingPackage(t, [][]string{{"P000101", "RM-2000", "1", "2025-03-01"}}, func(m *dmfpkg.Manifest, _ map[string][]byte) {
		m.Entities[0].HasEntityMapList, m.Entities[0].EntityMapList = false, nil
	})
	id, _ := a.submit(pkg, "", false)
	if got := a.waitStatus(id); got[len(got)-1] != "Succeeded" {
		t.Errorf("statuses = %v, want Succeeded (with 0 records)", got)
	}
	if recs, _ := a.em.Records("ProductionPickingListJournalEntries"); len(recs) != 0 {
		t.Errorf("records = %d, want 0", len(recs))
	}
}

func TestDMFImportRejects(t *testing.T) {
	a := newAPI(t)
	wrongNS := func() []byte {
		m := dmfpkg.Manifest{Entities: []dmfpkg.Entity{{EntityName: pickingLabel}}}
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for name, text := range map[string]string{
			dmfpkg.ManifestFile: strings.Replace(m.XML(), dmfpkg.Namespace, "http://example.com/wrong", 1),
			dmfpkg.HeaderFile:   dmfpkg.Header{}.XML(),
		} {
			w, _ := zw.Create(name)
			_, _ = w.Write(dmfpkg.EncodeUTF16LE(text))
		}
		_ = zw.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name string
		pkg  []byte
		want string
	}{
		{"unknown entity label", pickingPackage(t, nil, func(m *dmfpkg.Manifest, _ map[string][]byte) { m.Entities[0].EntityName = "Picking list lines" }),
			"Entity Picking list lines does not exist in the target environment."},
		{"not a zip", []byte("hello"), "The data package is not valid: the package is not a valid zip file"},
		{"no manifest", func() []byte {
			var buf bytes.Buffer
			_ = dmfpkg.Build(&buf, dmfpkg.Header{}, dmfpkg.Manifest{}, nil)
			return bytes.ReplaceAll(buf.Bytes(), []byte("Manifest.xml"), []byte("Manifest.txt"))
		}(), "file not found in package: Manifest.xml"},
		{"wrong namespace", wrongNS(), "Expecting element 'DataManagementPackageManifest' from namespace 'http://schemas.microsoft.com/dynamics/2015/01/DataManagement'"},
		{"wrong manifest type", func() []byte {
			var buf bytes.Buffer
			m := dmfpkg.Manifest{Entities: []dmfpkg.Entity{{EntityName: pickingLabel}}}
			_ = dmfpkg.Build(&buf, dmfpkg.Header{ManifestType: "Something.Else"}, m, nil)
			return buf.Bytes()
		}(), "PackageHeader.xml has ManifestType 'Something.Else'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.t = t
			_, r := a.submit(tt.pkg, "", false)
			if r.status != 400 {
				t.Fatalf("status = %d, want 400: %s", r.status, r.body)
			}
			if msg := r.innerMessage(t); !strings.Contains(msg, tt.want) {
				t.Errorf("message = %q, want %q", msg, tt.want)
			}
		})
	}
	a.t = t
	for name, params := range map[string]map[string]any{
		"missing blob":      {"packageUrl": a.em.BaseURL() + "/_blob/dmf/none.zip", "definitionGroupId": "G"},
		"empty package URL": {"packageUrl": "", "definitionGroupId": "G"},
		"unknown parameter": {"packageUrl": "x", "definitionGroupId": "G", "company": "USMF"},
		"unknown company":   {"packageUrl": "x", "definitionGroupId": "G", "legalEntityId": "ZZZZ"},
	} {
		if _, r := a.action("ImportFromPackage", params); r.status != 400 {
			t.Errorf("%s: status %d: %s", name, r.status, r.body)
		}
	}
}

func TestDMFReferencePackage(t *testing.T) {
	data, err := os.ReadFile(referencePackagePath(t))
	if err != nil {
		t.Fatal(err)
	}
	a := newAPI(t)
	id, r := a.submit(data, "", false)
	if id == "" {
		t.Fatalf("ImportFromPackage: %d %s", r.status, r.body)
	}
	if got := a.waitStatus(id); got[len(got)-1] != "Succeeded" {
		v, _ := a.action("GetExecutionErrors", map[string]any{"executionId": id})
		t.Fatalf("statuses = %v, errors %v", got, v)
	}
	recs, _ := a.em.Records("FixedAssetMajorTypes")
	if len(recs) != 11 || recs[0]["MajorTypeId"] != "COMP" || recs[0]["Description"] != "Computer hardware" || recs[0]["dataAreaId"] != "usmf" {
		t.Errorf("records: %d, first %v", len(recs), recs)
	}
}

// referencePackagePath is the package F&O exported that the repository
// keeps in internal/foemu/dmfpkg/testdata (see the README there).
func referencePackagePath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "internal", "foemu", "dmfpkg", "testdata", "usmf_asset-major-types-01.zip")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the F&O reference package is missing: %v", err)
	}
	return p
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatal("go.mod not found above the test directory")
		}
	}
}

func TestDMFTransientNotFound(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.DMF.NotFoundWindow = foemu.Duration(200 * time.Millisecond) })
	id, _ := a.submit(pickingPackage(t, [][]string{{"P000101", "RM-2000", "1", "2025-03-01"}}, nil), "", false)
	_, r := a.action("GetExecutionSummaryStatus", map[string]any{"executionId": id})
	if r.status != 400 || !strings.HasSuffix(r.innerMessage(t), "were not found.") {
		t.Errorf("status right after submit: %d %s", r.status, r.body)
	}
	if got := a.waitStatus(id); got[0] != "400" || got[len(got)-1] != "Succeeded" {
		t.Errorf("statuses = %v, want 400 first, Succeeded last", got)
	}
}

func TestDMFReusedExecutionID(t *testing.T) {
	rows := [][]string{{"P000101", "RM-2000", "1", "2025-03-01"}, {"P000101", "RM-2001", "2", "2025-03-01"}}
	tests := []struct {
		mode        string
		wantStatus  int
		wantRecords int
	}{
		{"idempotent", 200, 2},
		{"reject", 400, 2},
		{"reimport", 200, 4},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			a := newAPI(t, func(c *foemu.Config) { c.DMF.ReusedExecutionID = tt.mode })
			pkg := pickingPackage(t, rows, nil)
			id, _ := a.submit(pkg, "plant01-0001", false)
			a.waitStatus(id)
			_, r := a.submit(pkg, "plant01-0001", false)
			if r.status != tt.wantStatus {
				t.Fatalf("second submit: status %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			a.waitStatus(id)
			if recs, _ := a.em.Records("ProductionPickingListJournalEntries"); len(recs) != tt.wantRecords {
				t.Errorf("records = %d, want %d", len(recs), tt.wantRecords)
			}
			exs := a.em.Executions()
			if len(exs) != 1 || exs[0].Submissions != 2 {
				t.Errorf("executions = %d, submissions %d; want 1 execution submitted twice", len(exs), exs[0].Submissions)
			}
		})
	}
}

func TestBlobSAS(t *testing.T) {
	a := newAPI(t)
	_, u := a.writeURL("sas.zip")
	data := make([]byte, 3000)
	_, _ = rand.Read(data)
	ctx := context.Background()
	t.Run("tampered signature", func(t *testing.T) {
		bad := strings.Replace(u, "sig=", "sig=A", 1)
		_, err := blobClient(t, bad, a.hc).UploadBuffer(ctx, data, nil)
		if !bloberror.HasCode(err, bloberror.AuthenticationFailed) {
			t.Errorf("err = %v, want AuthenticationFailed", err)
		}
	})
	t.Run("other blob name", func(t *testing.T) {
		other := strings.Replace(u, "/sas.zip?", "/other.zip?", 1)
		_, err := blobClient(t, other, a.hc).UploadBuffer(ctx, data, nil)
		if !bloberror.HasCode(err, bloberror.AuthenticationFailed) {
			t.Errorf("err = %v, want AuthenticationFailed", err)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		if _, err := blobClient(t, u, a.hc).UploadStream(ctx, bytes.NewReader(data), &blockblob.UploadStreamOptions{BlockSize: 1000}); err != nil {
			t.Fatal(err)
		}
		if got := download(t, a, u); got != string(data) {
			t.Errorf("downloaded %d bytes, want the %d uploaded", len(got), len(data))
		}
	})
	t.Run("expired", func(t *testing.T) {
		b := newAPI(t, func(c *foemu.Config) { c.DMF.SASLifetime = foemu.Duration(time.Nanosecond) })
		_, eu := b.writeURL("late.zip")
		foemutest.WaitFor(t, 3*time.Second, "the SAS to expire", func() bool {
			_, err := blobClient(t, eu, b.hc).UploadBuffer(ctx, data, nil)
			return bloberror.HasCode(err, bloberror.AuthenticationFailed)
		})
	})
}
