package packaging_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// container is a systemd booted with systemd-nspawn on an overlay of this
// machine's root file system: what is installed in it goes to a tmpfs and
// is gone when the test ends; its network is its own loopback only.
type container struct {
	t    *testing.T
	init int // the container's PID 1, as seen from here
}

// sh runs script in the container as root and returns its output.
func (c *container) sh(script string) (string, error) {
	c.t.Helper()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(c.init), "-a", "--",
		"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs script and fails the test when it fails.
func (c *container) must(script string) string {
	c.t.Helper()
	out, err := c.sh(script)
	if err != nil {
		c.t.Fatalf("in the container: %s: %v\n%s", script, err, out)
	}
	return out
}

// eventually polls script until check accepts its output.
func (c *container) eventually(what string, d time.Duration, script string, check func(string) bool) string {
	c.t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var out string
	for {
		out, _ = c.sh(script)
		if check(out) {
			return out
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s; last output of %q:\n%s", what, d, script, out)
		}
		<-tick.C
	}
}

// steady checks for d that script's output keeps passing check.
func (c *container) steady(what string, d time.Duration, script string, check func(string) bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if out, _ := c.sh(script); !check(out) {
			c.t.Fatalf("%s: %q gave\n%s", what, script, out)
		}
		<-tick.C
	}
}

func bootContainer(t *testing.T, pkgs string) *container {
	t.Helper()
	base := t.TempDir()
	if err := syscall.Mount("tmpfs", base, "tmpfs", 0, "size=1g"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(base, syscall.MNT_DETACH) })
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(base, "root")
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", base, base)
	if err := syscall.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Skipf("cannot mount an overlay of /: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(root, syscall.MNT_DETACH) })

	logf, err := os.Create(filepath.Join(t.TempDir(), "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("pgtest%d", os.Getpid())
	cmd := exec.Command("systemd-nspawn", "-D", root, "--private-network", "--register=no", "--keep-unit",
		"--bind-ro="+pkgs+":/pkg", "--machine="+name, "-b", "--", "--unit=basic.target")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // nspawn shuts the container down
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	c := &container{t: t}
	deadline := time.Now().Add(60 * time.Second)
	for c.init == 0 {
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("systemd-nspawn exited:\n%s", b)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("no systemd in the container within 60s:\n%s", b)
		}
		c.init = childOf(cmd.Process.Pid, "systemd")
	}
	c.eventually("the container's systemd running", 60*time.Second, "systemctl is-system-running",
		func(s string) bool { s = strings.TrimSpace(s); return s == "running" || s == "degraded" })
	return c
}

// childOf returns the PID of parent's child process named comm, or 0.
func childOf(parent int, comm string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if s[open+1:end] == comm && len(f) > 1 && f[1] == strconv.Itoa(parent) {
			return pid
		}
	}
	return 0
}

// streams returns the queue's record count per stream from /api/v1/status.
func streams(out string) map[string]int {
	var st struct {
		Version string `json:"version"`
		Queue   struct {
			Streams []struct {
				Stream  string `json:"stream"`
				Records int    `json:"records"`
			} `json:"streams"`
		} `json:"queue"`
	}
	if json.Unmarshal([]byte(out), &st) != nil {
		return nil
	}
	m := map[string]int{"version:" + st.Version: 1}
	for _, s := range st.Queue.Streams {
		m[s.Stream] = s.Records
	}
	return m
}

const (
	creds = `printf 'long-test-client-secret\n' > /etc/plantgate/credentials/fo-client-secret
head -c 32 /dev/urandom | base64 > /etc/plantgate/credentials/admin-token`
	// Three report-finished and three status messages: the fo.mes and
	// fo.odata streams keep three records each (F&O is unreachable in the
	// container), the trace sink delivers its three.
	messages = `install -d -o plantgate -g plantgate -m 0750 /var/lib/plantgate/import
for i in 1 2 3; do
  echo "{\"type\":\"finished\",\"order\":\"P$i\",\"item\":\"I1\",\"good\":5,\"msg_id\":\"f$i\"}"
  echo "{\"type\":\"status\",\"order\":\"P$i\",\"status\":\"Started\",\"msg_id\":\"s$i\"}"
done > /var/lib/plantgate/import/confirmations.jsonl
chown plantgate:plantgate /var/lib/plantgate/import/confirmations.jsonl`
	status = "curl -s http://127.0.0.1:9464/api/v1/status"
)

// TestLongSystemdInstall installs the amd64 .deb and .rpm in a container
// running systemd and follows the README's walkthrough: the unit starts
// plantgate (READY, credentials, sandbox), keeps it running past the
// watchdog interval, an upgrade restarts it on the new binary with its
// queue, a config error exits 78 without restarts, remove keeps the data,
// purge deletes it; rpm's erase keeps it. It needs root, overlayfs and
// systemd-nspawn (Debian package systemd-container); make e2e-long.
func TestLongSystemdInstall(t *testing.T) {
	if os.Getenv("PLANTGATE_LONG") == "" {
		t.Skip("set PLANTGATE_LONG=1 (make e2e-long)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlay mount, systemd-nspawn)")
	}
	need(t, "systemd-nspawn", "nsenter", "make", "go")
	root := repoRoot(t)
	pkgs := t.TempDir()
	for _, v := range []string{"0.0.1", "0.0.2"} {
		cmd := exec.Command("make", "--no-print-directory", "package", "DIST="+filepath.Join(pkgs, v), "VERSION=v"+v)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make package VERSION=v%s: %v\n%s", v, err, out)
		}
	}
	c := bootContainer(t, pkgs)

	t.Run("deb", func(t *testing.T) {
		c.t = t
		c.must("dpkg -i /pkg/0.0.1/plantgate_0.0.1_amd64.deb")
		if out := c.must("systemctl is-enabled plantgate || true"); strings.TrimSpace(out) != "disabled" {
			t.Errorf("after install: is-enabled %q, want disabled", out)
		}
		if out, err := c.sh("CREDENTIALS_DIRECTORY=/etc/plantgate/credentials plantgate check-config -c /etc/plantgate/plantgate.yaml"); err == nil ||
			!strings.Contains(out, "${cred:fo-client-secret} is empty") {
			t.Errorf("check-config with the empty credentials: %v\n%s", err, out)
		}
		c.must(creds)
		c.must("CREDENTIALS_DIRECTORY=/etc/plantgate/credentials plantgate check-config -c /etc/plantgate/plantgate.yaml")
		c.must("systemctl enable --now plantgate")
		c.must("test \"$(stat -c %U /run/credentials/plantgate.service/fo-client-secret)\" = plantgate")
		c.eventually("the status page", 20*time.Second, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/",
			func(s string) bool { return s == "200" })
		c.must(messages)
		c.eventually("six records queued", 30*time.Second, status, func(s string) bool {
			m := streams(s)
			return m["mes"] == 3 && m["order-status.order-status"] == 3
		})
		// The watchdog (WatchdogSec=30s) must not kill a healthy gateway.
		c.steady("no restart past the watchdog interval", 40*time.Second, "systemctl show -p NRestarts --value plantgate; systemctl is-active plantgate",
			func(s string) bool { return s == "0\nactive\n" })

		pid := c.must("systemctl show -p MainPID --value plantgate")
		c.must("dpkg -i /pkg/0.0.2/plantgate_0.0.2_amd64.deb")
		if now := c.must("systemctl show -p MainPID --value plantgate"); now == pid {
			t.Errorf("the upgrade did not restart the gateway (main PID %s)", strings.TrimSpace(pid))
		}
		c.eventually("the new binary with its queue", 30*time.Second, status, func(s string) bool {
			m := streams(s)
			return m["version:v0.0.2"] == 1 && m["mes"] == 3 && m["order-status.order-status"] == 3
		})
		if out := c.must("wc -c < /etc/plantgate/credentials/fo-client-secret"); strings.TrimSpace(out) != "24" {
			t.Errorf("upgrade changed the credential: %s bytes", out)
		}

		c.must("cp /etc/plantgate/plantgate.yaml /root/good.yaml && sed -i 's/^  id: plant01-line3/&\\n  colour: blue/' /etc/plantgate/plantgate.yaml")
		if out, err := c.sh("systemctl restart plantgate"); err == nil {
			t.Errorf("restart with a bad config succeeded:\n%s", out)
		}
		c.steady("exit 78 not restarted", 8*time.Second,
			"systemctl show -p ExecMainStatus --value plantgate; systemctl show -p NRestarts --value plantgate; systemctl is-active plantgate",
			func(s string) bool { return s == "78\n0\nfailed\n" })
		c.must("cp /root/good.yaml /etc/plantgate/plantgate.yaml && systemctl reset-failed plantgate && systemctl start plantgate")

		c.must("dpkg -r plantgate")
		c.must("test -f /var/lib/plantgate/queue.db && test -s /etc/plantgate/credentials/admin-token && id plantgate")
		c.must("dpkg --purge plantgate")
		if out, err := c.sh("ls -d /var/lib/plantgate /etc/plantgate 2>/dev/null; id plantgate"); err == nil || strings.TrimSpace(out) != "id: 'plantgate': no such user" {
			t.Errorf("after purge: %v\n%s", err, out)
		}
	})

	t.Run("rpm", func(t *testing.T) {
		c.t = t
		// Debian's rpm database knows none of the packages the rpm needs.
		c.must("rpm -i --nodeps /pkg/0.0.1/plantgate-0.0.1-1.x86_64.rpm")
		c.must(`test "$(stat -c %U:%G /var/lib/plantgate)" = plantgate:plantgate && test "$(stat -c %G /etc/plantgate/plantgate.yaml)" = plantgate`)
		c.must(creds)
		c.must("systemctl enable --now plantgate")
		c.must(messages)
		c.eventually("six records queued", 30*time.Second, status, func(s string) bool {
			m := streams(s)
			return m["mes"] == 3 && m["order-status.order-status"] == 3
		})
		c.must("rpm -U --nodeps /pkg/0.0.2/plantgate-0.0.2-1.x86_64.rpm")
		c.eventually("restarted on the new binary with its queue", 30*time.Second, status, func(s string) bool {
			m := streams(s)
			return m["version:v0.0.2"] == 1 && m["mes"] == 3
		})
		c.must("rpm -e --nodeps plantgate")
		c.must("! systemctl is-active plantgate && test -f /var/lib/plantgate/queue.db && id plantgate")
	})
}
