package foodata

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/d365"
	"github.com/plantgate/plantgate/internal/d365/d365test"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/pipeline"
)

// TestBatchFailureWithoutContentID covers an F&O answer the emulator never
// gives: a failed changeset whose failing part carries no Content-ID. The
// sink cannot tell which record failed, so it writes that changeset's
// records one by one, and only the bad one is dead-lettered.
func TestBatchFailureWithoutContentID(t *testing.T) {
	em := foemutest.Start(t)
	var mu sync.Mutex
	var singles []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/data/$batch" {
			w.Header().Set("Content-Type", "multipart/mixed; boundary=batchresponse_x")
			fmt.Fprint(w, "--batchresponse_x\r\nContent-Type: multipart/mixed; boundary=cs_x\r\n\r\n"+
				"--cs_x\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n"+
				`{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Write failed for table row of type 'ProdProductionOrderHeaderEntity'. Infolog: Warning: Field 'ItemNumber' must be filled in.","type":"Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"}}}`+
				"\r\n--cs_x--\r\n--batchresponse_x--\r\n")
			return
		}
		mu.Lock()
		singles = append(singles, string(body))
		mu.Unlock()
		if !strings.Contains(string(body), "ItemNumber") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Write failed for table row of type 'ProdProductionOrderHeaderEntity'. Infolog: Warning: Field 'ItemNumber' must be filled in."}}}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	ca, err := os.ReadFile(em.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	_ = os.WriteFile(caFile, append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...), 0o600)
	fe := d365test.Env(t, em, func(c *config.FOEnv, _ *d365.Options) { c.URL, c.CAFile = srv.URL, caFile })
	st := d365test.Store(t)
	s := newSink(t, orderConfig(ModeCreate, true), fe, st)
	err = s.Write(context.Background(), queued(t, st,
		order(1, "PE1", map[string]any{"ItemNumber": "FG-1000"}),
		order(2, "PE2", nil),
		order(3, "PE3", map[string]any{"ItemNumber": "FG-1000"}),
	))
	var pe *pipeline.PartialError
	if !errors.As(err, &pe) || len(pe.Accepted) != 2 || len(pe.Rejected) != 1 || pe.Rejected[1] == nil {
		t.Fatalf("Write = %v; want PE1 and PE3 accepted, PE2 rejected", err)
	}
	if !strings.Contains(pe.Rejected[1].Error(), "Field 'ItemNumber' must be filled in") {
		t.Errorf("reason %q", pe.Rejected[1])
	}
	if len(singles) != 3 {
		t.Errorf("%d single writes after the unattributed failure, want 3", len(singles))
	}
}
