package app

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

const overflowConfig = `gateway:
  id: t
  data_dir: %[1]s
  drain_timeout: 1s
http: {listen: "127.0.0.1:0"}
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_TEST_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
    max_requests_per_second: 100
sources:
  mes:
    type: file
    path: %[1]s/in.jsonl
    follow: true
    poll_interval: 10ms
flows:
  lines:
    from: mes
    key: payload.id
    expect: {rate: 1/s}
    to: odata
%[4]s    map:
      ProductionOrderNumber: payload.order
      ItemNumber: payload.item
      ConsumptionBomQuantity: payload.qty
sinks:
  odata:
    type: fo.odata
    env: emu
    entity: ProductionPickingListJournalEntries
    mode: create
    max_batch: 10
    retry: {initial: 20ms, max: 200ms}
  dmf:
    type: fo.dmf
    env: emu
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
    poll_initial: 10ms
    poll_max: 100ms
    batch: {max_records: 100, max_age: 300ms}
`

// burst runs one gateway against an emulator that throttles OData at 10
// requests/s, feeds it n lines in chunks, waits until every line is in F&O
// and returns how many OData requests F&O answered 429, and the records.
func burst(t *testing.T, n int, overflow string) (throttled int, recs []map[string]any, moved int64) {
	t.Helper()
	em := foemutest.Start(t)
	if err := em.SetFaults(foemu.Faults{Throttling: &foemu.ThrottleConfig{RequestsPerSecond: 10, Burst: 10}}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PG_TEST_FO_SECRET", foemu.DefaultClientSecret)
	dir := t.TempDir()
	a, cancel, done := startAppWith(t, dir, fmt.Sprintf(overflowConfig, dir, em.BaseURL(), em.CAFile(), overflow))
	defer func() {
		cancel()
		<-done
	}()
	in := filepath.Join(dir, "in.jsonl")
	// The source is reading once its first line reached F&O.
	appendLines(t, in, `{"id":"L0","order":"P000101","item":"RM-2000","qty":1}`)
	eventually(t, "the first line in F&O", func() bool { r, _ := em.Records("ProductionPickingListJournalEntries"); return len(r) == 1 })
	for i := 1; i < n; i += 10 {
		var lines []string
		for j := i; j < i+10 && j < n; j++ {
			lines = append(lines, fmt.Sprintf(`{"id":"L%d","order":"P000101","item":"RM-2000","qty":%d}`, j, j+1))
		}
		appendLines(t, in, lines...)
		time.Sleep(50 * time.Millisecond)
	}
	eventually2(t, 60*time.Second, "every line in F&O", func() bool {
		recs, _ = em.Records("ProductionPickingListJournalEntries")
		return len(recs) >= n && a.Status().Queue.Records == 0
	})
	for _, o := range a.router.Overflows() {
		moved += o.Moved
	}
	return int(em.Stats().Count(foemu.RouteOData, 429)), recs, moved
}

// TestOverflowToDMFUnderPressure: a burst well above F&O's throttle budget
// on an OData flow ends with every record in F&O exactly once, some through
// DMF, and with far fewer 429s than the same burst without overflow, in the
// same run.
func TestOverflowToDMFUnderPressure(t *testing.T) {
	// 300, not 150: the 429s of the limiter's first probe come with and
	// without overflow alike (2 here, 6 on a loaded CI machine), and at
	// 150 lines the run without overflow had only 9 to set against them.
	const n = 300
	check := func(recs []map[string]any) {
		t.Helper()
		seen := map[string]int{}
		for _, r := range recs {
			seen[fmt.Sprint(r["ConsumptionBomQuantity"])]++
		}
		if len(recs) != n || len(seen) != n {
			t.Errorf("%d records in F&O (%d distinct), want %d exactly once", len(recs), len(seen), n)
		}
	}
	plain, recs, _ := burst(t, n, "")
	check(recs)
	over, recs, moved := burst(t, n, "    overflow: {sink: dmf, backlog: 20, throttled: 1s}\n")
	check(recs)
	t.Logf("429 answers: %d without overflow, %d with it (%d of %d records went through DMF)", plain, over, moved, n)
	if moved == 0 || moved == n {
		t.Errorf("%d records through DMF: want some, not all", moved)
	}
	if plain == 0 || over*2 > plain {
		t.Errorf("429 answers: %d without overflow, %d with: want far fewer with it", plain, over)
	}
}

// TestOverflowCheck: check-config refuses overflow where DMF cannot take
// the flow's records.
func TestOverflowCheck(t *testing.T) {
	dir := t.TempDir()
	body := fmt.Sprintf(overflowConfig, dir, "https://127.0.0.1:1", filepath.Join(dir, "ca.pem"), "    overflow: {sink: odata}\n")
	probs := OverflowCheck(mustParse(t, body))
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "fo.odata sink; overflow goes to a fo.dmf sink") {
		t.Errorf("overflow to an OData sink: %v", probs)
	}
	body = strings.Replace(fmt.Sprintf(overflowConfig, dir, "https://127.0.0.1:1", filepath.Join(dir, "ca.pem"), "    overflow: {sink: dmf}\n"),
		"      ItemNumber: payload.item\n", "", 1)
	probs = OverflowCheck(mustParse(t, body))
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "maps no ITEMNUMBER") {
		t.Errorf("overflow without a column: %v", probs)
	}
}

func eventually2(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustParse(t *testing.T, body string) *config.Config {
	t.Helper()
	t.Setenv("PG_TEST_FO_SECRET", "x")
	opts := ConfigOptions()
	opts.SkipFiles = true // the CA of an emulator these checks do not start
	cfg, err := config.Parse("t.yaml", []byte(body), opts)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
