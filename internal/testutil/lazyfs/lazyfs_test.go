package lazyfs_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/testutil/lazyfs"
)

// TestCutDropsUnsyncedData checks the simulation itself: after a cut, a
// file written with fsync keeps its bytes, one written without has none,
// and a clean Unmount keeps everything.
func TestCutDropsUnsyncedData(t *testing.T) {
	fs := lazyfs.Mount(t)
	data := bytes.Repeat([]byte("plantgate"), 1000)
	write := func(name string, sync bool) {
		f, err := os.Create(filepath.Join(fs.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if sync {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	size := func(name string) int {
		b, err := os.ReadFile(filepath.Join(fs.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	write("synced", true)
	write("unsynced", false)
	fs.Cut()
	fs.Remount()
	if n := size("synced"); n != len(data) {
		t.Fatalf("synced file has %d bytes after the cut, want %d", n, len(data))
	}
	if n := size("unsynced"); n != 0 {
		t.Fatalf("unsynced file has %d bytes after the cut, want 0 (the cut did not drop the cache)", n)
	}

	write("unsynced", false)
	fs.Unmount()
	fs.Remount()
	if n := size("unsynced"); n != len(data) {
		t.Fatalf("after a clean unmount the unsynced file has %d bytes, want %d", n, len(data))
	}
}

// fatalRecorder stands in for a test to see that Cut refuses a full
// cache: while expecting, a fatal error is recorded and ends only the
// goroutine; otherwise it fails the real test.
type fatalRecorder struct {
	testing.TB
	expecting bool
	msg       string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	if !r.expecting {
		r.TB.Fatalf(format, args...)
	}
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// TestCutRefusesFullCache: once LazyFS's cache is full it writes straight
// to the disk, so a cut would keep unsynced data; Cut must fail the test
// rather than let it pass on a cut that did not cut.
func TestCutRefusesFullCache(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	fs := lazyfs.MountWith(rec, lazyfs.Config{CacheSize: "1mb"})
	if err := os.WriteFile(filepath.Join(fs.Dir(), "big"), bytes.Repeat([]byte{1}, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	rec.expecting = true
	done := make(chan struct{})
	go func() {
		defer close(done)
		fs.Cut()
	}()
	<-done
	rec.expecting = false
	if !strings.Contains(rec.msg, "cache is full") {
		t.Fatalf("Cut with a full cache: got %q, want a failure about the full cache", rec.msg)
	}
	if u := fs.MaxCacheUsage(); u < 99.9 {
		t.Fatalf("MaxCacheUsage = %.1f, want 100", u)
	}
}
