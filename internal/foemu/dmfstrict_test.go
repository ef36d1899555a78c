package foemu_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

var oneRow = [][]string{{"P000101", "RM-2000", "1", "2025-03-01"}}

// importURL calls ImportFromPackage for a package already uploaded to u.
func (a *api) importURL(u, executionID string) (string, reply) {
	a.t.Helper()
	v, r := a.action("ImportFromPackage", map[string]any{
		"packageUrl": u, "definitionGroupId": "MES-PickingList", "executionId": executionID,
		"execute": true, "overwrite": true, "legalEntityId": "USMF",
	})
	id, _ := v.(string)
	return id, r
}

func (a *api) status(id string) (string, reply) {
	a.t.Helper()
	v, r := a.action("GetExecutionSummaryStatus", map[string]any{"executionId": id})
	s, _ := v.(string)
	return s, r
}

func (a *api) errorsOf(id string) string {
	a.t.Helper()
	v, r := a.action("GetExecutionErrors", map[string]any{"executionId": id})
	s, ok := v.(string)
	if !ok {
		a.t.Fatalf("GetExecutionErrors(%s): %d %s", id, r.status, r.body)
	}
	return s
}

func last(s []string) string { return s[len(s)-1] }

func pickingRecords(t *testing.T, em *foemu.Emulator) int {
	t.Helper()
	recs, err := em.Records("ProductionPickingListJournalEntries")
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

func TestDMFParallelImports(t *testing.T) {
	slow := func(c *foemu.Config) {
		c.DMF.QueuedTime = foemu.Duration(300 * time.Millisecond) // the first one is still NotRun when the second arrives
		c.DMF.ExecutionTime = foemu.Duration(50 * time.Millisecond)
	}
	t.Run("fail (default)", func(t *testing.T) {
		a := newAPI(t, slow)
		if got := a.em.Config().DMF.ParallelImports; got != foemu.ParallelFail {
			t.Fatalf("default dmf.parallel_imports = %q, want fail", got)
		}
		idA, r := a.submit(pickingPackage(t, oneRow, nil), "exec-a", false)
		if idA != "exec-a" {
			t.Fatalf("first ImportFromPackage: %d %s", r.status, r.body)
		}
		// The parallel call is accepted, as F&O's batch job is: it returns
		// its executionId and fails later.
		idB, r := a.submit(pickingPackage(t, [][]string{{"P000101", "RM-2001", "2", "2025-03-01"}}, nil), "exec-b", false)
		if idB != "exec-b" {
			t.Fatalf("parallel ImportFromPackage: %d %s, want 200 and its executionId", r.status, r.body)
		}
		if got := a.waitStatus(idA); last(got) != foemu.StatusSucceeded {
			t.Errorf("first execution: statuses %v, want Succeeded", got)
		}
		if got := a.waitStatus(idB); last(got) != foemu.StatusFailed || !slices.Contains(got, foemu.StatusExecuting) {
			t.Errorf("parallel execution: statuses %v, want ... Executing, Failed", got)
		}
		msgs := a.errorsOf(idB)
		for _, want := range []string{
			"Cannot create a record in " + pickingLabel + " staging (ProdProductionPickingListJournalEntryStaging).",
			"The record already exists.", "exec-a", "dmf.parallel_imports",
		} {
			if !strings.Contains(msgs, want) {
				t.Errorf("GetExecutionErrors = %s\nwant it to contain %q", msgs, want)
			}
		}
		if n := pickingRecords(t, a.em); n != 1 {
			t.Errorf("records = %d, want 1 (the parallel execution imports nothing)", n)
		}
		ex, _ := a.em.Execution(idB)
		if ex.ParallelWith != "exec-a" || ex.Entities[0].Status != "Error" || ex.Entities[0].TargetRecords != 0 {
			t.Errorf("parallel execution = %+v", ex)
		}
		if exA, _ := a.em.Execution(idA); exA.ParallelWith != "" {
			t.Errorf("first execution parallel_with = %q", exA.ParallelWith)
		}
		if st := a.em.DMFStats(); st.ParallelImports != 1 || st.Executions != 2 || st.ByStatus[foemu.StatusFailed] != 1 {
			t.Errorf("DMFStats = %+v", st)
		}
		// The control endpoint shows it too.
		var list struct {
			Value []struct {
				ID           string `json:"execution_id"`
				ParallelWith string `json:"parallel_with"`
			} `json:"value"`
		}
		if err := json.Unmarshal(a.do(http.MethodGet, "/_emulator/executions", "").body, &list); err != nil || len(list.Value) != 2 || list.Value[1].ParallelWith != "exec-a" {
			t.Errorf("/_emulator/executions = %+v (%v)", list, err)
		}
		// Once nothing runs, an import goes through again.
		idC, _ := a.submit(pickingPackage(t, oneRow, nil), "exec-c", false)
		if got := a.waitStatus(idC); last(got) != foemu.StatusSucceeded {
			t.Errorf("sequential execution after the others: %v", got)
		}
	})
	t.Run("allow", func(t *testing.T) {
		a := newAPI(t, slow, func(c *foemu.Config) { c.DMF.ParallelImports = foemu.ParallelAllow })
		idA, _ := a.submit(pickingPackage(t, oneRow, nil), "exec-a", false)
		idB, _ := a.submit(pickingPackage(t, oneRow, nil), "exec-b", false)
		for _, id := range []string{idA, idB} {
			if got := a.waitStatus(id); last(got) != foemu.StatusSucceeded {
				t.Errorf("%s: statuses %v, want Succeeded", id, got)
			}
		}
		if st := a.em.DMFStats(); st.ParallelImports != 0 {
			t.Errorf("DMFStats = %+v", st)
		}
	})
	t.Run("bad value", func(t *testing.T) {
		cfg := foemu.DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.DMF.ParallelImports = "sometimes"
		if _, err := foemu.New(cfg); err == nil || !strings.Contains(err.Error(), `parallel_imports "sometimes" is not fail or allow`) {
			t.Errorf("New: %v", err)
		}
	})
}

// sasExpiry returns the se (signed expiry) of a SAS URL.
func sasExpiry(t *testing.T, u string) time.Time {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	se, err := time.Parse(time.RFC3339, p.Query().Get("se"))
	if err != nil {
		t.Fatalf("SAS URL %s has no valid se: %v", u, err)
	}
	return se
}

// checkExpiredSAS uploads a package while the SAS is valid, waits until it
// has expired, and checks that the upload is refused and that
// ImportFromPackage with the expired package URL fails.
func checkExpiredSAS(t *testing.T, a *api) {
	t.Helper()
	_, u := a.writeURL("short-lived.zip")
	pkg := pickingPackage(t, oneRow, nil)
	if _, err := blobClient(t, u, a.hc).UploadBuffer(context.Background(), pkg, nil); err != nil {
		t.Fatalf("upload with a fresh SAS: %v", err)
	}
	se := sasExpiry(t, u)
	foemutest.WaitFor(t, 10*time.Second, "the SAS to expire", func() bool { return time.Now().After(se.Add(50 * time.Millisecond)) })
	_, err := blobClient(t, u, a.hc).UploadBuffer(context.Background(), pkg, nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		t.Errorf("upload with an expired SAS: %v, want 403", err)
	}
	id, r := a.importURL(u, "")
	if id != "" || r.status != http.StatusBadRequest {
		t.Fatalf("ImportFromPackage with an expired package URL: %d %s, want 400", r.status, r.body)
	}
	msg := r.innerMessage(t)
	for _, want := range []string{"The data package could not be downloaded from '", "The remote server returned an error: (403) Forbidden.",
		"The shared access signature of the package URL expired at " + se.UTC().Format(time.RFC3339), "GetAzureWriteUrl"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message = %q\nwant it to contain %q", msg, want)
		}
	}
	if p, _ := url.Parse(u); strings.Contains(msg, p.Query().Get("sig")) || strings.Contains(msg, url.QueryEscape(p.Query().Get("sig"))) {
		t.Errorf("message shows the signature: %q", msg)
	}
	if n := len(a.em.Executions()); n != 0 {
		t.Errorf("executions after a refused import: %d", n)
	}
}

func TestDMFSASExpiry(t *testing.T) {
	t.Run("default lifetime", func(t *testing.T) {
		if got := foemu.DefaultConfig().DMF.SASLifetime.D(); got != 35*time.Minute || foemu.DefaultSASLifetime != 35*time.Minute {
			t.Errorf("default sas_lifetime = %v, want 35m", got)
		}
		a := newAPI(t)
		_, u := a.writeURL("default.zip")
		if left := time.Until(sasExpiry(t, u)); left < 34*time.Minute || left > 35*time.Minute {
			t.Errorf("upload URL valid for %v, want about 35m", left)
		}
	})
	t.Run("builtin", func(t *testing.T) {
		checkExpiredSAS(t, newAPI(t, func(c *foemu.Config) { c.DMF.SASLifetime = foemu.Duration(2 * time.Second) }))
	})
	t.Run("builtin error file URLs are signed afresh", func(t *testing.T) {
		a := newAPI(t, func(c *foemu.Config) { c.DMF.SASLifetime = foemu.Duration(2 * time.Second) })
		id, _ := a.submit(pickingPackage(t, [][]string{{"P000101", "RM-2000", "x", "2025-03-01"}}, nil), "", false)
		a.waitStatus(id)
		params := map[string]any{"executionId": id, "entityName": pickingLabel}
		v, _ := a.action("GetImportStagingErrorFileUrl", params)
		first, _ := v.(string)
		se := sasExpiry(t, first)
		foemutest.WaitFor(t, 10*time.Second, "the SAS to expire", func() bool { return time.Now().After(se.Add(50 * time.Millisecond)) })
		v, _ = a.action("GetImportStagingErrorFileUrl", params)
		if got := download(t, a, v.(string)); !strings.Contains(got, "RM-2000,x,") {
			t.Errorf("staging error file through a new URL:\n%s", got)
		}
	})
}

func TestIntegrationDMFAzuriteSASExpiry(t *testing.T) {
	endpoint := startAzurite(t)
	checkExpiredSAS(t, newAPI(t, func(c *foemu.Config) {
		c.DMF.Blob = foemu.BlobConfig{Mode: foemu.BlobAzurite, Endpoint: endpoint}
		c.DMF.SASLifetime = foemu.Duration(2 * time.Second)
	}))
}

func TestDMFHangExecuting(t *testing.T) {
	t.Run("forever", func(t *testing.T) {
		a := newAPI(t)
		if err := a.em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{HangExecuting: true}}); err != nil {
			t.Fatal(err)
		}
		id, _ := a.submit(pickingPackage(t, oneRow, nil), "hung-1", false)
		foemutest.WaitFor(t, 5*time.Second, "Executing", func() bool { s, _ := a.status(id); return s == foemu.StatusExecuting })
		// Far beyond execution_time (5ms), it is still Executing.
		deadline := time.Now().Add(400 * time.Millisecond)
		foemutest.WaitFor(t, 2*time.Second, "400ms to pass", func() bool {
			if s, r := a.status(id); s != foemu.StatusExecuting {
				t.Fatalf("status of a hung execution = %q (%d %s)", s, r.status, r.body)
			}
			return time.Now().After(deadline)
		})
		ex, _ := a.em.Execution(id)
		if !slices.Contains(ex.InjectedFaults, "hang_executing") || ex.FinishedAt != nil {
			t.Errorf("hung execution = %+v", ex)
		}
		// Clearing the faults does not release it; it still counts as
		// running, so the next import fails as a parallel one.
		if err := a.em.SetFaults(foemu.Faults{}); err != nil {
			t.Fatal(err)
		}
		next, _ := a.submit(pickingPackage(t, oneRow, nil), "after-hang", false)
		if got := a.waitStatus(next); last(got) != foemu.StatusFailed {
			t.Errorf("import while one hangs: %v, want Failed", got)
		}
		if ex, _ := a.em.Execution(next); ex.ParallelWith != "hung-1" {
			t.Errorf("parallel_with = %q, want hung-1", ex.ParallelWith)
		}
		if s, _ := a.status(id); s != foemu.StatusExecuting {
			t.Errorf("hung execution after the faults were cleared: %s", s)
		}
		if st := a.em.DMFStats(); st.Hung != 1 || st.Running != 1 || st.ParallelImports != 1 {
			t.Errorf("DMFStats = %+v", st)
		}
		// Reset drops it.
		if err := a.em.Reset(); err != nil {
			t.Fatal(err)
		}
		if _, r := a.status(id); r.status != http.StatusBadRequest {
			t.Errorf("hung execution after Reset: %d", r.status)
		}
	})
	t.Run("for a while, set through /_emulator/faults", func(t *testing.T) {
		a := newAPI(t)
		if r := a.do(http.MethodPost, "/_emulator/faults", `{"dmf":{"hang_executing":true,"hang_for":"600ms"}}`); r.status != http.StatusOK {
			t.Fatalf("POST /_emulator/faults: %d %s", r.status, r.body)
		}
		if f := a.em.Faults(); !f.DMF.HangExecuting || f.DMF.HangFor.D() != 600*time.Millisecond {
			t.Fatalf("faults = %+v", f)
		}
		id, _ := a.submit(pickingPackage(t, oneRow, nil), "", false)
		got := a.waitStatus(id)
		ex, _ := a.em.Execution(id)
		if !slices.Equal(got, []string{"400", foemu.StatusExecuting, foemu.StatusSucceeded}) || ex.FinishedAt.Sub(*ex.StartedAt) < 600*time.Millisecond {
			t.Errorf("statuses %v, executing %v; want Executing for at least 600ms, then Succeeded", got, ex.FinishedAt.Sub(*ex.StartedAt))
		}
		if n := pickingRecords(t, a.em); n != 1 {
			t.Errorf("records = %d, want 1", n)
		}
	})
	t.Run("validation", func(t *testing.T) {
		a := newAPI(t)
		if err := a.em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(-time.Second)}}); err == nil {
			t.Error("negative hang_for accepted")
		}
		if err := a.em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{FailNextImports: -1}}); err == nil {
			t.Error("negative fail_next_imports accepted")
		}
		if r := a.do(http.MethodPost, "/_emulator/faults", `{"dmf":{"hang":true}}`); r.status != http.StatusBadRequest {
			t.Errorf("unknown dmf fault key: %d %s", r.status, r.body)
		}
	})
}

func TestDMFFailAndPartialNextImports(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.DMF.ErrorFileDelay = 0 })
	if err := a.em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{FailNextImports: 2, PartialNextImports: 1}}); err != nil {
		t.Fatal(err)
	}
	rows := [][]string{{"P000101", "RM-2000", "1", "2025-03-01"}, {"P000101", "RM-2001", "2", "2025-03-01"}, {"P000101", "RM-2002", "3", "2025-03-01"}}
	want := []string{foemu.StatusFailed, foemu.StatusFailed, foemu.StatusPartiallySucceeded, foemu.StatusSucceeded}
	wantRecords := []int{0, 0, 2, 5}
	var ids []string
	for i, w := range want {
		id, r := a.submit(pickingPackage(t, rows, nil), "", false)
		if id == "" {
			t.Fatalf("submit %d: %d %s", i, r.status, r.body)
		}
		ids = append(ids, id)
		if i == 0 {
			if f := a.em.Faults(); f.DMF.FailNextImports != 1 || f.DMF.PartialNextImports != 1 {
				t.Errorf("faults after one import = %+v, want fail_next_imports counted down to 1", f.DMF)
			}
		}
		if got := a.waitStatus(id); last(got) != w {
			t.Errorf("import %d: statuses %v, want %s", i, got, w)
		}
		if n := pickingRecords(t, a.em); n != wantRecords[i] {
			t.Errorf("after import %d: records = %d, want %d", i, n, wantRecords[i])
		}
	}
	if msgs := a.errorsOf(ids[0]); !strings.Contains(msgs, "dmf.fail_next_imports") {
		t.Errorf("errors of an injected failure = %s", msgs)
	}
	// The partial one: the last row failed at target and is in the keys file.
	params := map[string]any{"executionId": ids[2], "entityName": pickingLabel}
	if v, r := a.action("GenerateImportTargetErrorKeysFile", params); v != true {
		t.Fatalf("GenerateImportTargetErrorKeysFile = %v %s", v, r.body)
	}
	v, _ := a.action("GetImportTargetErrorKeysFileUrl", params)
	keys := download(t, a, v.(string))
	if !strings.HasPrefix(keys, "DATAAREAID,JOURNALNUMBER,JOURNALLINENUMBER,ERROR\r\nUSMF,PPL-") || !strings.Contains(keys, "dmf.partial_next_imports") || strings.Count(keys, "\r\n") != 2 {
		t.Errorf("keys file:\n%s", keys)
	}
	if f := a.em.Faults(); f.DMF.FailNextImports != 0 || f.DMF.PartialNextImports != 0 {
		t.Errorf("faults after use = %+v", f.DMF)
	}
	if st := a.em.DMFStats(); st.InjectedFailed != 2 || st.InjectedPartial != 1 {
		t.Errorf("DMFStats = %+v", st)
	}
}

func TestDMFNotFoundWindowCoversAllActions(t *testing.T) {
	// foemutest.Fast keeps the window on (short), so that polling tests go
	// through it.
	cfg := foemu.DefaultConfig()
	foemutest.Fast(&cfg)
	if cfg.DMF.NotFoundWindow.D() != foemutest.FastNotFoundWindow || foemutest.FastNotFoundWindow <= 0 {
		t.Fatalf("Fast not_found_window = %v", cfg.DMF.NotFoundWindow)
	}
	a := newAPI(t)
	id, _ := a.submit(pickingPackage(t, [][]string{{"P000101", "RM-2000", "x", "2025-03-01"}, {"P000101", "", "1", "2025-03-01"}, {"P000101", "RM-2000", "1", "2025-03-01"}}, nil), "", false)
	calls := []struct {
		action string
		params map[string]any
	}{
		{"GetExecutionSummaryStatus", map[string]any{"executionId": id}},
		{"GetExecutionErrors", map[string]any{"executionId": id}},
		{"GetExecutionSummaryPageUrl", map[string]any{"executionId": id}},
		{"GetImportStagingErrorFileUrl", map[string]any{"executionId": id, "entityName": pickingLabel}},
		{"GenerateImportTargetErrorKeysFile", map[string]any{"executionId": id, "entityName": pickingLabel}},
		{"GetImportTargetErrorKeysFileUrl", map[string]any{"executionId": id, "entityName": pickingLabel}},
	}
	for _, c := range calls {
		_, r := a.action(c.action, c.params)
		if r.status != http.StatusBadRequest || r.innerMessage(t) != "Execution ID(s) '"+id+"' were not found." {
			t.Errorf("%s right after submit: %d %s, want 400 were not found", c.action, r.status, r.body)
		}
	}
	if got := a.waitStatus(id); got[0] != "400" || last(got) != foemu.StatusPartiallySucceeded {
		t.Errorf("statuses = %v", got)
	}
	for _, c := range calls {
		if _, r := a.action(c.action, c.params); r.status != http.StatusOK {
			t.Errorf("%s after the window: %d %s", c.action, r.status, r.body)
		}
	}
}

func TestDMFStatusOutsideEnum(t *testing.T) {
	a := newAPI(t)
	if r := a.do(http.MethodPost, "/_emulator/faults", `{"dmf":{"summary_status":"Pending"}}`); r.status != http.StatusOK {
		t.Fatalf("POST /_emulator/faults: %d %s", r.status, r.body)
	}
	id, _ := a.submit(pickingPackage(t, oneRow, nil), "", false)
	foemutest.WaitFor(t, 5*time.Second, "the execution to finish", func() bool {
		ex, _ := a.em.Execution(id)
		return ex.FinishedAt != nil
	})
	foemutest.WaitFor(t, 5*time.Second, "the not-found window to pass", func() bool { _, r := a.status(id); return r.status == http.StatusOK })
	if s, _ := a.status(id); s != "Pending" {
		t.Errorf("status with the fault = %q, want Pending", s)
	}
	if _, r := a.status("no-such-id"); r.status != http.StatusBadRequest {
		t.Errorf("unknown id with the fault: %d", r.status)
	}
	_ = a.em.SetFaults(foemu.Faults{})
	if s, _ := a.status(id); s != foemu.StatusSucceeded {
		t.Errorf("status without the fault = %q", s)
	}
}

func TestDMFReusedExecutionIDDefault(t *testing.T) {
	// F&O documents nothing about a reused executionId [UNVERIFIED]; the
	// emulator's default is idempotent.
	if got := foemu.DefaultConfig().DMF.ReusedExecutionID; got != "idempotent" {
		t.Errorf("default reused_execution_id = %q", got)
	}
}

// TestDMFErrorFilesIdentifyRows checks that the error files carry the data
// file columns that identify each failed row: the staging error file the
// whole source row, the target error keys file the entity keys, which the
// package can set (JOURNALNUMBER, JOURNALLINENUMBER).
func TestDMFErrorFilesIdentifyRows(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) { c.DMF.ErrorFileDelay = 0 })
	cols := []string{"JOURNALNUMBER", "JOURNALLINENUMBER", "PRODUCTIONORDERNUMBER", "ITEMNUMBER", "CONSUMPTIONBOMQUANTITY", "CONSUMPTIONDATE"}
	rows := [][]string{
		{"PPL-GW0001", "1", "P000101", "RM-2000", "1", "2025-03-01"},
		{"PPL-GW0001", "2", "P000101", "RM-2001", "lots", "2025-03-01"}, // staging error
		{"PPL-GW0001", "3", "P000101", "", "1", "2025-03-01"},           // target error
		{"PPL-GW0001", "4", "P000101", "RM-2002", "2", "2025-03-01"},
	}
	pkg := pickingPackage(t, nil, func(m *dmfpkg.Manifest, f map[string][]byte) {
		m.Entities[0].EntityMapList = dmfpkg.MapColumns(cols...)
		f["lines.csv"] = dmfpkg.WriteCSVUnicode(cols, rows)
	})
	id, _ := a.submit(pkg, "", false)
	if got := a.waitStatus(id); last(got) != foemu.StatusPartiallySucceeded {
		t.Fatalf("statuses = %v", got)
	}
	params := map[string]any{"executionId": id, "entityName": pickingLabel}
	readCSV := func(action string) [][]string {
		t.Helper()
		v, r := a.action(action, params)
		u, _ := v.(string)
		if u == "" {
			t.Fatalf("%s: %v %s", action, v, r.body)
		}
		text := download(t, a, u)
		if !strings.HasSuffix(text, "\r\n") || strings.Contains(strings.ReplaceAll(text, "\r\n", ""), "\n") {
			t.Errorf("%s: lines must end with CRLF:\n%q", action, text)
		}
		recs, err := csv.NewReader(bytes.NewReader([]byte(text))).ReadAll()
		if err != nil {
			t.Fatalf("%s: not CSV: %v", action, err)
		}
		return recs
	}
	staging := readCSV("GetImportStagingErrorFileUrl")
	if len(staging) != 2 || !slices.Equal(staging[0], append(slices.Clone(cols), "ERROR")) || !slices.Equal(staging[1][:6], rows[1]) ||
		!strings.Contains(staging[1][6], "'lots'") {
		t.Errorf("staging error file = %q", staging)
	}
	if v, _ := a.action("GenerateImportTargetErrorKeysFile", params); v != true {
		t.Fatalf("GenerateImportTargetErrorKeysFile = %v", v)
	}
	keys := readCSV("GetImportTargetErrorKeysFileUrl")
	if len(keys) != 2 || !slices.Equal(keys[0], []string{"DATAAREAID", "JOURNALNUMBER", "JOURNALLINENUMBER", "ERROR"}) ||
		!slices.Equal(keys[1][:3], []string{"USMF", "PPL-GW0001", "3"}) || !strings.Contains(keys[1][3], "Field 'ItemNumber' must be filled in.") {
		t.Errorf("target error keys file = %q", keys)
	}
}
