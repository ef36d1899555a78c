package d365

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// KeyValue is one key property of an entity and its value.
type KeyValue struct {
	Name  string
	Value any
}

// EntityPath returns the escaped path of one entity below the service
// root, with every key property in the order given:
//
//	ProductionOrderHeaders(dataAreaId='usmf',ProductionOrderNumber='P000101')
//
// F&O needs all key fields, dataAreaId included for company entities.
func EntityPath(set string, keys []KeyValue) (string, error) {
	if len(keys) == 0 {
		return "", fmt.Errorf("format key of %s: no key fields", set)
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		lit, err := Literal(k.Value)
		if err != nil {
			return "", fmt.Errorf("format key field %s: %w", k.Name, err)
		}
		parts[i] = k.Name + "=" + lit
	}
	return url.PathEscape(set) + "(" + strings.Join(parts, ",") + ")", nil
}

// Literal formats v as an OData key literal, escaped for a URL path:
// strings in single quotes (a quote inside doubled), numbers and booleans
// bare.
func Literal(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", fmt.Errorf("key value is empty")
	case string:
		if x == "" {
			return "", fmt.Errorf("key value is empty")
		}
		return "'" + url.PathEscape(strings.ReplaceAll(x, "'", "''")) + "'", nil
	case json.Number:
		if _, err := x.Float64(); err != nil {
			return "", fmt.Errorf("key value %q is not a number", x.String())
		}
		return x.String(), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("key value %v is not a number", x)
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case float32:
		return Literal(float64(x))
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case int32:
		return strconv.FormatInt(int64(x), 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", fmt.Errorf("key value of type %T cannot be a key", v)
}
