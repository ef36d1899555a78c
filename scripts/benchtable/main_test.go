package main

import (
	"strings"
	"testing"
)

// TestTable: figures land beside their same-run baseline with the ratio,
// targets are judged, and a benchmark that did not run says so.
func TestTable(t *testing.T) {
	out := `goos: linux
cpu: AMD EPYC
BenchmarkAppend/appenders=64-2   117620   25903 ns/op   38605 appends/s   0.7249 ratio   53254 raw-bbolt-records/s   30.00 records/commit
BenchmarkIngestBacklog-2   20000   33078 ns/op   30232 msg/s   61428 null_msg/s   0.4922 ratio
BenchmarkReadyWith1MQueued-2   3   47054392 ns/op   17.00 ready-1M-ms   18.33 ready-empty-ms
`
	r, header := parse(strings.NewReader(out), nil)
	tab := table(r, header, "")
	for _, want := range []string{
		"| Queue append, 64 appenders (fsync'd group commit) | 38605 | 53254 (raw bbolt at the same records per transaction) | 0.72 | >= 0.6 of raw bbolt | yes |",
		"| MQTT backlog drain after an outage | 30232 | 61428 (null subscriber) | 0.49 | >= 0.9 | **no** |",
		"| Time to ready, 1M records queued (ms) | 17.0 | 18.3 (empty queue) | 0.93 | <= 300 ms | yes |",
		"| OPC UA, 10,000 items (changes/s) | not run |",
		"cpu: AMD EPYC",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}
