package foemu_test

import (
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// startAzurite runs Azurite's blob service (foemutest.StartAzurite).
func startAzurite(t *testing.T) string { return foemutest.StartAzurite(t) }

// TestIntegrationDMFAzurite drives the whole DMF flow with the azblob SDK
// against a real Azurite: SAS URLs signed for it, uploads with UploadBuffer
// and UploadStream, the import, and error files read back from Azurite.
func TestIntegrationDMFAzurite(t *testing.T) {
	endpoint := startAzurite(t)
	a := newAPI(t, func(c *foemu.Config) {
		c.DMF.Blob = foemu.BlobConfig{Mode: foemu.BlobAzurite, Endpoint: endpoint}
	})
	_, u := a.writeURL("check.zip")
	if !strings.HasPrefix(u, endpoint+"/dmf/check.zip?") || strings.Contains(u, "spr=") {
		t.Fatalf("BlobUrl = %q, want a path-style Azurite URL without spr", u)
	}
	for _, stream := range []bool{false, true} {
		var rows [][]string
		for range 30 {
			rows = append(rows, []string{"P000101", "RM-2000", "1", "2025-03-01"})
		}
		id, r := a.submit(pickingPackage(t, rows, nil), "", stream)
		if id == "" {
			t.Fatalf("ImportFromPackage (stream %v): %d %s", stream, r.status, r.body)
		}
		if got := a.waitStatus(id); got[len(got)-1] != foemu.StatusSucceeded {
			v, _ := a.action("GetExecutionErrors", map[string]any{"executionId": id})
			t.Fatalf("statuses = %v, errors %v", got, v)
		}
	}
	if recs, _ := a.em.Records("ProductionPickingListJournalEntries"); len(recs) != 60 {
		t.Errorf("records = %d, want 60", len(recs))
	}
	id, _ := a.submit(pickingPackage(t, [][]string{{"P000101", "RM-2000", "x", "2025-03-01"}, {"P000101", "RM-2000", "1", "2025-03-01"}}, nil), "", false)
	a.waitStatus(id)
	v, r := a.action("GetImportStagingErrorFileUrl", map[string]any{"executionId": id, "entityName": pickingLabel})
	eu, _ := v.(string)
	if !strings.HasPrefix(eu, endpoint+"/dmf-errors/") {
		t.Fatalf("staging error file URL = %q (%s)", eu, r.body)
	}
	if got := download(t, a, eu); !strings.Contains(got, "P000101,RM-2000,x,") {
		t.Errorf("staging error file from Azurite:\n%s", got)
	}
}
