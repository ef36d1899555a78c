package odata

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSegment(t *testing.T) {
	tests := []struct {
		in   string
		want Segment
	}{
		{"ProductionOrderHeaders", Segment{Set: "ProductionOrderHeaders"}},
		{"ProductionOrderHeaders/$count", Segment{Set: "ProductionOrderHeaders", Rest: "$count"}},
		{"ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P(1)')", Segment{
			Set: "ProductionOrderHeaders", HasKey: true,
			Key: []KeyPart{{Name: "dataAreaId", Value: String("usmf")}, {Name: "ProductionOrderNumber", Value: String("P(1)")}},
		}},
		{"Lines(dataAreaId='usmf',JournalNumber='J''1',LineNumber=2)", Segment{
			Set: "Lines", HasKey: true,
			Key: []KeyPart{{Name: "dataAreaId", Value: String("usmf")}, {Name: "JournalNumber", Value: String("J'1")}, {Name: "LineNumber", Value: Number(2)}},
		}},
		{"Companies('usmf')", Segment{Set: "Companies", HasKey: true, Key: []KeyPart{{Value: String("usmf")}}}},
		{"DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.ImportFromPackage", Segment{
			Set: "DataManagementDefinitionGroups", Rest: "Microsoft.Dynamics.DataEntities.ImportFromPackage",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSegment(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("got -, want +:\n%s", diff)
			}
		})
	}
}

func TestParseSegmentErrors(t *testing.T) {
	for _, in := range []string{"", "Set(", "Set('a'", "Set(a=)", "Set(a='x',)", "Set('a')x", "Set(a='x' b='y')", "Set('a','b')"} {
		t.Run(in, func(t *testing.T) {
			if _, err := ParseSegment(in); !errors.Is(err, ErrSyntax) {
				t.Errorf("got %v, want ErrSyntax", err)
			}
		})
	}
}
