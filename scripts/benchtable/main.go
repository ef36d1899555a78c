// Command benchtable turns the output of `go test -bench` (make bench) into
// the table of plantgate's performance figures, each beside the baseline
// measured in the same run and their ratio, and writes it as Markdown.
//
//	go test -run '^$' -bench . ./... | go run ./scripts/benchtable -o bench.md
//
// A figure whose benchmark did not run is shown as "not run", never
// guessed.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// results: benchmark name (without the -N suffix) -> unit -> value.
type results map[string]map[string]float64

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func parse(r io.Reader, echo io.Writer) (results, []string) {
	res := results{}
	var header []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if echo != nil {
			fmt.Fprintln(echo, line)
		}
		if strings.HasPrefix(line, "cpu:") || strings.HasPrefix(line, "goos:") {
			header = appendOnce(header, strings.TrimSpace(line))
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		vals := res[m[1]]
		if vals == nil {
			vals = map[string]float64{}
			res[m[1]] = vals
		}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				vals[f[i+1]] = v
			}
		}
	}
	return res, header
}

func appendOnce(l []string, s string) []string {
	for _, x := range l {
		if x == s {
			return l
		}
	}
	return append(l, s)
}

// get finds unit in the benchmark named name or any of its sub-benchmarks.
func (r results) get(name, unit string) (float64, bool) {
	if v, ok := r[name][unit]; ok {
		return v, true
	}
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasPrefix(n, name+"/") {
			if v, ok := r[n][unit]; ok {
				return v, true
			}
		}
	}
	return 0, false
}

type row struct {
	figure, bench  string
	unit, baseUnit string
	baseline       string // what the baseline is
	ratioUnit      string // a ratio the benchmark reports itself
	lowerBetter    bool
	target         string
	targetRatio    float64 // >= for ratios (<= when lowerBetter)
	targetValue    float64 // >= value (<= when lowerBetter); 0: none
}

var rows = []row{
	{figure: "Queue append, 64 appenders (fsync'd group commit)", bench: "BenchmarkAppend/appenders=64", unit: "appends/s", baseUnit: "raw-bbolt-records/s",
		baseline: "raw bbolt at the same records per transaction", ratioUnit: "ratio", target: ">= 0.6 of raw bbolt", targetRatio: 0.6},
	{figure: "MQTT live ingest (mosquitto)", bench: "BenchmarkIngestLive", unit: "msg/s", baseUnit: "null_msg/s", baseline: "null subscriber", ratioUnit: "ratio", target: ">= 0.9", targetRatio: 0.9},
	{figure: "MQTT backlog drain after an outage", bench: "BenchmarkIngestBacklog", unit: "msg/s", baseUnit: "null_msg/s", baseline: "null subscriber", ratioUnit: "ratio", target: ">= 0.9", targetRatio: 0.9},
	{figure: "MQTT backlog drain, CPU per message (µs)", bench: "BenchmarkIngestBacklog", unit: "gw_cpu_us/msg", baseUnit: "null_cpu_us/msg", baseline: "null subscriber", lowerBetter: true},
	{figure: "MQTT backlog drain, mosquitto CPU per message (µs)", bench: "BenchmarkIngestBacklog", unit: "gw_broker_cpu_us/msg", baseUnit: "null_broker_cpu_us/msg", baseline: "serving the null subscriber", lowerBetter: true},
	{figure: "OData added latency, p50 (ms)", bench: "BenchmarkAddedLatency", unit: "p50-queued-ms", baseUnit: "p50-direct-ms", baseline: "direct POST", lowerBetter: true},
	{figure: "OData added latency, p99 (ms)", bench: "BenchmarkAddedLatency", unit: "p99-queued-ms", baseUnit: "p99-direct-ms", baseline: "direct POST", lowerBetter: true},
	{figure: "Throttled OData throughput (records/s)", bench: "BenchmarkThrottledDelivery", unit: "plantgate-records/s", baseUnit: "budget-req/s", baseline: "F&O's budget", ratioUnit: "plantgate-of-budget"},
	{figure: "Throttled OData throughput vs a naive client", bench: "BenchmarkThrottledDelivery", unit: "plantgate-records/s", baseUnit: "naive-records/s", baseline: "naive client, same budget"},
	{figure: "DMF packaging, 1M lines (lines/s)", bench: "BenchmarkPackage1M/BestSpeed", unit: "lines/s", baseUnit: "", baseline: "deflate alone", target: ""},
	{figure: "DMF packaging peak RSS (MB)", bench: "BenchmarkPackage1M/BestSpeed", unit: "MB-peak-RSS", lowerBetter: true},
	{figure: "1M-record DMF backlog drain (s)", bench: "BenchmarkBacklogDrain1M", unit: "drain_s", baseUnit: "fo_import_wait_s", baseline: "of which F&O's import", lowerBetter: true},
	{figure: "OPC UA, 10,000 items (changes/s)", bench: "BenchmarkOPCUAIngest", unit: "changes/s", baseUnit: "null-changes/s", baseline: "null client", ratioUnit: "x-null", target: ">= 20k/s and >= 0.8", targetRatio: 0.8, targetValue: 20000},
	{figure: "OPC UA CPU (cores)", bench: "BenchmarkOPCUAIngest", unit: "cores", baseUnit: "null-cores", baseline: "null client", lowerBetter: true, target: "< 1 core", targetValue: 1},
	{figure: "Binary size (MB, static, stripped)", bench: "BenchmarkGatewayFootprint", unit: "binary-MB", lowerBetter: true, target: "<= 25", targetValue: 25},
	{figure: "Idle RSS (MB)", bench: "BenchmarkGatewayFootprint", unit: "idle-RSS-MB", lowerBetter: true, target: "<= 30", targetValue: 30},
	{figure: "RSS at full MQTT ingest (MB)", bench: "BenchmarkGatewayFootprint", unit: "ingest-peak-RSS-MB", lowerBetter: true, target: "<= 40", targetValue: 40},
	{figure: "Full MQTT ingest, real binary (msg/s)", bench: "BenchmarkGatewayFootprint", unit: "ingest-msg/s"},
	{figure: "Time to ready, 1M records queued (ms)", bench: "BenchmarkReadyWith1MQueued", unit: "ready-1M-ms", baseUnit: "ready-empty-ms", baseline: "empty queue", lowerBetter: true, target: "<= 300 ms", targetValue: 300},
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func table(r results, header []string, note string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# plantgate benchmarks\n\n%s, %s/%s, %d CPUs", time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	for _, h := range header {
		fmt.Fprintf(&b, ", %s", h)
	}
	if note != "" {
		fmt.Fprintf(&b, "\n\n%s", note)
	}
	b.WriteString("\n\n| figure | plantgate | baseline (same run) | ratio | target | met |\n|---|---|---|---|---|---|\n")
	for _, w := range rows {
		v, ok := r.get(w.bench, w.unit)
		if !ok {
			fmt.Fprintf(&b, "| %s | not run | | | %s | |\n", w.figure, w.target)
			continue
		}
		base, ratio := "", ""
		var rv float64
		haveRatio := false
		if w.baseUnit != "" {
			if bv, ok := r.get(w.bench, w.baseUnit); ok {
				base = num(bv) + " (" + w.baseline + ")"
				if bv != 0 {
					rv, haveRatio = v/bv, true
				}
			}
		}
		if w.ratioUnit != "" {
			if x, ok := r.get(w.bench, w.ratioUnit); ok {
				rv, haveRatio = x, true
			}
		}
		if w.bench == "BenchmarkPackage1M/BestSpeed" && w.unit == "lines/s" {
			if bv, ok := r.get("BenchmarkDeflateBaseline/BestSpeed", "lines/s"); ok {
				base = num(bv) + " (" + w.baseline + ")"
				rv, haveRatio = v/bv, true
			}
		}
		if haveRatio {
			ratio = num(rv)
		}
		met := ""
		if w.target != "" {
			good := true
			if w.targetRatio > 0 {
				good = good && haveRatio && rv >= w.targetRatio
			}
			if w.targetValue > 0 {
				if w.lowerBetter {
					good = good && v <= w.targetValue
				} else {
					good = good && v >= w.targetValue
				}
			}
			met = "yes"
			if !good {
				met = "**no**"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", w.figure, num(v), base, ratio, w.target, met)
	}
	return b.String()
}

func main() {
	out := flag.String("o", "bench.md", "Markdown file to write")
	note := flag.String("note", "", "a line about the machine and what else ran")
	flag.Parse()
	r, header := parse(os.Stdin, os.Stderr)
	if load, err := exec.Command("uptime").Output(); err == nil && *note == "" {
		*note = "Load at the end of the run: " + strings.TrimSpace(string(load)) + "."
	}
	t := table(r, header, *note)
	_, _ = io.WriteString(os.Stdout, t)
	if err := os.WriteFile(*out, []byte(t), 0o644); err != nil { //nolint:gosec // a report for people
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}
