package foemu

import (
	_ "embed"
	"encoding/json"
	"sort"
	"strings"
)

//go:embed defaults/seed.yaml
var defaultSeedYAML []byte

// Seed is the initial data of the emulator: companies and records.
type Seed struct {
	// DefaultCompany is the default company of clients that do not name one.
	DefaultCompany string `yaml:"default_company" json:"default_company"`
	// Companies are the legal entities (dataAreaId values).
	Companies []Company `yaml:"companies" json:"companies"`
	// Records maps an entity set name to its initial records.
	Records map[string][]map[string]any `yaml:"records" json:"records"`
}

// Company is a legal entity.
type Company struct {
	ID   string `yaml:"id" json:"id"`     // dataAreaId, at most 4 characters
	Name string `yaml:"name" json:"name"` // display name
}

func defaultSeed() *Seed {
	var s Seed
	if _, err := decodeYAML("defaults/seed.yaml", defaultSeedYAML, &s); err != nil {
		panic(err) // the embedded file is covered by tests
	}
	return &s
}

func (s *Seed) hasCompany(id string) bool {
	for _, c := range s.Companies {
		if strings.EqualFold(c.ID, id) {
			return true
		}
	}
	return false
}

// validate checks companies, entity sets and field names; the values are
// converted (and checked) when the store loads them.
func (s *Seed) validate(d *yamlDoc, schema *Schema) error {
	if len(s.Companies) == 0 {
		return d.errorf(p("companies"), "the seed needs at least one company")
	}
	for i, c := range s.Companies {
		if c.ID == "" || len(c.ID) > 4 {
			return d.errorf(p("companies", i), "company id must be 1 to 4 characters")
		}
	}
	if s.DefaultCompany == "" {
		s.DefaultCompany = s.Companies[0].ID
	}
	if !s.hasCompany(s.DefaultCompany) {
		return d.errorf(p("default_company"), "default company %s is not in companies", s.DefaultCompany)
	}
	sets := make([]string, 0, len(s.Records))
	for set := range s.Records {
		sets = append(sets, set)
	}
	sort.Strings(sets)
	for _, set := range sets {
		e, ok := schema.Entity(set)
		if !ok {
			return d.errorf(p("records", set), "entity set %s is not in the schema", set)
		}
		for i, rec := range s.Records[set] {
			for k := range rec {
				if _, ok := e.FieldByName(k); !ok {
					return d.errorf(p("records", set, i, k), "%s has no field %s", set, k)
				}
			}
		}
	}
	return nil
}

// jsonRecord converts a YAML-decoded record to the JSON form the store
// converts from (numbers as json.Number, strings as strings).
func jsonRecord(rec map[string]any) map[string]any {
	out := make(map[string]any, len(rec))
	for k, v := range rec {
		switch x := v.(type) {
		case int:
			out[k] = json.Number(jsonNum(float64(x)))
		case int64:
			out[k] = json.Number(jsonNum(float64(x)))
		case float64:
			out[k] = json.Number(jsonNum(x))
		default:
			out[k] = v
		}
	}
	return out
}

func jsonNum(f float64) string {
	b, _ := json.Marshal(f) // a finite float64 always marshals
	return string(b)
}
