package foemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantgate/plantgate/internal/logging"
)

// MESQueue is the message queue of the MES integration.
const MESQueue = "JmgMES3P"

// sendMessagePath is the message service endpoint.
const sendMessagePath = "/api/services/SysMessageServices/SysMessageService/SendMessage"

// MessageState is the state of a message in the message processor.
type MessageState string

// Message states, as F&O names them.
const (
	MessageQueued    MessageState = "Queued"
	MessageProcessed MessageState = "Processed"
	MessageFailed    MessageState = "Failed"
	MessageCanceled  MessageState = "Canceled"
)

// Message is a message received through SendMessage.
type Message struct {
	// ID numbers messages in order of arrival, from 1.
	ID int64 `json:"id"`
	// Company, Queue, Type and Content are the SendMessage parameters.
	Company string `json:"company"`
	Queue   string `json:"queue"`   // _messageQueue (JmgMES3P)
	Type    string `json:"type"`    // _messageType
	Content string `json:"content"` // _messageContent as sent
	// ProductionOrder is the ProductionOrderNumber of the content; messages
	// of the same order are processed in order of arrival.
	ProductionOrder string `json:"production_order,omitempty"`
	// State is Queued, Processed or Failed.
	State MessageState `json:"state"`
	// Attempts counts processing attempts.
	Attempts int `json:"attempts"`
	// Infolog holds the result text of the last attempt.
	Infolog string `json:"infolog,omitempty"`
	// Log holds one line per attempt.
	Log []string `json:"log,omitempty"`
	// ClientID is the application that sent the message.
	ClientID string `json:"client_id"`
	// ReceivedAt and ProcessedAt are the arrival and final times.
	ReceivedAt  time.Time  `json:"received_at"`
	ProcessedAt *time.Time `json:"processed_at,omitempty"` // when it was Processed or Failed

	next     time.Time
	inflight bool
	gen      int64
}

// mesKind is the type of a message field.
type mesKind int

const (
	mesString mesKind = iota
	mesReal
	mesInt
	mesDate
	mesDateTime
	mesEnum
	mesYesNo
)

type mesField struct {
	kind       mesKind
	mandatory  bool
	enum       []string
	extensible bool // extensible enums accept values beyond the listed ones
}

type mesType struct {
	fields     map[string]mesField
	lines      string // name of the lines array, if any
	lineFields map[string]mesField
}

var (
	bomRule   = mesField{kind: mesEnum, enum: []string{"FlushingPrincip", "Always", "Never"}}
	routeRule = mesField{kind: mesEnum, enum: []string{"RouteDependent", "Always", "Never"}}
	errCause  = mesField{kind: mesEnum, enum: []string{"None", "Material", "Machine", "OperatingStaff"}, extensible: true}
	yesNo     = mesField{kind: mesYesNo}
	str       = mesField{kind: mesString}
	realF     = mesField{kind: mesReal}
	orderNo   = mesField{kind: mesString, mandatory: true}
)

func withDimensions(m map[string]mesField) map[string]mesField {
	for _, n := range []string{"ProductColorId", "ProductConfigurationId", "ProductSizeId", "ProductStyleId", "ProductVersionId",
		"ItemBatchNumber", "ProductSerialNumber", "LicensePlateNumber", "InventoryStatusId", "ProductionWarehouseId",
		"ProductionSiteId", "ProductionWarehouseLocationId"} {
		m[n] = str
	}
	for i := 1; i <= 12; i++ {
		m["InventoryDimension"+strconv.Itoa(i)] = str
	}
	return m
}

// mesTypes are the message types of queue JmgMES3P with their fields.
var mesTypes = map[string]mesType{
	"ProdProductionOrderStart": {fields: map[string]mesField{
		"ProductionOrderNumber": orderNo, "StartedQuantity": realF, "StartedDate": {kind: mesDate},
		"AutomaticBOMConsumptionRule": bomRule, "AutomaticRouteConsumptionRule": routeRule,
	}},
	"ProdProductionOrderReportFinished": {
		fields: map[string]mesField{"ProductionOrderNumber": orderNo},
		lines:  "ReportFinishedLines",
		lineFields: withDimensions(map[string]mesField{
			"LineNumber": realF, "ItemNumber": str,
			"ProductionType":        {kind: mesEnum, enum: []string{"MainItem", "Formula", "BOM", "Co_Product", "By_Product", "None"}, extensible: true},
			"ReportedErrorQuantity": realF, "ReportedGoodQuantity": realF, "ReportedErrorCatchWeightQuantity": realF,
			"ReportedGoodCatchWeightQuantity": realF, "AcceptError": yesNo, "ErrorCause": errCause,
			"ExecutedDateTime": {kind: mesDateTime}, "ReportAsFinishedDate": {kind: mesDate},
			"AutomaticBOMConsumptionRule": bomRule, "AutomaticRouteConsumptionRule": routeRule,
			"RespectFlushingPrincipleDuringOverproduction": yesNo, "ProductionJournalNameId": str,
			"PickingListProductionJournalNameId": str, "RouteCardProductionJournalNameId": str,
			"FromOperationNumber": {kind: mesInt}, "ToOperationNumber": {kind: mesInt}, "InventoryLotId": str,
			"BaseValue": str, "EndJob": yesNo, "EndPickingList": yesNo, "EndRouteCard": yesNo, "PostNow": yesNo,
			"AutoUpdate": yesNo,
		}),
	},
	"ProdProductionOrderPickingList": {
		fields: map[string]mesField{"ProductionOrderNumber": orderNo, "JournalNameId": str},
		lines:  "PickingListLines",
		lineFields: withDimensions(map[string]mesField{
			"ItemNumber": {kind: mesString, mandatory: true}, "ConsumptionBOMQuantity": realF, "ProposalBOMQuantity": realF,
			"ScrapBOMQuantity": realF, "BOMUnitSymbol": str, "ConsumptionInventoryQuantity": realF,
			"ProposalInventoryQuantity": realF, "ConsumptionCatchWeightQuantity": realF, "ProposalCatchWeightQuantity": realF,
			"ConsumptionDate": {kind: mesDate}, "OperationNumber": {kind: mesInt}, "LineNumber": realF, "PositionNumber": str,
			"IsConsumptionEnded": yesNo, "ErrorCause": errCause, "InventoryLotId": str,
		}),
	},
	"ProdProductionOrderRouteCard": {
		fields: map[string]mesField{"ProductionOrderNumber": orderNo, "JournalNameId": str},
		lines:  "RouteCardLines",
		lineFields: map[string]mesField{
			"OperationNumber":   {kind: mesInt, mandatory: true},
			"OperationPriority": {kind: mesEnum, enum: routePriorities()},
			"OperationId":       str, "OperationsResourceId": str, "Worker": str, "HoursRouteCostCategoryId": str,
			"QuantityRouteCostCategoryId": str, "HourlyRate": realF, "Hours": realF, "GoodQuantity": realF, "ErrorQuantity": realF,
			"CatchWeightGoodQuantity": realF, "CatchWeightErrorQuantity": realF, "QuantityPrice": realF,
			"ProcessingPercentage": realF, "ConsumptionDate": {kind: mesDate},
			"TaskType":   {kind: mesEnum, enum: []string{"QueueBefore", "Setup", "Process", "Overlap", "Transport", "QueueAfter", "Burden"}},
			"ErrorCause": errCause, "OperationCompleted": yesNo, "BOMConsumption": yesNo, "ReportAsFinished": yesNo,
		},
	},
	"ProdProductionOrderEnd": {fields: map[string]mesField{
		"ProductionOrderNumber": orderNo, "ExecutedDateTime": {kind: mesDateTime}, "EndedDate": {kind: mesDate},
		"UseTimeAndAttendanceCost": yesNo, "AutoReportAsFinished": yesNo, "AutoUpdate": yesNo,
	}},
}

func routePriorities() []string {
	out := []string{"Primary"}
	for i := 1; i <= 20; i++ {
		out = append(out, "Secondary"+strconv.Itoa(i))
	}
	return out
}

// mesTypeNames lists the message types, sorted.
func mesTypeNames() []string {
	out := make([]string, 0, len(mesTypes))
	for n := range mesTypes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// parseContent decodes and validates message content. It returns the
// decoded object and the problems found (empty when valid).
func parseContent(typ, content string) (map[string]any, []string) {
	mt, ok := mesTypes[typ]
	if !ok {
		return nil, []string{fmt.Sprintf("Message type '%s' is not valid for message queue '%s'. Valid types: %s.", typ, MESQueue, strings.Join(mesTypeNames(), ", "))}
	}
	dec := json.NewDecoder(strings.NewReader(content))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, []string{"The message content is not a JSON object: " + strings.TrimPrefix(fmt.Sprint(err), "json: ") + "."}
	}
	if dec.More() {
		return nil, []string{"The message content holds more than one JSON value."}
	}
	var problems []string
	problems = append(problems, checkFields(obj, mt.fields, mt.lines, "")...)
	if mt.lines != "" {
		raw, present := obj[mt.lines]
		lines, isArr := raw.([]any)
		switch {
		case !present || raw == nil:
			problems = append(problems, fmt.Sprintf("Field '%s' is mandatory and must hold at least one line.", mt.lines))
		case !isArr:
			problems = append(problems, fmt.Sprintf("Field '%s' must be a JSON array of lines.", mt.lines))
		case len(lines) == 0:
			problems = append(problems, fmt.Sprintf("Field '%s' must hold at least one line.", mt.lines))
		default:
			for i, l := range lines {
				lo, ok := l.(map[string]any)
				if !ok {
					problems = append(problems, fmt.Sprintf("%s[%d] must be a JSON object.", mt.lines, i))
					continue
				}
				problems = append(problems, checkFields(lo, mt.lineFields, "", fmt.Sprintf("%s[%d].", mt.lines, i))...)
			}
		}
	}
	return obj, problems
}

func checkFields(obj map[string]any, fields map[string]mesField, linesField, prefix string) []string {
	var problems []string
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k == linesField && linesField != "" {
			continue
		}
		f, ok := fields[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("Field '%s%s' is not a field of this message type.", prefix, k))
			continue
		}
		if msg := checkValue(f, obj[k]); msg != "" {
			problems = append(problems, fmt.Sprintf("Field '%s%s': %s", prefix, k, msg))
		}
	}
	mand := make([]string, 0)
	for k, f := range fields {
		if f.mandatory {
			mand = append(mand, k)
		}
	}
	sort.Strings(mand)
	for _, k := range mand {
		if v, ok := obj[k]; !ok || v == nil || v == "" {
			problems = append(problems, fmt.Sprintf("Field '%s%s' is mandatory.", prefix, k))
		}
	}
	return problems
}

// checkValue returns a problem with v as a value of f, or "".
func checkValue(f mesField, v any) string {
	if v == nil {
		return ""
	}
	switch f.kind {
	case mesString:
		if _, ok := v.(string); !ok {
			return "a string was expected."
		}
	case mesReal, mesInt:
		var x float64
		switch n := v.(type) {
		case json.Number:
			var err error
			if x, err = n.Float64(); err != nil {
				return "a number was expected."
			}
		case string:
			var err error
			if x, err = strconv.ParseFloat(n, 64); err != nil {
				return "a number was expected."
			}
		default:
			return "a number was expected."
		}
		if f.kind == mesInt && x != math.Trunc(x) {
			return "an integer was expected."
		}
	case mesDate, mesDateTime:
		s, ok := v.(string)
		if !ok {
			return "a date string (YYYY-MM-DD) was expected."
		}
		if _, err := parseDateText(s); err != nil {
			return fmt.Sprintf("'%s' is not a valid date.", s)
		}
	case mesYesNo:
		if !isYesNo(v) {
			return "Yes or No was expected."
		}
	case mesEnum:
		s, ok := v.(string)
		if !ok {
			return fmt.Sprintf("one of %s was expected.", strings.Join(f.enum, ", "))
		}
		if f.extensible {
			return ""
		}
		for _, m := range f.enum {
			if strings.EqualFold(m, s) {
				return ""
			}
		}
		return fmt.Sprintf("'%s' is not one of %s.", s, strings.Join(f.enum, ", "))
	}
	return ""
}

func isYesNo(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.EqualFold(x, "yes") || strings.EqualFold(x, "no")
	case bool:
		return true
	case json.Number:
		return x.String() == "0" || x.String() == "1"
	}
	return false
}

// serviceError writes the error shape of F&O JSON custom services.
func serviceError(w http.ResponseWriter, status int, message, exceptionType string) {
	writeJSON(w, status, map[string]any{
		"Message":          message,
		"ExceptionType":    exceptionType,
		"ExceptionMessage": message,
		"StackTrace":       "",
	})
}

// serveMES answers the message service. Only SendMessage exists.
func (e *Emulator) serveMES(w http.ResponseWriter, r *http.Request, cl *ClientConfig) {
	if r.URL.Path != sendMessagePath {
		writeODataError(w, http.StatusNotFound, "No service operation was found at '"+r.URL.Path+"'. The emulator implements "+sendMessagePath+".", typeNotFound, "")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		serviceError(w, http.StatusMethodNotAllowed, "The requested resource does not support http method '"+r.Method+"'.", "HttpException")
		return
	}
	status := e.cfg.MES.RejectStatus
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		serviceError(w, http.StatusRequestEntityTooLarge, "The request body is too large.", "HttpException")
		return
	}
	deser := func(detail string) {
		e.log.Debug().Str(logging.FieldClientID, cl.ClientID).Str(logging.FieldReason, detail).Msg("message rejected")
		// F&O's own spelling, kept so that clients matching on it work.
		serviceError(w, status, "An exception occured when deserializing a parameters - "+detail, "XppServicesDeserializationException") //nolint:misspell // F&O's text
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var env map[string]any
	if err := dec.Decode(&env); err != nil || env == nil {
		deser("Exception occurred when parsing the request content - the body must be a JSON object with _companyId, _messageQueue, _messageType and _messageContent.")
		return
	}
	params := map[string]string{}
	for _, name := range []string{"_companyId", "_messageQueue", "_messageType", "_messageContent"} {
		v, ok := env[name]
		if !ok {
			deser(fmt.Sprintf("Parameter '%s' is not found within the request content body.", name))
			return
		}
		s, ok := v.(string)
		if !ok {
			kind := "a non-string value"
			switch v.(type) {
			case map[string]any:
				kind = "StartObject"
			case []any:
				kind = "StartArray"
			case json.Number:
				kind = "Integer"
			case bool:
				kind = "Boolean"
			case nil:
				kind = "Null"
			}
			hint := ""
			if name == "_messageContent" {
				hint = " _messageContent must be the message JSON serialized into a string, not a nested object."
			}
			deser(fmt.Sprintf("Exception occurred when parsing and deserializing parameter '%s' - 'Unexpected token while reading a string: %s. Path '%s'.'%s", name, kind, name, hint))
			return
		}
		params[name] = s
	}
	invoke := func(detail string) {
		e.log.Debug().Str(logging.FieldClientID, cl.ClientID).Str(logging.FieldReason, detail).Msg("message rejected")
		serviceError(w, status, "An exception occured when invoking the operation - "+detail, "ErrorException") //nolint:misspell // F&O's text
	}
	company := params["_companyId"]
	if !e.companyExists(company) {
		invoke(fmt.Sprintf("Company '%s' does not exist.", company))
		return
	}
	if params["_messageQueue"] != MESQueue {
		invoke(fmt.Sprintf("Message queue '%s' does not exist. The MES integration uses queue '%s'.", params["_messageQueue"], MESQueue))
		return
	}
	typ := params["_messageType"]
	if _, ok := mesTypes[typ]; !ok {
		invoke(fmt.Sprintf("Message type '%s' is not valid for message queue '%s'. Valid types: %s.", typ, MESQueue, strings.Join(mesTypeNames(), ", ")))
		return
	}
	obj, problems := parseContent(typ, params["_messageContent"])
	if len(problems) > 0 && *e.cfg.MES.ValidateOnSend {
		invoke(fmt.Sprintf("The message content is not valid for message type '%s': %s", typ, strings.Join(problems, " ")))
		return
	}
	order, _ := obj["ProductionOrderNumber"].(string)
	now := time.Now().UTC()
	e.mu.Lock()
	e.msgSeq++
	m := &Message{
		ID: e.msgSeq, Company: strings.ToUpper(company), Queue: MESQueue, Type: typ, Content: params["_messageContent"],
		ProductionOrder: order, State: MessageQueued, ClientID: cl.ClientID, ReceivedAt: now,
		next: now.Add(e.cfg.MES.ProcessingDelay.D()), gen: e.msgGen(),
	}
	e.messages = append(e.messages, m)
	e.queued = append(e.queued, m)
	e.mu.Unlock()
	e.signalMES()
	e.log.Debug().Int64(logging.FieldMessageID, m.ID).Str(logging.FieldMessageType, typ).Str(logging.FieldOrder, order).Msg("message queued")
	w.Header().Set("X-FOEmulator-Message-Id", strconv.FormatInt(m.ID, 10))
	w.WriteHeader(http.StatusOK)
}

// msgGen identifies the current state generation; Reset bumps it so that
// messages in flight from before a reset are dropped. The caller holds e.mu.
func (e *Emulator) msgGen() int64 { return e.gen }

func (e *Emulator) companyExists(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.store.companyKnown(id)
}

func (e *Emulator) signalMES() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// runMESProcessor processes queued messages: in order of arrival per
// production order, different orders in parallel on up to Workers
// goroutines, each message tried Attempts times before it is Failed.
func (e *Emulator) runMESProcessor(ctx context.Context) {
	workers := e.cfg.MES.Workers
	var wg sync.WaitGroup
	defer wg.Wait()
	busy := 0
	done := make(chan struct{}, workers)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		e.mu.Lock()
		ready, next := e.readyMessages(now, workers-busy)
		e.mu.Unlock()
		for _, m := range ready {
			busy++
			wg.Add(1)
			go func(m *Message) {
				defer wg.Done()
				e.processMessage(m)
				done <- struct{}{}
			}(m)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Millisecond, next.Sub(now))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-done:
			busy--
		case <-e.wake:
		case <-timer.C:
		}
	}
}

// readyMessages picks up to n messages to process now: the oldest queued
// message of each production order, if it is due and not in flight. It
// also returns when the next message becomes due. The caller holds e.mu.
func (e *Emulator) readyMessages(now time.Time, n int) ([]*Message, time.Time) {
	var ready []*Message
	var next time.Time
	blocked := map[string]bool{}
	kept := e.queued[:0]
	for _, m := range e.queued {
		if m.State != MessageQueued {
			continue
		}
		kept = append(kept, m)
		key := strings.ToLower(m.Company + "|" + m.ProductionOrder)
		if m.ProductionOrder == "" {
			key = "#" + strconv.FormatInt(m.ID, 10)
		}
		if blocked[key] {
			continue
		}
		blocked[key] = true
		if m.inflight {
			continue
		}
		if m.next.After(now) {
			if next.IsZero() || m.next.Before(next) {
				next = m.next
			}
			continue
		}
		if len(ready) < n {
			m.inflight = true
			ready = append(ready, m)
		}
	}
	clear(e.queued[len(kept):])
	e.queued = kept
	return ready, next
}

// processMessage runs one attempt and raises the business events of its
// outcome (the message's result, production order status changes).
func (e *Emulator) processMessage(m *Message) {
	e.ev.mu.Lock()
	cfg := e.ev.cfg
	e.ev.mu.Unlock()
	e.mu.Lock()
	before := m.State
	e.processMessageLocked(m)
	var evs []map[string]any
	if before == MessageQueued && (m.State == MessageProcessed || m.State == MessageFailed) {
		evs = append(evs, e.messageEvent(m, cfg))
		evs = append(evs, e.orderChangesLocked(cfg)...)
	}
	e.mu.Unlock()
	e.raise(evs)
}

// noteOrderChanges raises business events for production orders whose
// status changed since they were last seen.
func (e *Emulator) noteOrderChanges() {
	e.ev.mu.Lock()
	cfg := e.ev.cfg
	e.ev.mu.Unlock()
	e.mu.Lock()
	evs := e.orderChangesLocked(cfg)
	e.mu.Unlock()
	e.raise(evs)
}

func (e *Emulator) processMessageLocked(m *Message) {
	m.inflight = false
	if m.gen != e.msgGen() || m.State != MessageQueued {
		return
	}
	m.Attempts++
	now := time.Now().UTC()
	err := e.applyMessage(m)
	if err == nil {
		m.State = MessageProcessed
		m.Infolog = "Info: Message processed."
		m.Log = append(m.Log, fmt.Sprintf("%s attempt %d: processed", now.Format(time.RFC3339), m.Attempts))
		m.ProcessedAt = &now
		e.log.Debug().Int64(logging.FieldMessageID, m.ID).Str(logging.FieldState, string(m.State)).Msg("message processed")
		return
	}
	m.Infolog = "Error: " + msgText(err)
	m.Log = append(m.Log, fmt.Sprintf("%s attempt %d: %s", now.Format(time.RFC3339), m.Attempts, m.Infolog))
	if m.Attempts >= e.cfg.MES.Attempts {
		m.State = MessageFailed
		m.ProcessedAt = &now
		e.log.Info().Int64(logging.FieldMessageID, m.ID).Str(logging.FieldMessageType, m.Type).
			Str(logging.FieldOrder, m.ProductionOrder).Str(logging.FieldReason, err.Error()).Msg("message failed")
		return
	}
	m.next = now.Add(e.cfg.MES.RetryDelay.D())
}

// Messages returns copies of all messages in order of arrival.
func (e *Emulator) Messages() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Message, len(e.messages))
	for i, m := range e.messages {
		out[i] = *m
		out[i].Log = append([]string(nil), m.Log...)
	}
	return out
}
