package odata

import (
	"errors"
	"testing"
	"time"
)

var testProps = map[string]PropertyType{
	"ItemNumber":        {Kind: KindString},
	"Quantity":          {Kind: KindNumber},
	"Line":              {Kind: KindNumber, Edm: "Edm.Int64"},
	"ConsumptionDate":   {Kind: KindTime},
	"IsPosted":          {Kind: KindEnum, Members: []string{"No", "Yes"}},
	"Active":            {Kind: KindBool},
	"dataAreaId":        {Kind: KindString},
	"ProductionOrderNo": {Kind: KindString},
}

func lookup(name string) (PropertyType, bool) { p, ok := testProps[name]; return p, ok }

func testRecord(vals map[string]Value) func(string) Value {
	return func(n string) Value {
		if v, ok := vals[n]; ok {
			return v
		}
		return Null
	}
}

func TestFilterMatch(t *testing.T) {
	day := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	rec := testRecord(map[string]Value{
		"ItemNumber":        String("RM-2000"),
		"Quantity":          Number(12.5),
		"Line":              Number(3),
		"ConsumptionDate":   Time(day),
		"IsPosted":          Enum("No"),
		"Active":            Bool(true),
		"dataAreaId":        String("usmf"),
		"ProductionOrderNo": String("O'Brien"),
	})
	tests := []struct {
		filter string
		want   bool
	}{
		{"ItemNumber eq 'RM-2000'", true},
		{"ItemNumber eq 'rm-2000'", true},
		{"ItemNumber ne 'RM-2000'", false},
		{"ItemNumber eq 'RM*'", true},
		{"ItemNumber eq '*2000'", true},
		{"ItemNumber eq '*M-2*'", true},
		{"ItemNumber eq 'X*'", false},
		{"Quantity gt 12", true},
		{"Quantity ge 12.5 and Quantity le 12.5", true},
		{"Quantity lt 12.5", false},
		{"Line eq 3", true},
		{"ConsumptionDate eq 2024-05-01", true},
		{"ConsumptionDate ge 2024-05-01T00:00:00Z and ConsumptionDate lt 2024-05-02T00:00:00Z", true},
		{"ConsumptionDate gt 2024-05-01", false},
		{"ConsumptionDate gt '2024-04-30'", true},
		{"IsPosted eq Microsoft.Dynamics.DataEntities.NoYes'No'", true},
		{"IsPosted ne Microsoft.Dynamics.DataEntities.NoYes'No'", false},
		{"IsPosted eq 'no'", true},
		{"Active eq true", true},
		{"Active", true},
		{"not Active", false},
		{"(ItemNumber eq 'X' or Quantity gt 1) and dataAreaId eq 'USMF'", true},
		{"ItemNumber eq 'X' or ItemNumber eq 'Y'", false},
		{"ProductionOrderNo eq 'O''Brien'", true},
		{"ItemNumber eq null", false},
		{"ItemNumber ne null", true},
		{"not (Quantity gt 100)", true},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(tt.filter)
			if err != nil {
				t.Fatalf("ParseFilter: %v", err)
			}
			if err := f.Bind("T", lookup); err != nil {
				t.Fatalf("Bind: %v", err)
			}
			if got := f.Match(rec); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterErrors(t *testing.T) {
	tests := []struct {
		filter string
		want   error
	}{
		{"ItemNumber eq", ErrSyntax},
		{"ItemNumber eq 'abc", ErrSyntax},
		{"(ItemNumber eq 'a'", ErrSyntax},
		{"ItemNumber eq 'a')", ErrSyntax},
		{"ItemNumber # 'a'", ErrSyntax},
		{"Quantity add 1 eq 2", ErrUnsupported},
		{"ItemNumber in ('a','b')", ErrUnsupported},
		{"IsPosted has Microsoft.Dynamics.DataEntities.NoYes'Yes'", ErrUnsupported},
		{"contains(ItemNumber,'a')", ErrUnsupported},
		{"Unknown eq 1", ErrUnknownProperty},
		{"ItemNumber eq 1", ErrType},
		{"Quantity eq 'x'", ErrType},
		{"IsPosted gt Microsoft.Dynamics.DataEntities.NoYes'No'", ErrType},
		{"ItemNumber and Active", ErrType},
		{"ConsumptionDate eq 'yesterday'", ErrType},
		{"Quantity eq 2024-13-45", ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(tt.filter)
			if err == nil {
				err = f.Bind("T", lookup)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("got error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFilterDeepNesting(t *testing.T) {
	s := ""
	for range 200 {
		s += "("
	}
	if _, err := ParseFilter(s + "Active"); !errors.Is(err, ErrSyntax) {
		t.Errorf("got %v, want ErrSyntax", err)
	}
}

func TestFilterUnknownPropertyMessage(t *testing.T) {
	f, err := ParseFilter("Nope eq 1")
	if err != nil {
		t.Fatal(err)
	}
	err = f.Bind("Microsoft.Dynamics.DataEntities.ProductionOrderHeader", lookup)
	want := "unknown property: Could not find a property named 'Nope' on type 'Microsoft.Dynamics.DataEntities.ProductionOrderHeader'."
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"ItemNumber eq 'a'", "Quantity gt 1 and not Active", "ConsumptionDate ge 2024-01-01T00:00:00Z", "(((a)))", "IsPosted eq Microsoft.Dynamics.DataEntities.NoYes'Yes'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			return
		}
		if err := flt.Bind("T", lookup); err != nil {
			return
		}
		flt.Match(testRecord(nil))
	})
}
