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

// mapping is one line of /proc/self/maps.
type mapping struct {
	start, end uintptr
	perms      string
	dev        string // major:minor, hex
	inode      uint64
	path       string
}

func readMaps() ([]mapping, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	var ms []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// 7f0c3a000000-7f0c4a000000 r--s 00000000 fd:01 131 /var/lib/plantgate/queue.db
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		ino, err3 := strconv.ParseUint(f[4], 10, 64)
		if !ok || err1 != nil || err2 != nil || err3 != nil || e <= s {
			continue
		}
		m := mapping{start: uintptr(s), end: uintptr(e), perms: f[1], dev: f[3], inode: ino}
		if len(f) >= 6 {
			m.path = f[5]
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

func devOf(st *unix.Stat_t) string {
	return fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev))
}

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
	ms, err := readMaps()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.start != start {
			continue
		}
		if m.perms != "r--s" || m.dev != devOf(&st) || m.inode != st.Ino {
			return ErrNoMapping
		}
		return dontNeed(m.start, m.end)
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
	ms, err := readMaps()
	if err != nil {
		return 0, err
	}
	sizes, err := readSmaps()
	if err != nil {
		return 0, err
	}
	released := false
	for _, m := range ms {
		if (m.perms != "r-xp" && m.perms != "r--p") || m.dev != devOf(&st) || m.inode != st.Ino {
			continue
		}
		r, ok := sizes[m.start]
		if !ok || r.anon != 0 {
			continue
		}
		if err := dontNeed(m.start, m.end); err != nil {
			return kib, err
		}
		kib += r.rss
		released = true
	}
	if !released {
		return 0, ErrNoMapping
	}
	return kib, nil
}

type smapsEntry struct{ rss, anon int }

// readSmaps reads the Rss and Anonymous sizes (KiB) of every mapping in
// /proc/self/smaps, by start address.
func readSmaps() (map[uintptr]smapsEntry, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	out := map[uintptr]smapsEntry{}
	var cur uintptr
	have := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if lo, _, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			s, err := strconv.ParseUint(lo, 16, 64)
			have = err == nil
			cur = uintptr(s)
			if have {
				out[cur] = smapsEntry{}
			}
			continue
		}
		if !have || len(f) < 2 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		e := out[cur]
		switch f[0] {
		case "Rss:":
			e.rss = n
		case "Anonymous:":
			e.anon = n
		}
		out[cur] = e
	}
	return out, sc.Err()
}
