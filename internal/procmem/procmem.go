// Package procmem gives back to the kernel the pages of file mappings the
// gateway no longer needs in its resident set: the queue file's map, which
// bbolt reads every page through, and the binary's code and read-only
// data, which start-up touches nearly all of.
//
// Both are clean file pages: MADV_DONTNEED on them drops them from this
// process's page tables only. The page cache keeps them and the next
// access maps a page again with a minor fault, so no data is read from
// disk and nothing written is lost; the kernel does the same on its own
// under memory pressure. No library offers this (it is two system calls
// and a walk of /proc/self/maps); it is written here so that each range
// is checked against what the kernel lists before it is advised, since
// MADV_DONTNEED on a private mapping with written pages would lose those
// writes.
//
// Off Linux every function does nothing.
package procmem

import "errors"

// Mapping is one mapping of a process's address space, as
// /proc/<pid>/smaps lists it.
type Mapping struct {
	Start, End uintptr
	Perms      string // r-xp, r--s, ...
	Dev        string // major:minor, hex
	Inode      uint64
	Path       string
	// Sizes in KiB: the mapping, its resident part, and the pages it
	// holds of its own (anonymous, copy-on-write).
	SizeKiB, RssKiB, AnonKiB int
}

// ErrNoMapping is returned when /proc/self/maps lists no mapping that
// may be released at the given place.
var ErrNoMapping = errors.New("no releasable file mapping found in /proc/self/maps")
