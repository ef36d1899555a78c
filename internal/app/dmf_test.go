package app

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

const dmfConfig = `gateway:
  id: t
  data_dir: %[1]s
  drain_timeout: 1s
http:
  listen: 127.0.0.1:0
  admin_token: ${env:PG_TEST_ADMIN_TOKEN}
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_TEST_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
sources:
  mes:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
flows:
  consumption:
    from: mes
    key: payload.order
    expect: {rate: 40/s}
    to: dmf
    map:
      PRODUCTIONORDERNUMBER: payload.order
      ITEMNUMBER: payload.item
      CONSUMPTIONBOMQUANTITY: payload.qty
sinks:
  dmf:
    type: fo.dmf
    env: emu
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
    poll_initial: 10ms
    poll_max: 100ms
    batch: {max_records: 1000, max_age: 1h}
`

// TestDMFSinkInTheGateway: a fo.dmf sink runs as its stream's driver in
// the gateway; a batch under its limits waits until an operator closes it
// through the admin API; status shows the sink; the lines reach F&O once.
func TestDMFSinkInTheGateway(t *testing.T) {
	em := foemutest.Start(t)
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	dir := t.TempDir()
	a, cancel, done := startAppWith(t, dir, fmt.Sprintf(dmfConfig, dir, em.BaseURL(), em.CAFile()))
	defer func() {
		cancel()
		<-done
	}()
	for i := range 30 {
		appendLines(t, filepath.Join(dir, "in.jsonl"), fmt.Sprintf(`{"order":"P000101","item":"RM-2000","qty":%d}`, i+1))
	}
	eventually(t, "30 lines queued", func() bool { return a.Status().Queue.Records == 30 })
	base := "http://" + a.HTTPAddr().String()
	if code, _ := post(t, base+"/api/v1/admin/dmf/close", "", `{"sink":"dmf"}`); code != http.StatusUnauthorized {
		t.Errorf("close without a token: %d", code)
	}
	if code, body := post(t, base+"/api/v1/admin/dmf/close", adminToken, `{"sink":"nope"}`); code != http.StatusBadRequest || !strings.Contains(body, "batching sinks: dmf") {
		t.Errorf("close of an unknown sink: %d %s", code, body)
	}
	if recs, _ := em.Records("ProductionPickingListJournalEntries"); len(recs) != 0 {
		t.Fatalf("%d lines imported before the batch closed", len(recs))
	}
	// F&O takes a while: the batch shows in the status JSON and page.
	if err := em.SetFaults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(1500 * time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, base+"/api/v1/admin/dmf/close", adminToken, `{"sink":"dmf"}`); code != http.StatusAccepted {
		t.Fatalf("close: %d %s", code, body)
	}
	eventually(t, "the batch polled in status", func() bool {
		bs := a.Status().Batches
		return len(bs) == 1 && bs[0].Step == "polling" && bs[0].Lines == 30 && strings.HasPrefix(bs[0].ExecutionID, "plantgate-t-dmf-")
	})
	if _, page := get(t, base+"/", ""); !strings.Contains(page, "<h2>DMF batches</h2>") || !strings.Contains(page, "plantgate-t-dmf-") || !strings.Contains(page, "<td>polling") {
		t.Errorf("status page lacks the batch in flight")
	}
	eventually(t, "30 lines imported and acked", func() bool {
		recs, _ := em.Records("ProductionPickingListJournalEntries")
		return len(recs) == 30 && a.Status().Queue.Records == 0
	})
	if ex := em.Executions(); len(ex) != 1 || ex[0].Status != foemu.StatusSucceeded {
		t.Errorf("executions %+v", ex)
	}
	_, page := get(t, base+"/api/v1/status", "")
	if !strings.Contains(strings.ReplaceAll(page, " ", ""), `"definition_group":"MES-PickingList"`) {
		t.Errorf("status lacks the dmf sink: %.400s", page)
	}
}
