//go:build linux

package procmem

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// parseHeader reads a mapping's line of /proc/<pid>/maps, which is also
// the first line of its entry in smaps:
//
//	7f0c3a000000-7f0c4a000000 r--s 00000000 fd:01 131 /var/lib/plantgate/queue.db
func parseHeader(line string) (Mapping, bool) {
	f := strings.Fields(line)
	if len(f) < 5 || strings.HasSuffix(f[0], ":") {
		return Mapping{}, false
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	s, err1 := strconv.ParseUint(lo, 16, 64)
	e, err2 := strconv.ParseUint(hi, 16, 64)
	ino, err3 := strconv.ParseUint(f[4], 10, 64)
	if !ok || err1 != nil || err2 != nil || err3 != nil || e <= s {
		return Mapping{}, false
	}
	m := Mapping{Start: uintptr(s), End: uintptr(e), Perms: f[1], Dev: f[3], Inode: ino}
	if len(f) >= 6 {
		m.Path = f[5]
	}
	return m, true
}

// Smaps reads the mappings of process pid (0: this one) with their sizes
// from /proc/<pid>/smaps. The kernel walks the page tables to answer, so
// it is for occasional use; the periodic release reads maps instead.
func Smaps(pid int) ([]Mapping, error) {
	file := "/proc/self/smaps"
	if pid != 0 {
		file = fmt.Sprintf("/proc/%d/smaps", pid)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var ms []Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if m, ok := parseHeader(line); ok {
			ms = append(ms, m)
			continue
		}
		f := strings.Fields(line)
		if len(ms) == 0 || len(f) < 2 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		m := &ms[len(ms)-1]
		switch f[0] {
		case "Size:":
			m.SizeKiB = n
		case "Rss:":
			m.RssKiB = n
		case "Anonymous:":
			m.AnonKiB = n
		}
	}
	return ms, sc.Err()
}

func devOf(st *unix.Stat_t) string {
	return fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev))
}

func (m Mapping) of(st *unix.Stat_t) bool { return m.Dev == devOf(st) && m.Inode == st.Ino }

func dontNeed(start, end uintptr) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}

// ReleaseSharedReadOnly drops the resident pages of the mapping that
// starts at start, if it is a shared read-only mapping of the file at
// path (matched by device and inode, so a path through a symlink matches
// too); else it returns ErrNoMapping and advises nothing. The caller must
// keep the mapping from being unmapped meanwhile.
func ReleaseSharedReadOnly(start uintptr, path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		m, ok := parseHeader(sc.Text())
		if !ok || m.Start != start {
			continue
		}
		if m.Perms != "r--s" || !m.of(&st) {
			return ErrNoMapping
		}
		return dontNeed(m.Start, m.End)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return ErrNoMapping
}

// ReleaseExecutable drops the resident pages of the running binary's
// code and read-only data: its private mappings that cannot be written
// (r-xp and r--p) of the file /proc/self/exe names. A mapping that holds
// a page of its own (Anonymous in smaps: a copy-on-write page, which
// MADV_DONTNEED would lose) is left alone. It returns how many KiB were
// resident in the mappings it released.
func ReleaseExecutable() (kib int, err error) {
	return releasePrivateReadOnly("/proc/self/exe")
}

// releasePrivateReadOnly is ReleaseExecutable for any file.
func releasePrivateReadOnly(path string) (kib int, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	ms, err := Smaps(0)
	if err != nil {
		return 0, err
	}
	released := false
	for _, m := range ms {
		if (m.Perms != "r-xp" && m.Perms != "r--p") || !m.of(&st) || m.AnonKiB != 0 {
			continue
		}
		if err := dontNeed(m.Start, m.End); err != nil {
			return kib, err
		}
		kib += m.RssKiB
		released = true
	}
	if !released {
		return 0, ErrNoMapping
	}
	return kib, nil
}
