// Package packaging_test checks the .deb and .rpm packages that make
// package builds with nfpm from packaging/nfpm.yaml: each architecture's
// package holds the expected files with their modes and owners, marks the
// config files as config (noreplace), carries the maintainer scripts, and
// its binary is a static one for that architecture.
//
// With PLANTGATE_DIST set (make package-test) the packages in that
// directory are checked; otherwise the test runs make package into a
// temporary directory. It is skipped with -short, and when a tool it needs
// is missing, except under CI (CI=true), where a missing tool is a failure:
// scripts/install-test-tools.sh installs them.
package packaging_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// entry is one path every package holds.
type entry struct {
	path   string
	mode   string // as ls shows it, "drwxr-x---"
	owner  string
	group  string
	config bool   // a config file, kept on upgrade when changed (noreplace)
	src    string // the repository file it must equal; "" for none
}

var entries = []entry{
	{path: "/usr/bin/plantgate", mode: "-rwxr-xr-x", owner: "root", group: "root"},
	{path: "/usr/lib/systemd/system/plantgate.service", mode: "-rw-r--r--", owner: "root", group: "root", src: "systemd/plantgate.service"},
	{path: "/etc/plantgate", mode: "drwxr-x---", owner: "root", group: "plantgate"},
	{path: "/etc/plantgate/plantgate.yaml", mode: "-rw-r-----", owner: "root", group: "plantgate", config: true, src: "configs/plantgate.example.yaml"},
	{path: "/etc/plantgate/credentials", mode: "drwx------", owner: "root", group: "root"},
	{path: "/etc/plantgate/credentials/fo-client-secret", mode: "-rw-------", owner: "root", group: "root", config: true, src: "packaging/credentials/fo-client-secret"},
	{path: "/etc/plantgate/credentials/admin-token", mode: "-rw-------", owner: "root", group: "root", config: true, src: "packaging/credentials/admin-token"},
	{path: "/etc/default/plantgate", mode: "-rw-------", owner: "root", group: "root", config: true, src: "packaging/plantgate.default"},
	{path: "/var/lib/plantgate", mode: "drwxr-x---", owner: "plantgate", group: "plantgate"},
	{path: "/usr/share/doc/plantgate/README.md", mode: "-rw-r--r--", owner: "root", group: "root", src: "README.md"},
	{path: "/usr/share/doc/plantgate/packaging.md", mode: "-rw-r--r--", owner: "root", group: "root", src: "packaging/README.md"},
	{path: "/usr/share/doc/plantgate/plantgate.example.yaml", mode: "-rw-r--r--", owner: "root", group: "root", src: "configs/plantgate.example.yaml"},
	{path: "/usr/share/doc/plantgate/copyright", mode: "-rw-r--r--", owner: "root", group: "root", src: "LICENSE"},
}

// arch is one target: Go's name, the packages' names, and what file(1)
// and the binary's build info say of its binary.
type arch struct {
	name, deb, rpm string
	file           string // in file(1)'s description
	build          []string
}

var arches = []arch{
	{"amd64", "amd64", "x86_64", "x86-64", []string{"GOARCH=amd64"}},
	{"arm64", "arm64", "aarch64", "ARM aarch64", []string{"GOARCH=arm64"}},
	{"armv7", "armhf", "armv7hl", "ARM, EABI5", []string{"GOARCH=arm", "GOARM=7"}},
}

// need fails under CI and skips elsewhere when a tool is not installed.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (scripts/install-test-tools.sh installs it)", tool)
			}
			t.Skipf("%s is not installed; scripts/install-test-tools.sh installs it", tool)
		}
	}
}

func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// packages returns the directory holding the six packages: PLANTGATE_DIST,
// or a temporary directory that make package fills.
func packages(t *testing.T, root string) string {
	t.Helper()
	if d := os.Getenv("PLANTGATE_DIST"); d != "" {
		return d
	}
	need(t, "make", "go")
	nfpm := filepath.Join(root, ".tools", "bin", "nfpm")
	if _, err := os.Stat(nfpm); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (scripts/install-test-tools.sh installs it)", nfpm)
		}
		t.Skipf("%s is not installed; scripts/install-test-tools.sh installs it", nfpm)
	}
	dist := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "package", "DIST="+dist)
	cmd.Dir = root
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	return dist
}

func one(t *testing.T, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 {
		t.Fatalf("%s: got %d packages %v, want 1", pattern, len(m), m)
	}
	return m[0]
}

// TestPackages checks the .deb and the .rpm of every architecture.
func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds packages; skipped with -short")
	}
	need(t, "dpkg-deb", "rpm", "rpm2cpio", "cpio", "tar", "file", "go", "systemd-analyze")
	root := repoRoot(t)
	dist := packages(t, root)
	for _, a := range arches {
		t.Run(a.name, func(t *testing.T) {
			deb := one(t, filepath.Join(dist, "plantgate_*_"+a.deb+".deb"))
			rpm := one(t, filepath.Join(dist, "plantgate-*."+a.rpm+".rpm"))
			debTree, rpmTree := t.TempDir(), t.TempDir()
			debOK := t.Run("deb", func(t *testing.T) { checkDeb(t, root, deb, a, debTree) })
			if debOK && a.name == runtime.GOARCH {
				t.Run("unit", func(t *testing.T) { checkUnit(t, debTree) })
			}
			rpmOK := t.Run("rpm", func(t *testing.T) { checkRPM(t, root, rpm, a, rpmTree) })
			if debOK && rpmOK {
				bin := "usr/bin/plantgate"
				if hashFile(t, filepath.Join(debTree, bin)) != hashFile(t, filepath.Join(rpmTree, bin)) {
					t.Errorf("the .deb and the .rpm hold different binaries")
				}
			}
		})
	}
}

// listed is one path of a package listing.
type listed struct {
	mode, owner, group string
	flags              string // rpm's file flags ("cn": config, noreplace)
}

// checkEntries compares a package's listing with entries: every entry is
// there with its mode and owners, and no other file (directories the
// entries lie in may be listed too).
func checkEntries(t *testing.T, got map[string]listed) {
	t.Helper()
	want := map[string]bool{}
	for _, e := range entries {
		want[e.path] = true
		g, ok := got[e.path]
		if !ok {
			t.Errorf("%s: not in the package", e.path)
			continue
		}
		if g.mode != e.mode || g.owner != e.owner || g.group != e.group {
			t.Errorf("%s: got %s %s:%s, want %s %s:%s", e.path, g.mode, g.owner, g.group, e.mode, e.owner, e.group)
		}
	}
	for p, g := range got {
		if want[p] {
			continue
		}
		if !strings.HasPrefix(g.mode, "d") {
			t.Errorf("%s: in the package, not expected", p)
			continue
		}
		parent := false
		for _, e := range entries {
			if strings.HasPrefix(e.path, p+"/") {
				parent = true
			}
		}
		if !parent {
			t.Errorf("%s/: directory in the package, not expected", p)
		}
		if g.owner != "root" || g.group != "root" || g.mode != "drwxr-xr-x" {
			t.Errorf("%s/: got %s %s:%s, want a system directory (drwxr-xr-x root:root)", p, g.mode, g.owner, g.group)
		}
	}
}

func configPaths() []string {
	var c []string
	for _, e := range entries {
		if e.config {
			c = append(c, e.path)
		}
	}
	slices.Sort(c)
	return c
}

func lines(b []byte) []string {
	var l []string
	for s := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if s = strings.TrimSpace(s); s != "" {
			l = append(l, s)
		}
	}
	slices.Sort(l)
	return l
}

// checkDeb checks the .deb and unpacks it into tree.
func checkDeb(t *testing.T, root, deb string, a arch, tree string) {
	t.Helper()
	if got := strings.TrimSpace(string(run(t, "", "dpkg-deb", "-f", deb, "Architecture"))); got != a.deb {
		t.Errorf("Architecture: got %q, want %q", got, a.deb)
	}
	got := map[string]listed{}
	// drwxr-x--- plantgate/plantgate 0 2026-12-01 12:17 ./var/lib/plantgate/
	for _, l := range lines(run(t, "", "dpkg-deb", "-c", deb)) {
		f := strings.Fields(l)
		if len(f) != 6 {
			t.Fatalf("dpkg-deb -c: unexpected line %q", l)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		if p == "" {
			continue
		}
		owner, group, _ := strings.Cut(f[1], "/")
		got[p] = listed{mode: f[0], owner: owner, group: group}
	}
	checkEntries(t, got)
	if c := lines(run(t, "", "dpkg-deb", "--info", deb, "conffiles")); !slices.Equal(c, configPaths()) {
		t.Errorf("conffiles: got %v, want %v", c, configPaths())
	}
	scripts := map[string][]string{
		"postinst": {"adduser --system", "try-restart plantgate.service"},
		"prerm":    {"systemctl stop plantgate.service"},
		"postrm":   {`if [ "$1" = "purge" ]; then`, "rm -rf /var/lib/plantgate"},
	}
	for name, wants := range scripts {
		s := string(run(t, "", "dpkg-deb", "--info", deb, name))
		for _, w := range wants {
			if !strings.Contains(s, w) {
				t.Errorf("%s does not contain %q", name, w)
			}
		}
	}
	// The data dir is deleted by purge only: the lines before the purge
	// branch of postrm leave it alone.
	postrm := string(run(t, "", "dpkg-deb", "--info", deb, "postrm"))
	if before, _, _ := strings.Cut(postrm, `if [ "$1" = "purge" ]; then`); strings.Contains(before, "/var/lib/plantgate") {
		t.Errorf("postrm touches /var/lib/plantgate outside purge:\n%s", postrm)
	}
	tarball := filepath.Join(t.TempDir(), "data.tar")
	if err := os.WriteFile(tarball, run(t, "", "dpkg-deb", "--fsys-tarfile", deb), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, tree, "tar", "-xf", tarball, "--no-same-owner")
	checkTree(t, root, tree, a)
}

// checkRPM checks the .rpm and unpacks it into tree.
func checkRPM(t *testing.T, root, rpm string, a arch, tree string) {
	t.Helper()
	if got := string(run(t, "", "rpm", "-qp", "--qf", "%{ARCH}", rpm)); got != a.rpm {
		t.Errorf("ARCH: got %q, want %q", got, a.rpm)
	}
	got := map[string]listed{}
	for _, l := range lines(run(t, "", "rpm", "-qp", "--qf", `[%{FILEMODES:perms}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\t%{FILENAMES}\t<%{FILEFLAGS:fflags}>\n]`, rpm)) {
		f := strings.Split(l, "\t")
		if len(f) != 5 {
			t.Fatalf("rpm -qp: unexpected line %q", l)
		}
		got[f[3]] = listed{mode: f[0], owner: f[1], group: f[2], flags: strings.Trim(f[4], "<>")}
	}
	checkEntries(t, got)
	var list []string
	for p := range got {
		list = append(list, p)
	}
	slices.Sort(list)
	if l := lines(run(t, "", "rpm", "-qlp", rpm)); !slices.Equal(l, list) {
		t.Errorf("rpm -qlp: got %v, want %v", l, list)
	}
	if c := lines(run(t, "", "rpm", "-qcp", rpm)); !slices.Equal(c, configPaths()) {
		t.Errorf("rpm -qcp: got %v, want %v", c, configPaths())
	}
	for _, e := range entries {
		if flags := got[e.path].flags; e.config && flags != "cn" {
			t.Errorf("%s: file flags %q, want cn (config, noreplace)", e.path, flags)
		}
	}
	scripts := string(run(t, "", "rpm", "-qp", "--scripts", rpm))
	for _, w := range []string{
		"preinstall scriptlet", "useradd --system",
		"postinstall scriptlet", "try-restart plantgate.service",
		"preuninstall scriptlet", "systemctl stop plantgate.service",
		"postuninstall scriptlet",
	} {
		if !strings.Contains(scripts, w) {
			t.Errorf("rpm scripts do not contain %q:\n%s", w, scripts)
		}
	}
	// rpm has no purge: an erase keeps the queue.
	if strings.Contains(scripts, "rm -rf /var/lib/plantgate") || strings.Contains(scripts, "userdel") {
		t.Errorf("rpm scripts delete the data dir or the user:\n%s", scripts)
	}
	cpioFile := filepath.Join(t.TempDir(), "payload.cpio")
	// rpm2cpio of rpm 4.18 writes the whole payload of an nfpm-built rpm
	// and exits 1 (rpm -K finds its digests correct); its output is taken
	// as it is, and checkTree compares every unpacked file with its source.
	payload, err := exec.Command("rpm2cpio", rpm).Output()
	if len(payload) == 0 {
		t.Fatalf("rpm2cpio %s: %v", rpm, err)
	}
	if err := os.WriteFile(cpioFile, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	// The payload's names are absolute: unpack them under tree only.
	run(t, tree, "cpio", "-idm", "--quiet", "--no-absolute-filenames", "-F", cpioFile)
	checkTree(t, root, tree, a)
}

// checkTree checks the unpacked files: those with a source equal it (the
// credentials ship empty), and the binary is static for the architecture.
func checkTree(t *testing.T, root, tree string, a arch) {
	t.Helper()
	for _, e := range entries {
		if e.src == "" {
			continue
		}
		want, err := os.ReadFile(filepath.Join(root, e.src))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(tree, e.path))
		if err != nil {
			t.Errorf("%s: %v", e.path, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s", e.path, e.src)
		}
		if strings.Contains(e.path, "/credentials/") && len(got) != 0 {
			t.Errorf("%s: %d bytes, want an empty file", e.path, len(got))
		}
	}
	bin := filepath.Join(tree, "usr/bin/plantgate")
	desc := string(run(t, "", "file", "-b", bin))
	if !strings.Contains(desc, "statically linked") || !strings.Contains(desc, a.file) {
		t.Errorf("file %s: %q, want a statically linked %s executable", bin, desc, a.file)
	}
	info := string(run(t, "", "go", "version", "-m", bin))
	for _, w := range append([]string{"CGO_ENABLED=0", "GOOS=linux", "path\tgithub.com/plantgate/plantgate/cmd/plantgate"}, a.build...) {
		if !strings.Contains(info, w) {
			t.Errorf("go version -m: no %q in\n%s", w, info)
		}
	}
}

// maxExposure is the highest systemd-analyze security rating the unit may
// have, on its scale of 0 to 10 (its --threshold takes tenths).
const maxExposure = 2.0

var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// checkUnit checks the packaged unit with systemd-analyze: verify reports
// nothing (it checks that the binary exists, so ExecStart points at the
// packaged one), and security rates its exposure at most maxExposure.
func checkUnit(t *testing.T, tree string) {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join(tree, "usr/lib/systemd/system/plantgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/plantgate run ")) {
		t.Fatalf("the unit does not start /usr/bin/plantgate run:\n%s", unit)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "plantgate.service")
	local := bytes.ReplaceAll(unit, []byte("/usr/bin/plantgate"), []byte(filepath.Join(tree, "usr/bin/plantgate")))
	if err := os.WriteFile(path, local, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-analyze", "verify", path)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	cmd = exec.Command("systemd-analyze", "security", "--offline=yes", fmt.Sprintf("--threshold=%d", int(maxExposure*10)), path)
	out, err := cmd.CombinedOutput()
	m := exposureRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v, no overall exposure in\n%s", err, out)
	}
	exposure, perr := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %s (at most %.1f)", m[1], maxExposure)
	if err != nil || perr != nil || exposure > maxExposure {
		t.Errorf("systemd-analyze security: exposure %s, want at most %.1f (%v)", m[1], maxExposure, err)
	}
}

func hashFile(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
