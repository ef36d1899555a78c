// Package lazyfs mounts a LazyFS for tests: a FUSE file system with a page
// cache of its own that drops every byte not yet fsync'd on command, which
// simulates a power cut. A SIGKILL cannot show a missing fsync (the kernel
// still writes its page cache out); a power cut through LazyFS can.
//
// A test mounts one with Mount, runs the program under test with its data
// under Dir, kills the program (SIGKILL, and waits for it to exit), calls
// Cut, then Remount and checks what survived:
//
//	fs := lazyfs.Mount(t)
//	// ... start the program on fs.Dir(), let it acknowledge writes ...
//	// kill it and wait for it to exit, then:
//	fs.Cut()     // every unsynced byte is gone; LazyFS is unmounted
//	fs.Remount() // fs.Dir() now shows what was on "disk"
//
// The LazyFS binary is built by `make tools` (scripts/install-test-tools.sh)
// into .tools/lazyfs. Mount finds it through PLANTGATE_LAZYFS (the binary),
// PLANTGATE_TOOLS (the tools directory, exported by make) or the module's
// .tools directory. When it is not there, Mount skips the test, or fails it
// when CI or PLANTGATE_REQUIRE_LAZYFS=1 is set; under -short it skips.
//
// Limits of the simulation: LazyFS writes file creation, renames and
// directory entries straight to the disk, so a cut cannot lose them.
package lazyfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binRel is where scripts/install-test-tools.sh leaves the binary, relative
// to the tools directory (build.sh DEST prints DEST/lazyfs/build/lazyfs).
const binRel = "lazyfs/lazyfs/build/lazyfs"

// commandTimeout bounds the wait for one fifo command and for mounting.
const commandTimeout = 30 * time.Second

// FS is one LazyFS mount over a temporary directory. Its methods must be
// called from the test's goroutine (they fail the test on errors).
type FS struct {
	t         testing.TB
	bin       string
	work      string // config, fifos and log
	mnt       string // the mount point: the file system under test
	root      string // the backing directory LazyFS writes through to
	conf      string
	fifo      string // commands
	completed string // LazyFS writes "finished::clear-cache" here

	doneR *os.File    // read end of completed, held for the FS's life
	doneC chan string // lines read from completed

	mu      sync.Mutex
	log     strings.Builder // LazyFS's output, all mounts
	logCond *sync.Cond

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current LazyFS process exited
	maxUsage float64       // highest cache usage seen, percent
}

// Binary returns the path of the LazyFS binary, or "" and why it is
// missing.
func Binary() (string, string) {
	if p := os.Getenv("PLANTGATE_LAZYFS"); p != "" {
		if isExec(p) {
			return p, ""
		}
		return "", fmt.Sprintf("PLANTGATE_LAZYFS=%s is not an executable", p)
	}
	var tried []string
	if d := os.Getenv("PLANTGATE_TOOLS"); d != "" {
		p := filepath.Join(d, binRel)
		if isExec(p) {
			return p, ""
		}
		tried = append(tried, p)
	}
	if root := moduleRoot(); root != "" {
		p := filepath.Join(root, ".tools", binRel)
		if isExec(p) {
			return p, ""
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath("lazyfs"); err == nil {
		return p, ""
	}
	return "", fmt.Sprintf("no lazyfs binary (looked at %s and in PATH)", strings.Join(tried, ", "))
}

func isExec(p string) bool {
	fi, err := os.Stat(p) //nolint:gosec // a test tool's own path
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// moduleRoot is the nearest directory above the working directory (a
// package directory under go test) that holds go.mod.
func moduleRoot() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		up := filepath.Dir(d)
		if up == d {
			return ""
		}
		d = up
	}
}

// Required reports whether a missing LazyFS fails the test instead of
// skipping it: in CI, or with PLANTGATE_REQUIRE_LAZYFS=1.
func Required() bool {
	return os.Getenv("CI") != "" || os.Getenv("PLANTGATE_REQUIRE_LAZYFS") == "1"
}

// Available skips (or, when Required, fails) the test unless LazyFS can be
// mounted here, and returns the binary. Under -short it skips.
func Available(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("power-cut test on LazyFS; skipped under -short")
	}
	bin, why := Binary()
	if bin == "" {
		missing(t, why)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		missing(t, "fusermount3 is not installed (Debian package fuse3)")
	}
	if _, err := exec.LookPath("mountpoint"); err != nil {
		missing(t, "mountpoint is not installed (Debian package util-linux)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing(t, "/dev/fuse is missing: "+err.Error())
	}
	return bin
}

func missing(t testing.TB, why string) {
	t.Helper()
	msg := "LazyFS is not available (" + why + "): run `make tools`, which builds it into .tools/lazyfs from ../shared/tools/lazyfs"
	if Required() {
		t.Fatal(msg)
	}
	t.Skip(msg + "; skipped (set PLANTGATE_REQUIRE_LAZYFS=1 to fail instead)")
}

// Config tunes a mount. The zero value is usable.
type Config struct {
	// CacheSize is LazyFS's page cache, e.g. "256mb" (empty: 256mb). It
	// must hold every page written during one mount: synced pages stay
	// cached, eviction is off, and once the cache is full LazyFS writes
	// straight to the disk, where a cut cannot drop the data (Cut then
	// fails the test). LazyFS allocates it at each mount, about 1.3 s
	// per GB.
	CacheSize string
}

// Mount mounts a LazyFS over a fresh temporary directory and returns it
// mounted. The test's cleanup unmounts it.
func Mount(t testing.TB) *FS {
	t.Helper()
	return MountWith(t, Config{})
}

// MountWith is Mount with a Config.
func MountWith(t testing.TB, c Config) *FS {
	t.Helper()
	bin := Available(t)
	if c.CacheSize == "" {
		c.CacheSize = "256mb"
	}
	// t.TempDir's RemoveAll must not run into a live mount; cleanups run
	// last-in first-out, so the unmount registered below runs first.
	work := t.TempDir()
	f := &FS{
		t: t, bin: bin, work: work,
		mnt: filepath.Join(work, "mnt"), root: filepath.Join(work, "root"),
		conf: filepath.Join(work, "lazyfs.toml"), fifo: filepath.Join(work, "faults.fifo"),
		completed: filepath.Join(work, "completed.fifo"),
		doneC:     make(chan string, 16),
	}
	f.logCond = sync.NewCond(&f.mu)
	for _, d := range []string{f.mnt, f.root} {
		if err := os.Mkdir(d, 0o755); err != nil { //nolint:gosec // a FUSE mount point mounted allow_other
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`[faults]
fifo_path=%q
fifo_path_completed=%q
[cache]
apply_eviction=false
[cache.simple]
custom_size=%q
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
`, f.fifo, f.completed, c.CacheSize)
	if err := os.WriteFile(f.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.fifo, f.completed} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// LazyFS opens the completion fifo write-only, which blocks until it
	// has a reader: hold one (O_RDWR never blocks) for the FS's life.
	r, err := os.OpenFile(f.completed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.doneR = r
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f.doneC <- sc.Text()
		}
		close(f.doneC)
	}()
	t.Cleanup(f.cleanup)
	f.mount()
	return f
}

// Dir is the mount point: put the files under test here.
func (f *FS) Dir() string { return f.mnt }

// Backing is the directory LazyFS writes through to (what is "on disk").
func (f *FS) Backing() string { return f.root }

// Mounted reports whether LazyFS is mounted.
func (f *FS) Mounted() bool { return f.cmd != nil }

// Log returns LazyFS's output so far (all mounts).
func (f *FS) Log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.log.String()
}

func (f *FS) mount() {
	f.t.Helper()
	if f.cmd != nil {
		f.t.Fatal("lazyfs: already mounted")
	}
	//nolint:gosec // the test's own LazyFS build and temp dirs
	cmd := exec.Command(f.bin, f.mnt, "--config-path", f.conf,
		"-o", "allow_other", "-o", "modules=subdir", "-o", "subdir="+f.root, "-f")
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	// Its own process group, so a Ctrl-C of go test does not take LazyFS
	// down before the cleanup has unmounted it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f.mu.Lock()
	mark := f.log.Len()
	f.mu.Unlock()
	if err := cmd.Start(); err != nil {
		f.t.Fatalf("lazyfs: start %s: %v", f.bin, err)
	}
	exited := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.mu.Lock()
			f.log.WriteString(sc.Text())
			f.log.WriteByte('\n')
			f.logCond.Broadcast()
			f.mu.Unlock()
		}
	}()
	go func() {
		<-scanned
		_ = cmd.Wait()
		close(exited)
		f.mu.Lock()
		f.logCond.Broadcast()
		f.mu.Unlock()
	}()
	f.cmd, f.exited = cmd, exited
	deadline := time.Now().Add(commandTimeout)
	for exec.Command("mountpoint", "-q", f.mnt).Run() != nil { //nolint:gosec // the test's own mount point
		select {
		case <-exited:
			f.cmd = nil
			f.t.Fatalf("lazyfs exited before mounting %s:\n%s", f.mnt, f.Log())
		default:
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("lazyfs: %s not mounted after %s:\n%s", f.mnt, commandTimeout, f.Log())
		}
		<-time.After(10 * time.Millisecond)
	}
	// Commands written before the fault worker opened its fifo would be
	// read anyway, but wait so that a broken worker shows here.
	f.waitLog(mark, "waiting for fault commands")
}

// waitLog waits until text appears in the log after byte offset from and
// returns the offset just past it.
func (f *FS) waitLog(from int, text string) int {
	f.t.Helper()
	deadline := time.Now().Add(commandTimeout)
	timer := time.AfterFunc(commandTimeout, func() {
		f.mu.Lock()
		f.logCond.Broadcast()
		f.mu.Unlock()
	})
	defer timer.Stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		s := f.log.String()
		if from > len(s) {
			from = len(s)
		}
		if i := strings.Index(s[from:], text); i >= 0 {
			return from + i + len(text)
		}
		select {
		case <-f.exited:
			f.t.Fatalf("lazyfs exited while waiting for %q:\n%s", text, s)
		default:
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("lazyfs: no %q after %s:\n%s", text, commandTimeout, s)
		}
		f.logCond.Wait()
	}
}

// Command sends one fault command (e.g. "lazyfs::unsynced-data-report")
// and waits until LazyFS has read it. LazyFS can read two commands
// written back to back as one unknown command, so commands are sent one
// at a time. Clear-cache has its own method, CutCache, which waits for the
// command to complete.
func (f *FS) Command(c string) {
	f.t.Helper()
	f.commandWait(c, "'"+c+"'")
}

// commandWait sends c and waits for done in LazyFS's output after it; it
// returns the rest of that line.
func (f *FS) commandWait(c, done string) string {
	f.t.Helper()
	f.mu.Lock()
	mark := f.log.Len()
	f.mu.Unlock()
	f.send(c)
	end := f.waitLog(mark, done)
	s := f.Log()[end:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// CacheUsage returns how full LazyFS's page cache is, in percent of its
// pages (lazyfs::display-cache-usage).
func (f *FS) CacheUsage() float64 {
	f.t.Helper()
	rest := f.commandWait("lazyfs::display-cache-usage", "cache usage (%pages) is ")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "%")), 64)
	if err != nil {
		f.t.Fatalf("lazyfs: cannot read the cache usage from %q", rest)
	}
	f.maxUsage = max(f.maxUsage, v)
	return v
}

// MaxCacheUsage is the highest cache usage seen at a cut, in percent.
func (f *FS) MaxCacheUsage() float64 { return f.maxUsage }

func (f *FS) send(c string) {
	f.t.Helper()
	if f.cmd == nil {
		f.t.Fatalf("lazyfs: %s sent while not mounted", c)
	}
	// LazyFS holds its fifo open for reading while it runs, so a
	// non-blocking write-only open succeeds; ENXIO means it is gone.
	w, err := os.OpenFile(f.fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		f.t.Fatalf("lazyfs: open fifo for %s: %v\n%s", c, err, f.Log())
	}
	defer w.Close()
	if _, err := w.WriteString(c + "\n"); err != nil {
		f.t.Fatalf("lazyfs: write %s: %v", c, err)
	}
}

// CutCache drops every byte not yet fsync'd (lazyfs::clear-cache) and
// waits until LazyFS reports it done. Kill the program under test first:
// otherwise it can write after the cut.
//
// It fails the test when the cache is full: LazyFS then writes straight
// to the disk, so unsynced writes would survive and the cut would prove
// nothing; raise Config.CacheSize.
func (f *FS) CutCache() {
	f.t.Helper()
	if u := f.CacheUsage(); u >= 99.9 {
		f.t.Fatalf("lazyfs: the cache is full (%.1f%% of its pages): writes beyond it went straight to the disk and a cut would not drop them; raise lazyfs.Config.CacheSize", u)
	}
	f.clearCache()
}

func (f *FS) clearCache() {
	f.t.Helper()
	// Drain stale notifications (none expected).
	for {
		select {
		case <-f.doneC:
			continue
		default:
		}
		break
	}
	f.send("lazyfs::clear-cache")
	select {
	case l, ok := <-f.doneC:
		if !ok {
			f.t.Fatal("lazyfs: completion fifo closed")
		}
		if l != "finished::clear-cache" {
			f.t.Fatalf("lazyfs: unexpected completion %q", l)
		}
	case <-f.exited:
		f.t.Fatalf("lazyfs exited during clear-cache:\n%s", f.Log())
	case <-time.After(commandTimeout):
		f.t.Fatalf("lazyfs: clear-cache not finished after %s:\n%s", commandTimeout, f.Log())
	}
}

// Cut is the power cut: it drops every unsynced byte and unmounts. Call it
// after the program under test was killed and has exited; Remount then
// shows what survived.
func (f *FS) Cut() {
	f.t.Helper()
	f.CutCache()
	f.unmount()
}

// Unmount stops LazyFS without a cut: it writes the cache out first
// (lazyfs::cache-checkpoint), since LazyFS drops unsynced data when it
// stops.
func (f *FS) Unmount() {
	f.t.Helper()
	f.commandWait("lazyfs::cache-checkpoint", "checkpoint is done.")
	f.unmount()
}

// Remount mounts LazyFS again over the same backing directory.
func (f *FS) Remount() {
	f.t.Helper()
	f.mount()
}

func (f *FS) unmount() {
	f.t.Helper()
	if err := f.tryUnmount(); err != nil {
		f.t.Fatal(err)
	}
}

// tryUnmount unmounts and waits for LazyFS to exit. A busy mount (a
// process still has a file open) is retried for a while, then detached
// lazily.
func (f *FS) tryUnmount() error {
	if f.cmd == nil {
		return nil
	}
	defer func() { f.cmd = nil }()
	var last []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("fusermount3", "-u", f.mnt).CombinedOutput() //nolint:gosec // the test's own mount point
		if err == nil {
			break
		}
		last = out
		select {
		case <-f.exited: // gone already (it crashed, or was killed)
			_ = exec.Command("fusermount3", "-uz", f.mnt).Run() //nolint:gosec // the test's own mount point
			return fmt.Errorf("lazyfs had exited before the unmount (%s):\n%s", strings.TrimSpace(string(out)), f.Log())
		default:
		}
		if time.Now().After(deadline) {
			_ = exec.Command("fusermount3", "-uz", f.mnt).Run() //nolint:gosec // the test's own mount point
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	select {
	case <-f.exited:
	case <-time.After(commandTimeout):
		_ = f.cmd.Process.Kill()
		<-f.exited
		return fmt.Errorf("lazyfs did not exit after the unmount (killed it); last fusermount3: %s", last)
	}
	return nil
}

func (f *FS) cleanup() {
	if f.cmd != nil {
		if err := f.tryUnmount(); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.t.Log(err)
		}
	}
	if f.doneR != nil {
		_ = f.doneR.Close()
	}
}

// Cuts is the number of power cuts a test makes: flagged (a -powercut.cuts
// flag of the test binary) when set, else $PLANTGATE_POWERCUT_CUTS, else
// def. make e2e-long raises it.
func Cuts(flagged, def int) int {
	if flagged > 0 {
		return flagged
	}
	if n, err := strconv.Atoi(os.Getenv("PLANTGATE_POWERCUT_CUTS")); err == nil && n > 0 {
		return n
	}
	return def
}
