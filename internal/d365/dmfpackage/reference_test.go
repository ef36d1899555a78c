package dmfpackage

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/plantgate/plantgate/internal/foemu/dmfpkg"
)

// referenceZip is the package F&O exported, kept by the emulator's reader
// (see internal/foemu/dmfpkg/testdata/README.md).
var referenceZip = filepath.Join("..", "..", "foemu", "dmfpkg", "testdata", "usmf_asset-major-types-01.zip")

func referenceFile(t *testing.T, name string) []byte {
	t.Helper()
	zr, err := zip.OpenReader(referenceZip)
	if err != nil {
		t.Fatalf("open the reference package: %v", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name == name {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("%s not in the reference package", name)
	return nil
}

// node is an element's name, whether it is i:nil, and its children.
type node struct {
	Name     string
	Nil      bool
	Children []*node
}

func parseTree(t *testing.T, b []byte) *node {
	t.Helper()
	text, err := decodeText(b)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(text))
	root := &node{}
	stack := []*node{root}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch se := tok.(type) {
		case xml.StartElement:
			if se.Name.Space != Namespace {
				t.Fatalf("element %s in namespace %q", se.Name.Local, se.Name.Space)
			}
			n := &node{Name: se.Name.Local}
			for _, a := range se.Attr {
				if a.Name.Space == "http://www.w3.org/2001/XMLSchema-instance" && a.Name.Local == "nil" && a.Value == "true" {
					n.Nil = true
				}
			}
			top := stack[len(stack)-1]
			top.Children = append(top.Children, n)
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	return root.Children[0]
}

// collect lists each element as a path with its nil flag, and checks
// siblings of different names are in alphabetical order.
func collect(t *testing.T, n *node, prefix string, out map[string]bool) {
	t.Helper()
	path := prefix + "/" + n.Name
	out[path] = n.Nil
	var names []string
	for _, c := range n.Children {
		if len(names) == 0 || names[len(names)-1] != c.Name {
			names = append(names, c.Name)
		}
		collect(t, c, path, out)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("%s: children not in alphabetical order: %v", path, names)
	}
}

// TestManifestMatchesReferencePackage checks ManifestXML for a spec like the
// F&O-exported reference against F&O's own Manifest.xml: same encoding, same
// root tag, the same element paths in alphabetical order with the same
// i:nil elements, and beyond them only the elements of current exports that
// the 2017 sample lacks.
func TestManifestMatchesReferencePackage(t *testing.T) {
	ref := referenceFile(t, "Manifest.xml")
	spec := Spec{
		DefinitionGroup: "Asset-Major-Types",
		Entities: []Entity{{
			Label: "Fixed asset major type", File: "Fixed asset major type.xlsx",
			Columns: []string{"DESCRIPTION", "MAJORTYPEID"},
		}},
	}
	got := ManifestXML(spec)
	if !bytes.HasPrefix(ref, bomUTF16LE) || !bytes.HasPrefix(got, bomUTF16LE) {
		t.Fatalf("want UTF-16 LE with a byte order mark in both: ref % x, got % x", ref[:2], got[:2])
	}
	refText, _ := decodeText(ref)
	gotText, _ := decodeText(got)
	rootTag := refText[:strings.Index(refText, ">")+1]
	if !strings.HasPrefix(gotText, rootTag) {
		t.Errorf("root tag: got %.200s, want prefix %s", gotText, rootTag)
	}
	refPaths, gotPaths := map[string]bool{}, map[string]bool{}
	collect(t, parseTree(t, ref), "", refPaths)
	collect(t, parseTree(t, got), "", gotPaths)
	const ent = "/DataManagementPackageManifest/PackageEntityList/DataManagementPackageEntityData/"
	extra := map[string]bool{ // current exports (facts 5.3) over the 2017 sample
		ent + "DefaultRefreshType": false, ent + "Disable": false, ent + "QueryFilter": true, ent + "SkipStaging": false,
	}
	want := map[string]bool{}
	for p, n := range refPaths {
		want[p] = n
	}
	for p, n := range extra {
		want[p] = n
	}
	if diff := cmp.Diff(gotPaths, want); diff != "" {
		t.Errorf("element paths (true = i:nil): got -, want +:\n%s", diff)
	}

	// With the extra elements removed and the reference's source format,
	// the rendering is F&O's file byte for byte.
	r, err := resolve(spec)
	if err != nil {
		t.Fatal(err)
	}
	r.entities[0].Format = "EXCEL"
	text := renderManifest(r)
	for _, s := range []string{"<DefaultRefreshType>FullPush</DefaultRefreshType>", "<Disable>false</Disable>",
		`<QueryFilter i:nil="true" />`, "<SkipStaging>false</SkipStaging>"} {
		text = strings.Replace(text, s, "", 1)
	}
	if text != refText {
		t.Errorf("manifest differs from F&O's:\n got %s\nwant %s", text, refText)
	}
}

func TestPackageHeaderMatchesReferencePackage(t *testing.T) {
	ref := referenceFile(t, "PackageHeader.xml")
	got := PackageHeaderXML(Spec{DefinitionGroup: "Asset-Major-Types"})
	refText, _ := decodeText(ref)
	gotText, _ := decodeText(got)
	// The sample is PackageVersion 1; current exports write 2.
	if want := strings.Replace(refText, "<PackageVersion>1<", "<PackageVersion>2<", 1); gotText != want {
		t.Errorf("header:\n got %s\nwant %s", gotText, want)
	}
}

// TestManifestMatchesEmulatorWriter checks the generated manifest against
// the emulator's writer for the same content, so both agree on the format.
func TestManifestMatchesEmulatorWriter(t *testing.T) {
	spec := twoEntitySpec()
	r, err := resolve(spec)
	if err != nil {
		t.Fatal(err)
	}
	m := dmfpkg.Manifest{DefinitionGroupName: spec.DefinitionGroup, Description: spec.DefinitionGroup}
	for i, e := range r.entities {
		me := dmfpkg.Entity{
			EntityName: e.Label, TargetEntity: e.TargetEntity, SourceFormat: e.Format, InputFilePath: e.File,
			LevelInExecution: i + 1, SequenceInLevel: 1, RunBusinessLogic: true, RunBusinessValid: true, HasEntityMapList: true,
		}
		for j, c := range e.Columns {
			me.EntityMapList = append(me.EntityMapList, dmfpkg.EntityMap{EntityField: e.fields[j], XMLField: c})
		}
		m.Entities = append(m.Entities, me)
	}
	if got, want := ManifestXML(spec), dmfpkg.EncodeUTF16LE(m.XML()); !bytes.Equal(got, want) {
		g, _ := decodeText(got)
		t.Errorf("got  %s\nwant %s", g, m.XML())
	}
}
