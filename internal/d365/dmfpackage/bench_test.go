package dmfpackage

import (
	"archive/zip"
	"bufio"
	"compress/flate"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchLines is the size of the benchmark package. The 1M-line benchmarks
// run only with -bench; a plain `go test` runs none of them.
const benchLines = 1_000_000

var benchLevels = []struct {
	name  string
	level int
}{
	{"BestSpeed", flate.BestSpeed},
	{"Default", 6},
}

// benchSpec is a typical picking list line: five columns.
func benchSpec(level int) Spec {
	return Spec{DefinitionGroup: "Bench", CompressionLevel: level, Entities: []Entity{{
		Label:   "Production order picking list journal lines",
		Columns: []string{"JOURNALNUMBER", "LINENUMBER", "ITEMNUMBER", "BOMPROPOSALQUANTITY", "CONSUMPTIONDATE"},
	}}}
}

var benchItems = func() []string {
	s := make([]string, 500)
	for i := range s {
		s[i] = fmt.Sprintf("RM-%04d", 1000+i*7)
	}
	return s
}()

var benchJournals = func() []string {
	s := make([]string, 1000)
	for i := range s {
		s[i] = fmt.Sprintf("PJ-%06d", i)
	}
	return s
}()

// fillRow sets the values of line i in m (one map reused for every line, as
// a caller draining a queue would).
func fillRow(m map[string]any, i int) {
	m["JOURNALNUMBER"] = benchJournals[(i/1000)%len(benchJournals)]
	m["LINENUMBER"] = i%1000 + 1
	m["ITEMNUMBER"] = benchItems[(i*31)%len(benchItems)]
	m["BOMPROPOSALQUANTITY"] = float64(i%977) / 8
	m["CONSUMPTIONDATE"] = Date{2026, time.Month(1 + i%12), 1 + i%28}
}

// peakSampler records the largest heap in use while it runs.
type peakSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func startPeak() *peakSampler {
	p := &peakSampler{stop: make(chan struct{})}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			p.peak = max(p.peak, ms.HeapInuse)
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peakSampler) end() uint64 {
	close(p.stop)
	p.done.Wait()
	return p.peak
}

// vmHWM returns the process's peak resident set (VmHWM) in bytes, 0 if
// unknown.
func vmHWM() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkPackage1M builds a 1,000,000-line CSV-Unicode package to a
// discarding writer and reports lines/s, the peak heap in use and the peak
// RSS of the process (VmHWM, reset before the run where Linux allows).
func BenchmarkPackage1M(b *testing.B) {
	for _, lv := range benchLevels {
		b.Run(lv.name, func(b *testing.B) {
			runtime.GC()
			_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset VmHWM
			peak := startPeak()
			spec := benchSpec(lv.level)
			row := map[string]any{}
			var st Stats
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				out := &countingDiscard{}
				bl, err := New(out, spec, b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				for i := range benchLines {
					fillRow(row, i)
					if _, err := bl.Add(0, row); err != nil {
						b.Fatal(err)
					}
				}
				if st, err = bl.Close(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			heap := peak.end()
			b.ReportMetric(float64(benchLines)*float64(b.N)/elapsed.Seconds(), "lines/s")
			b.ReportMetric(float64(heap)/(1<<20), "MB-peak-heap")
			b.ReportMetric(float64(vmHWM())/(1<<20), "MB-peak-RSS")
			b.ReportMetric(float64(st.Entities[0].UncompressedBytes)/(1<<20), "MB-csv")
			b.ReportMetric(float64(st.ZipBytes)/(1<<20), "MB-zip")
		})
	}
}

// BenchmarkDeflateBaseline deflates the uncompressed bytes of the same
// 1M-line data file (made untimed, from a package the builder writes) at the
// same level, and reports the lines/s that pure deflate reaches: the ceiling
// for BenchmarkPackage1M.
func BenchmarkDeflateBaseline(b *testing.B) {
	for _, lv := range benchLevels {
		b.Run(lv.name, func(b *testing.B) {
			b.StopTimer()
			path := benchDataFile(b)
			b.StartTimer()
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			chunk := make([]byte, 1<<20)
			var deflating time.Duration
			b.ResetTimer()
			for range b.N {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				fw, _ := flate.NewWriter(io.Discard, lv.level)
				for {
					n, err := io.ReadFull(f, chunk)
					if n > 0 {
						t0 := time.Now()
						_, _ = fw.Write(chunk[:n])
						deflating += time.Since(t0)
					}
					if err != nil {
						break
					}
				}
				t0 := time.Now()
				_ = fw.Close()
				deflating += time.Since(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(benchLines)*float64(b.N)/deflating.Seconds(), "lines/s")
		})
	}
}

// benchDataFile writes the uncompressed 1M-line data file, untimed, into
// the benchmark's temporary directory and returns its path.
func benchDataFile(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	zpath := filepath.Join(dir, "package.zip")
	zf, err := os.Create(zpath)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriter(zf)
	bl, err := New(bw, benchSpec(flate.BestSpeed), dir)
	if err != nil {
		b.Fatal(err)
	}
	row := map[string]any{}
	for i := range benchLines {
		fillRow(row, i)
		if _, err := bl.Add(0, row); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := bl.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	_ = zf.Close()
	zr, err := zip.OpenReader(zpath)
	if err != nil {
		b.Fatal(err)
	}
	defer zr.Close()
	path := filepath.Join(dir, "lines.csv")
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, ".csv") {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(out, rc)
		_ = rc.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// BenchmarkAddRow measures one Add of a typical line (short benchmark).
func BenchmarkAddRow(b *testing.B) {
	bl, err := New(io.Discard, benchSpec(flate.BestSpeed), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer bl.Abort()
	row := map[string]any{}
	fillRow(row, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bl.Add(0, row); err != nil {
			b.Fatal(err)
		}
	}
}
