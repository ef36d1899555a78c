package fomes

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// kind is the type of a message field, as F&O's MES integration documents
// it: Real (decimal), Integer, Date (YYYY-MM-DD), DateTime, an enum, or
// Yes|No.
type kind int

const (
	kString kind = iota
	kReal
	kInt
	kDate
	kDateTime
	kEnum
	kYesNo
)

func (k kind) String() string {
	return [...]string{"a string", "a number", "an integer", "a date (YYYY-MM-DD)", "a date and time", "one of the enum values", "Yes or No"}[k]
}

// field describes one field of a message or of one of its lines.
type field struct {
	kind      kind
	mandatory bool
	enum      []string
	// extensible enums accept values beyond the documented ones.
	extensible bool
}

// messageType describes one message type of queue JmgMES3P.
type messageType struct {
	fields map[string]field
	// lines names the mandatory array of lines (at least one), if any.
	lines      string
	lineFields map[string]field
}

var (
	fStr      = field{kind: kString}
	fReal     = field{kind: kReal}
	fInt      = field{kind: kInt}
	fDate     = field{kind: kDate}
	fDateTime = field{kind: kDateTime}
	fYesNo    = field{kind: kYesNo}
	fOrder    = field{kind: kString, mandatory: true}
	fBOMRule  = field{kind: kEnum, enum: []string{"FlushingPrincip", "Always", "Never"}}
	fRteRule  = field{kind: kEnum, enum: []string{"RouteDependent", "Always", "Never"}}
	fErrCause = field{kind: kEnum, enum: []string{"None", "Material", "Machine", "OperatingStaff"}, extensible: true}
)

func withDimensions(m map[string]field) map[string]field {
	for _, n := range []string{"ProductColorId", "ProductConfigurationId", "ProductSizeId", "ProductStyleId", "ProductVersionId",
		"ItemBatchNumber", "ProductSerialNumber", "LicensePlateNumber", "InventoryStatusId", "ProductionWarehouseId",
		"ProductionSiteId", "ProductionWarehouseLocationId"} {
		m[n] = fStr
	}
	for i := 1; i <= 12; i++ {
		m["InventoryDimension"+strconv.Itoa(i)] = fStr
	}
	return m
}

func operationPriorities() []string {
	out := []string{"Primary"}
	for i := 1; i <= 20; i++ {
		out = append(out, "Secondary"+strconv.Itoa(i))
	}
	return out
}

// messageTypes are the five message types of the MES integration and
// their fields (Supply Chain Management, "Integrate with third-party
// manufacturing execution systems").
var messageTypes = map[string]messageType{
	"ProdProductionOrderStart": {fields: map[string]field{
		"ProductionOrderNumber": fOrder, "StartedQuantity": fReal, "StartedDate": fDate,
		"AutomaticBOMConsumptionRule": fBOMRule, "AutomaticRouteConsumptionRule": fRteRule,
	}},
	"ProdProductionOrderReportFinished": {
		fields: map[string]field{"ProductionOrderNumber": fOrder},
		lines:  "ReportFinishedLines",
		lineFields: withDimensions(map[string]field{
			"LineNumber": fReal, "ItemNumber": fStr,
			"ProductionType":        {kind: kEnum, enum: []string{"MainItem", "Formula", "BOM", "Co_Product", "By_Product", "None"}, extensible: true},
			"ReportedErrorQuantity": fReal, "ReportedGoodQuantity": fReal, "ReportedErrorCatchWeightQuantity": fReal,
			"ReportedGoodCatchWeightQuantity": fReal, "AcceptError": fYesNo, "ErrorCause": fErrCause,
			"ExecutedDateTime": fDateTime, "ReportAsFinishedDate": fDate,
			"AutomaticBOMConsumptionRule": fBOMRule, "AutomaticRouteConsumptionRule": fRteRule,
			"RespectFlushingPrincipleDuringOverproduction": fYesNo, "ProductionJournalNameId": fStr,
			"PickingListProductionJournalNameId": fStr, "RouteCardProductionJournalNameId": fStr,
			"FromOperationNumber": fInt, "ToOperationNumber": fInt, "InventoryLotId": fStr,
			"BaseValue": fStr, "EndJob": fYesNo, "EndPickingList": fYesNo, "EndRouteCard": fYesNo, "PostNow": fYesNo,
			"AutoUpdate": fYesNo,
		}),
	},
	"ProdProductionOrderPickingList": {
		fields: map[string]field{"ProductionOrderNumber": fOrder, "JournalNameId": fStr},
		lines:  "PickingListLines",
		lineFields: withDimensions(map[string]field{
			"ItemNumber": {kind: kString, mandatory: true}, "ConsumptionBOMQuantity": fReal, "ProposalBOMQuantity": fReal,
			"ScrapBOMQuantity": fReal, "BOMUnitSymbol": fStr, "ConsumptionInventoryQuantity": fReal,
			"ProposalInventoryQuantity": fReal, "ConsumptionCatchWeightQuantity": fReal, "ProposalCatchWeightQuantity": fReal,
			"ConsumptionDate": fDate, "OperationNumber": fInt, "LineNumber": fReal, "PositionNumber": fStr,
			"IsConsumptionEnded": fYesNo, "ErrorCause": fErrCause, "InventoryLotId": fStr,
		}),
	},
	"ProdProductionOrderRouteCard": {
		fields: map[string]field{"ProductionOrderNumber": fOrder, "JournalNameId": fStr},
		lines:  "RouteCardLines",
		lineFields: map[string]field{
			"OperationNumber":   {kind: kInt, mandatory: true},
			"OperationPriority": {kind: kEnum, enum: operationPriorities()},
			"OperationId":       fStr, "OperationsResourceId": fStr, "Worker": fStr, "HoursRouteCostCategoryId": fStr,
			"QuantityRouteCostCategoryId": fStr, "HourlyRate": fReal, "Hours": fReal, "GoodQuantity": fReal, "ErrorQuantity": fReal,
			"CatchWeightGoodQuantity": fReal, "CatchWeightErrorQuantity": fReal, "QuantityPrice": fReal,
			"ProcessingPercentage": fReal, "ConsumptionDate": fDate,
			"TaskType":   {kind: kEnum, enum: []string{"QueueBefore", "Setup", "Process", "Overlap", "Transport", "QueueAfter", "Burden"}},
			"ErrorCause": fErrCause, "OperationCompleted": fYesNo, "BOMConsumption": fYesNo, "ReportAsFinished": fYesNo,
		},
	},
	"ProdProductionOrderEnd": {fields: map[string]field{
		"ProductionOrderNumber": fOrder, "ExecutedDateTime": fDateTime, "EndedDate": fDate,
		"UseTimeAndAttendanceCost": fYesNo, "AutoReportAsFinished": fYesNo, "AutoUpdate": fYesNo,
	}},
}

// MessageTypes returns the supported message types, sorted.
func MessageTypes() []string {
	out := make([]string, 0, len(messageTypes))
	for n := range messageTypes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// buildContent checks a record's fields against the message type and
// returns the message content with values normalised (Yes|No for
// booleans, numbers for numeric text, dates as YYYY-MM-DD). Every problem
// is reported, sorted, in one error.
func buildContent(mt messageType, fields map[string]any, allowUnknown bool) (map[string]any, error) {
	var problems []string
	out := convertObject(mt.fields, mt.lines, fields, allowUnknown, "", &problems)
	if mt.lines != "" {
		raw, present := fields[mt.lines]
		var lines []any
		switch x := raw.(type) {
		case []any:
			lines = x
		case []map[string]any:
			for _, m := range x {
				lines = append(lines, m)
			}
		case map[string]any:
			lines = []any{x} // one line given as an object
		case nil:
		default:
			problems = append(problems, fmt.Sprintf("%s must be a list of lines, got %s", mt.lines, describe(raw)))
			present = false
		}
		switch {
		case !present || raw == nil:
			problems = append(problems, fmt.Sprintf("%s is mandatory and must hold at least one line", mt.lines))
		case len(lines) == 0 && len(problems) == 0:
			problems = append(problems, fmt.Sprintf("%s must hold at least one line", mt.lines))
		default:
			conv := make([]any, 0, len(lines))
			for i, l := range lines {
				lm, ok := l.(map[string]any)
				if !ok {
					problems = append(problems, fmt.Sprintf("%s[%d] must be an object, got %s", mt.lines, i, describe(l)))
					continue
				}
				conv = append(conv, convertObject(mt.lineFields, "", lm, allowUnknown, fmt.Sprintf("%s[%d].", mt.lines, i), &problems))
			}
			out[mt.lines] = conv
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return out, nil
}

func convertObject(spec map[string]field, lines string, in map[string]any, allowUnknown bool, prefix string, problems *[]string) map[string]any {
	out := make(map[string]any, len(in))
	for name, v := range in {
		if name == lines && lines != "" {
			continue
		}
		f, known := spec[name]
		if !known {
			if !allowUnknown {
				*problems = append(*problems, fmt.Sprintf("%s%s is not a field of this message type", prefix, name))
			} else if v != nil {
				out[name] = v
			}
			continue
		}
		if v == nil {
			continue
		}
		cv, err := convert(f, v)
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("%s%s: %v", prefix, name, err))
			continue
		}
		out[name] = cv
	}
	for name, f := range spec {
		if !f.mandatory {
			continue
		}
		if v, ok := in[name]; !ok || v == nil || v == "" {
			*problems = append(*problems, fmt.Sprintf("%s%s is mandatory", prefix, name))
		}
	}
	return out
}

func describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64, float32, int, int64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// convert normalises v for f, or says why it does not fit.
func convert(f field, v any) (any, error) {
	switch f.kind {
	case kString:
		switch x := v.(type) {
		case string:
			return x, nil
		case json.Number:
			return x.String(), nil
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64), nil
		case int:
			return strconv.Itoa(x), nil
		case int64:
			return strconv.FormatInt(x, 10), nil
		}
	case kReal, kInt:
		n, ok := number(v)
		if !ok {
			break
		}
		x, err := n.Float64()
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			break
		}
		if f.kind == kInt && x != math.Trunc(x) {
			return nil, fmt.Errorf("want an integer, got %s", n)
		}
		return n, nil
	case kDate:
		s, ok := v.(string)
		if !ok {
			break
		}
		if _, err := time.Parse("2006-01-02", s); err == nil {
			return s, nil
		}
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.Format("2006-01-02"), nil
		}
		return nil, fmt.Errorf("want a date (YYYY-MM-DD), got %q", s)
	case kDateTime:
		s, ok := v.(string)
		if !ok {
			break
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
			if _, err := time.Parse(layout, s); err == nil {
				return s, nil
			}
		}
		return nil, fmt.Errorf("want a date and time (RFC 3339), got %q", s)
	case kYesNo:
		switch x := v.(type) {
		case bool:
			if x {
				return "Yes", nil
			}
			return "No", nil
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "yes", "true":
				return "Yes", nil
			case "no", "false":
				return "No", nil
			}
			return nil, fmt.Errorf("want Yes or No, got %q", x)
		case json.Number:
			switch x.String() {
			case "1":
				return "Yes", nil
			case "0":
				return "No", nil
			}
		}
	case kEnum:
		s, ok := v.(string)
		if !ok {
			break
		}
		for _, m := range f.enum {
			if strings.EqualFold(m, s) {
				return m, nil
			}
		}
		if f.extensible {
			return s, nil
		}
		return nil, fmt.Errorf("want one of %s, got %q", strings.Join(f.enum, ", "), s)
	}
	return nil, fmt.Errorf("want %s, got %s", f.kind, describe(v))
}

// number returns v as a JSON number when it is one (or numeric text).
func number(v any) (json.Number, bool) {
	switch x := v.(type) {
	case json.Number:
		return x, isJSONNumber(x.String())
	case float64:
		return json.Number(strconv.FormatFloat(x, 'f', -1, 64)), true
	case float32:
		return json.Number(strconv.FormatFloat(float64(x), 'f', -1, 32)), true
	case int:
		return json.Number(strconv.Itoa(x)), true
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), true
	case string:
		s := strings.TrimSpace(x)
		if isJSONNumber(s) {
			return json.Number(s), true
		}
	}
	return "", false
}

// isJSONNumber reports whether s is a JSON number literal.
func isJSONNumber(s string) bool {
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil
}
