package foemutest

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
)

// StartAzurite runs Azurite's blob service (installed by make tools into
// .tools/node_modules, or $PLANTGATE_AZURITE) on a free loopback port and
// returns its path-style account endpoint; it is killed when the test
// ends. Without Azurite the test fails naming make tools (skips in -short).
func StartAzurite(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("PLANTGATE_AZURITE")
	if bin == "" {
		root := ""
		if wd, err := os.Getwd(); err == nil {
			for d := wd; ; d = filepath.Dir(d) {
				if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
					root = d
					break
				}
				if filepath.Dir(d) == d {
					break
				}
			}
		}
		bin = filepath.Join(root, ".tools", "node_modules", ".bin", "azurite-blob")
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // the test tools' own path
		if testing.Short() {
			t.Skipf("azurite-blob not found at %s (-short)", bin)
		}
		t.Fatalf("azurite-blob not found at %s: run `make tools` (installs npm azurite@3.37.0) or set PLANTGATE_AZURITE", bin)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := exec.Command(bin, "--inMemoryPersistence", "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port), "--silent") //nolint:gosec // the test tools' own Azurite
	cmd.Dir = t.TempDir()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start azurite: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port) + "/" + foemu.AzuriteAccount
	hc := &http.Client{Timeout: time.Second}
	WaitFor(t, 30*time.Second, "azurite to answer", func() bool {
		resp, err := hc.Get(endpoint + "?comp=list")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	})
	return endpoint
}
