package foemu_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

// azuriteBin locates azurite-blob: $PLANTGATE_AZURITE, else
// <repo>/.tools/node_modules/.bin/azurite-blob as installed by make tools.
func azuriteBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PLANTGATE_AZURITE"); p != "" {
		return p
	}
	p := filepath.Join(repoRoot(t), ".tools", "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("azurite-blob not found at %s (-short)", p)
		}
		t.Fatalf("azurite-blob not found at %s: run `make tools` (installs npm azurite@3.37.0) or set PLANTGATE_AZURITE", p)
	}
	return p
}

// startAzurite runs Azurite's blob service on a free loopback port and
// returns the path-style account endpoint. It is killed when the test ends.
func startAzurite(t *testing.T) string {
	t.Helper()
	bin := azuriteBin(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--inMemoryPersistence", "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port), "--silent")
	cmd.Dir = t.TempDir()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start azurite: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port) + "/" + foemu.AzuriteAccount
	hc := &http.Client{Timeout: time.Second}
	foemutest.WaitFor(t, 30*time.Second, "azurite to answer", func() bool {
		resp, err := hc.Get(endpoint + "?comp=list")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return endpoint
}

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
