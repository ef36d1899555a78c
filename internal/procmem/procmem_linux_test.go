//go:build linux

package procmem

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"unsafe"

	"golang.org/x/sys/unix"
)

const pages = 256 // 1 MiB of 4 KiB pages

// residentKiB is the Rss of the mapping that starts at start.
func residentKiB(t *testing.T, start uintptr) int {
	t.Helper()
	ms, err := Smaps(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Start == start {
			return m.RssKiB
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", start)
	return 0
}

// fileOf writes a file of pages pages, each filled with its number.
func fileOf(t *testing.T) (string, []byte) {
	t.Helper()
	want := make([]byte, pages*4096)
	for i := range want {
		want[i] = byte(i / 4096)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, want
}

func mapFile(t *testing.T, path string, prot, flags int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), 0, pages*4096, prot, flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(b) })
	return b
}

var sink int

// touch reads every page of b.
func touch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		sink += int(b[i])
	}
}

func start(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// A shared read-only map of a file (bbolt's) leaves the resident set and
// reads back unchanged.
func TestReleaseSharedReadOnlyDropsPages(t *testing.T) {
	path, want := fileOf(t)
	b := mapFile(t, path, unix.PROT_READ, unix.MAP_SHARED)
	touch(b)
	before := residentKiB(t, start(b))
	if before < pages*4/2 {
		t.Fatalf("only %d KiB resident after reading every page", before)
	}
	if err := ReleaseSharedReadOnly(start(b), path); err != nil {
		t.Fatal(err)
	}
	after := residentKiB(t, start(b))
	if after > before/4 {
		t.Fatalf("resident %d KiB before the release, %d after", before, after)
	}
	if !bytes.Equal(b, want) {
		t.Fatal("the mapping reads back different bytes after the release")
	}
}

// Anything else at that address, or a mapping of another file, is left
// alone: a private writable map could lose what was written to it.
func TestReleaseSharedReadOnlyRefusesOtherMappings(t *testing.T) {
	path, want := fileOf(t)
	other, _ := fileOf(t)
	priv := mapFile(t, path, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	priv[0] = 0xAA // a copy-on-write page of this process's own
	shared := mapFile(t, path, unix.PROT_READ, unix.MAP_SHARED)
	touch(shared)
	for name, c := range map[string]struct {
		b    []byte
		path string
	}{"private writable map": {priv, path}, "another file": {shared, other}} {
		before := residentKiB(t, start(c.b))
		if err := ReleaseSharedReadOnly(start(c.b), c.path); !errors.Is(err, ErrNoMapping) {
			t.Fatalf("%s: got %v, want ErrNoMapping", name, err)
		}
		if after := residentKiB(t, start(c.b)); after < before {
			t.Fatalf("%s: resident %d KiB before, %d after: it was released", name, before, after)
		}
	}
	if priv[0] != 0xAA || !bytes.Equal(priv[1:], want[1:]) {
		t.Fatal("the private map lost what was written to it")
	}
	if err := ReleaseSharedReadOnly(start(shared)+4096, path); !errors.Is(err, ErrNoMapping) {
		t.Fatalf("an address inside a mapping: got %v, want ErrNoMapping", err)
	}
}

// The private read-only maps of a file (the binary's code and data) are
// released, except one holding a page written before it was made
// read-only, whose write must survive.
func TestReleasePrivateReadOnlySkipsWrittenMappings(t *testing.T) {
	path, want := fileOf(t)
	clean := mapFile(t, path, unix.PROT_READ, unix.MAP_PRIVATE)
	written := mapFile(t, path, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	written[4096] = 0xAA
	if err := unix.Mprotect(written, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	touch(clean)
	touch(written)
	cleanBefore, writtenBefore := residentKiB(t, start(clean)), residentKiB(t, start(written))
	kib, err := releasePrivateReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	if after := residentKiB(t, start(clean)); after > cleanBefore/4 {
		t.Fatalf("clean map: resident %d KiB before, %d after", cleanBefore, after)
	}
	if kib < cleanBefore || kib >= cleanBefore+writtenBefore {
		t.Fatalf("reported %d KiB released; the clean map held %d, the written one %d", kib, cleanBefore, writtenBefore)
	}
	if after := residentKiB(t, start(written)); after < writtenBefore {
		t.Fatalf("written map: resident %d KiB before, %d after: it was released", writtenBefore, after)
	}
	if written[4096] != 0xAA {
		t.Fatal("the written page was lost")
	}
	if !bytes.Equal(clean, want) {
		t.Fatal("the clean map reads back different bytes after the release")
	}
}

// The test binary itself: its code leaves the resident set and the
// process goes on running.
func TestReleaseExecutable(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := Smaps(0)
	if err != nil {
		t.Fatal(err)
	}
	var text Mapping
	for _, m := range ms {
		if m.Path == exe && m.Perms == "r-xp" {
			text = m
		}
	}
	if text.Start == 0 {
		t.Fatalf("no r-xp mapping of %s", exe)
	}
	// Map all of the code in first (reading it through /proc/self/mem
	// faults each page in), so that what the release drops is not lost
	// in what running the test maps back.
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := text.Start; off < text.End; off += uintptr(len(buf)) {
		n := min(uintptr(len(buf)), text.End-off)
		if _, err := mem.ReadAt(buf[:n], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	_ = mem.Close()
	before := residentKiB(t, text.Start)
	if before < int(text.End-text.Start)>>10/2 {
		t.Fatalf("only %d of %d KiB of code resident after reading it all", before, (text.End-text.Start)>>10)
	}
	kib, err := ReleaseExecutable()
	if err != nil {
		t.Fatal(err)
	}
	after := residentKiB(t, text.Start)
	t.Logf("code resident %d KiB before, %d after; %d KiB released in all", before, after, kib)
	// Reading smaps runs code again, which maps some of it back.
	if after >= before || kib < before {
		t.Fatalf("code resident %d KiB before the release, %d after (%d KiB reported)", before, after, kib)
	}
}
