package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/plantgate/plantgate/internal/opcuasim"
)

// TestOPCUABrowseTrustRead runs the opcua commands against the gopcua line
// simulator with Basic256Sha256 SignAndEncrypt: browse refuses the unknown
// server certificate and files it, trust moves it, browse then lists the
// line's nodes with nsu= ids and read returns a value.
func TestOPCUABrowseTrustRead(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test; skipped under -short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim, err := opcuasim.Start(ctx, opcuasim.Options{Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { go sim.Close() }()
	sim.Set(opcuasim.Good, uint32(42))
	pki := t.TempDir()
	pg := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, _, stderr := pg("opcua", "browse", "--endpoint", sim.Endpoint(), "--pki", pki)
	if code != exitFailure || !strings.Contains(stderr, "rejected") {
		t.Fatalf("browse of an untrusted server: exit %d, %s", code, stderr)
	}
	code, out, stderr := pg("opcua", "trust", "--pki", pki)
	if code != exitOK || !strings.Contains(out, "plantgate line simulator") {
		t.Fatalf("trust list: exit %d %s %s", code, out, stderr)
	}
	fields := strings.Fields(out[strings.Index(out, "SHA-256"):])
	if code, out, stderr = pg("opcua", "trust", "--pki", pki, fields[1][:11]); code != exitOK {
		t.Fatalf("trust: exit %d %s %s", code, out, stderr)
	}
	code, out, stderr = pg("opcua", "browse", "--endpoint", sim.Endpoint(), "--pki", pki, "--json")
	if code != exitOK {
		t.Fatalf("browse: exit %d %s", code, stderr)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range nodes {
		if n["id"] == "nsu="+opcuasim.DefaultNamespace+";s=Line3.GoodCount" && n["class"] == "NodeClassVariable" && n["value"] == float64(42) {
			found = true
		}
	}
	if !found {
		t.Fatalf("browse did not list the good counter: %s", out)
	}
	code, out, stderr = pg("opcua", "read", "--endpoint", sim.Endpoint(), "--pki", pki, "--node", "nsu="+opcuasim.DefaultNamespace+";s=Line3.GoodCount", "--json")
	if code != exitOK || !strings.Contains(out, `"value": 42`) || !strings.Contains(out, `"quality": "good"`) {
		t.Fatalf("read: exit %d %s %s", code, out, stderr)
	}
	code, _, stderr = pg("opcua", "read", "--endpoint", sim.Endpoint(), "--pki", pki, "--node", "nsu=urn:nope;s=X")
	if code != exitFailure || !strings.Contains(stderr, "urn:nope") {
		t.Fatalf("read of a missing namespace: exit %d %s", code, stderr)
	}
	if code, _, _ = pg("opcua", "read", "--endpoint", sim.Endpoint(), "--pki", pki); code != exitUsage {
		t.Fatalf("read without --node: exit %d", code)
	}
}
