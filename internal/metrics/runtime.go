package metrics

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// runtimeCollector exports the Go runtime's and the process's basics:
// goroutines, heap, GC, resident memory, open files, CPU and start time.
type runtimeCollector struct {
	goroutines, heap, sys, gcs, rss, fds, cpu, start *Desc
	started                                          time.Time
}

// NewRuntimeCollector returns the go_* and process_* collector.
func NewRuntimeCollector() Collector {
	return &runtimeCollector{
		goroutines: NewDesc("go_goroutines", "Number of goroutines that currently exist.", nil, nil),
		heap:       NewDesc("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use.", nil, nil),
		sys:        NewDesc("go_memstats_sys_bytes", "Number of bytes obtained from the system.", nil, nil),
		gcs:        NewDesc("go_gc_cycles_total", "Number of completed GC cycles.", nil, nil),
		rss:        NewDesc("process_resident_memory_bytes", "Resident memory size in bytes.", nil, nil),
		fds:        NewDesc("process_open_fds", "Number of open file descriptors.", nil, nil),
		cpu:        NewDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", nil, nil),
		start:      NewDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", nil, nil),
		started:    time.Now(),
	}
}

func (c *runtimeCollector) Describe(ch chan<- *Desc) {
	for _, d := range []*Desc{c.goroutines, c.heap, c.sys, c.gcs, c.rss, c.fds, c.cpu, c.start} {
		ch <- d
	}
}

func (c *runtimeCollector) Collect(ch chan<- Metric) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ch <- MustNewConstMetric(c.goroutines, GaugeValue, float64(runtime.NumGoroutine()))
	ch <- MustNewConstMetric(c.heap, GaugeValue, float64(ms.HeapAlloc))
	ch <- MustNewConstMetric(c.sys, GaugeValue, float64(ms.Sys))
	ch <- MustNewConstMetric(c.gcs, CounterValue, float64(ms.NumGC))
	ch <- MustNewConstMetric(c.start, GaugeValue, float64(c.started.Unix()))
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command name (which may contain spaces).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b)[i+1:])
			if len(f) > 22 {
				utime, _ := strconv.ParseFloat(f[11], 64)
				stime, _ := strconv.ParseFloat(f[12], 64)
				rssPages, _ := strconv.ParseFloat(f[21], 64)
				ch <- MustNewConstMetric(c.cpu, CounterValue, (utime+stime)/100) // USER_HZ is 100 on Linux
				ch <- MustNewConstMetric(c.rss, GaugeValue, rssPages*float64(os.Getpagesize()))
			}
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		ch <- MustNewConstMetric(c.fds, GaugeValue, float64(len(ents)))
	}
}
