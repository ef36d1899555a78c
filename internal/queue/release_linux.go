//go:build linux

package queue

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releaseMapped drops the pages of the queue file's memory map from the
// process's resident set.
//
// bbolt maps the whole file read-only and reads every page through that
// map, so each page it ever read (every leaf an append went through)
// stays in the gateway's RSS: with records queued during an outage, RSS
// grew with the queue, though those pages are the kernel's page cache,
// which it can drop and fill again at will. MADV_DONTNEED on a shared,
// read-only file mapping removes them from this process only: the page
// cache keeps them, the data is not touched (bbolt writes with pwrite,
// never through the map), and the next read maps a page again with a
// minor fault. A read transaction holds bbolt's mmap lock, so the map
// cannot move while this runs; the range is the one mapping the kernel
// lists at the map's start, and nothing is done unless it is a shared,
// read-only mapping of the queue file (same device and inode).
func (s *Store) releaseMapped() error {
	return s.db.View(func(*bolt.Tx) error {
		start := s.db.Info().Data
		end, err := fileMappingEnd(start, s.db.Path())
		if err != nil {
			return err
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); e != 0 {
			return e
		}
		return nil
	})
}

var errNoMapping = errors.New("queue file mapping not found in /proc/self/maps")

// fileMappingEnd finds the mapping that starts at start in
// /proc/self/maps and returns its end, if it is a shared read-only
// mapping of the file at path (matched by device and inode, so a data
// directory reached through a symlink matches too).
func fileMappingEnd(start uintptr, path string) (uintptr, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	want := strconv.FormatUint(uint64(start), 16) + "-"
	dev := fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, want) {
			continue
		}
		// 7f0c3a000000-7f0c4a000000 r--s 00000000 fd:01 131 /var/lib/plantgate/queue.db
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "r--s" || fields[3] != dev || fields[4] != strconv.FormatUint(st.Ino, 10) {
			return 0, errNoMapping
		}
		end, err := strconv.ParseUint(strings.TrimPrefix(fields[0], want), 16, 64)
		if err != nil || uintptr(end) <= start {
			return 0, errNoMapping
		}
		return uintptr(end), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errNoMapping
}
