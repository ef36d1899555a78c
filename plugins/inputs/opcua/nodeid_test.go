package opcua

import (
	"strings"
	"testing"
)

func TestNodeRefResolvesByNamespaceURI(t *testing.T) {
	ref, err := ParseNodeRef("nsu=urn:line3;s=Counters.Good")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		table []string
		want  string
	}{
		{[]string{"http://opcfoundation.org/UA/", "urn:line3"}, "ns=1;s=Counters.Good"},
		{[]string{"http://opcfoundation.org/UA/", "urn:other", "urn:x", "urn:line3"}, "ns=3;s=Counters.Good"},
		{append(make([]string, 300), "urn:line3"), "ns=300;s=Counters.Good"},
	} {
		tc.table[0] = "http://opcfoundation.org/UA/"
		id, err := ref.Resolve(tc.table)
		if err != nil {
			t.Fatal(err)
		}
		if id.String() != tc.want {
			t.Errorf("resolved %s, want %s", id, tc.want)
		}
		if got := ExpandedString(id, tc.table); got != "nsu=urn:line3;s=Counters.Good" {
			t.Errorf("expanded %s", got)
		}
	}
	if _, err := ref.Resolve([]string{"http://opcfoundation.org/UA/"}); err == nil || !strings.Contains(err.Error(), "urn:line3") {
		t.Errorf("missing namespace: %v", err)
	}
	num, err := ParseNodeRef("nsu=urn:line3;i=70000")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := num.Resolve([]string{"x", "y", "urn:line3"}); err != nil || id.String() != "ns=2;i=70000" {
		t.Errorf("numeric: %v %v", id, err)
	}
}

func TestNodeRefRejects(t *testing.T) {
	for _, s := range []string{"", "nsu=;s=x", "nsu=urn:x", "nsu=urn:x;Name", "ns=x;s=y", "ns=70000;i=1", "i=abc", "s=", "nsu=urn:x;s=a\x00"} {
		if _, err := ParseNodeRef(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}

// FuzzParseNodeRef feeds node ids as a config (or a browse argument)
// could hold them: parsing never panics, and an id that parses resolves
// and prints back to an id that parses to the same node.
func FuzzParseNodeRef(f *testing.F) {
	for _, s := range []string{"nsu=urn:line3;s=Counters.Good", "ns=2;i=5", "i=2258", "s=Foo", "nsu=urn:a;g=5eac051c-c313-43d7-b790-24aa2c3cfd37", "nsu=urn:a;b=Zm9v", "ns=1;s=a;b"} {
		f.Add(s)
	}
	table := []string{"http://opcfoundation.org/UA/", "urn:line3", "urn:a"}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseNodeRef(s)
		if err != nil {
			return
		}
		id, err := ref.Resolve(table)
		if err != nil {
			return
		}
		back := ExpandedString(id, table)
		ref2, err := ParseNodeRef(back)
		if err != nil {
			t.Fatalf("%q resolved to %s, printed as %q, which does not parse: %v", s, id, back, err)
		}
		id2, err := ref2.Resolve(table)
		if err != nil || id2.String() != id.String() {
			t.Fatalf("%q -> %s -> %q -> %v (%v)", s, id, back, id2, err)
		}
	})
}
