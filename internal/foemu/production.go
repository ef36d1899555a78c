package foemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// prodState is what MES messages did to a production order beyond its
// header record. Its fields are exported for the JSON snapshot.
type prodState struct {
	ReportedGood  float64
	ReportedError float64
	Consumption   map[string]float64 // item number -> consumed quantity
	Operations    map[int64]*OperationState
	StartedAt     *time.Time
	EndedAt       *time.Time
}

// OperationState is the route card progress of one operation.
type OperationState struct {
	Hours        float64 `json:"hours"`          // reported hours
	GoodQuantity float64 `json:"good_quantity"`  // reported good quantity
	ErrorQty     float64 `json:"error_quantity"` // reported error quantity
	Completed    bool    `json:"completed"`      // an OperationCompleted=Yes line was posted
}

// ProductionOrder is the emulator's view of a production order: its header
// record plus what MES messages reported.
type ProductionOrder struct {
	Company           string                    `json:"company"`                 // dataAreaId in upper case
	Number            string                    `json:"production_order"`        // ProductionOrderNumber
	ItemNumber        string                    `json:"item_number"`             // item produced
	Status            string                    `json:"status"`                  // ProductionOrderStatus (ProdStatus)
	ScheduledQuantity float64                   `json:"scheduled_quantity"`      // planned quantity
	StartedQuantity   float64                   `json:"started_quantity"`        // quantity started
	RemainingQuantity float64                   `json:"remaining_quantity"`      // RemainingReportAsFinishedQuantity
	ReportedGood      float64                   `json:"reported_good_quantity"`  // good quantity reported as finished
	ReportedError     float64                   `json:"reported_error_quantity"` // error quantity reported as finished
	Consumption       map[string]float64        `json:"consumption"`             // item number to consumed quantity
	Operations        map[string]OperationState `json:"operations"`              // operation number to route card progress
	StartedAt         *time.Time                `json:"started_at,omitempty"`    // first start
	EndedAt           *time.Time                `json:"ended_at,omitempty"`      // when the order was ended
}

// errNotApplicable carries an infolog text for a message that cannot be
// applied to the production order state.
var errNotApplicable = errors.New("cannot apply message")

func failf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errNotApplicable, fmt.Sprintf(format, args...))
}

// msgText is the infolog text of a processing error.
func msgText(err error) string { return strings.TrimPrefix(err.Error(), errNotApplicable.Error()+": ") }

// applyMessage applies a message to the production order state, all or
// nothing. The caller holds e.mu.
func (e *Emulator) applyMessage(m *Message) error {
	obj, problems := parseContent(m.Type, m.Content)
	if len(problems) > 0 {
		return failf("The message content is not valid: %s", strings.Join(problems, " "))
	}
	hdrs, _ := e.schema.Entity("ProductionOrderHeaders")
	if hdrs == nil {
		return failf("The emulator schema has no ProductionOrderHeaders entity.")
	}
	co := strings.ToLower(m.Company)
	orderNo, _ := obj["ProductionOrderNumber"].(string)
	r := e.store.get(hdrs, map[string]any{dataAreaID: co, "ProductionOrderNumber": orderNo})
	if r == nil {
		return failf("Production order %s does not exist in company %s.", orderNo, m.Company)
	}
	undo := &undoLog{}
	var err error
	a := &applier{e: e, undo: undo, co: co, order: orderNo, hdr: r, hdrs: hdrs, msg: m}
	switch m.Type {
	case "ProdProductionOrderStart":
		err = a.start(obj)
	case "ProdProductionOrderReportFinished":
		err = a.reportFinished(obj)
	case "ProdProductionOrderPickingList":
		err = a.pickingList(obj)
	case "ProdProductionOrderRouteCard":
		err = a.routeCard(obj)
	case "ProdProductionOrderEnd":
		err = a.end(obj)
	default:
		err = failf("Message type %s is not supported.", m.Type)
	}
	if err != nil {
		undo.rollback()
		return errors.New(msgText(err))
	}
	return nil
}

// applier changes one production order within an undo log.
type applier struct {
	e     *Emulator
	undo  *undoLog
	co    string
	order string
	hdr   *row
	hdrs  *Entity
	msg   *Message
}

func (a *applier) status() string { s, _ := a.hdr.vals["ProductionOrderStatus"].(string); return s }

func (a *applier) num(field string) float64 { f, _ := a.hdr.vals[field].(float64); return f }

func (a *applier) state() *prodState {
	key := a.co + "|" + strings.ToLower(a.order)
	ps := a.e.prod[key]
	if ps == nil {
		ps = &prodState{Consumption: map[string]float64{}, Operations: map[int64]*OperationState{}}
		a.e.prod[key] = ps
		a.undo.add(func() { delete(a.e.prod, key) })
	}
	return ps
}

// setHeader changes header fields of the order.
func (a *applier) setHeader(changes map[string]any) {
	rec := copyRecord(a.hdr.vals)
	for k, v := range changes {
		rec[k] = v
	}
	old, oldV := a.hdr.vals, a.hdr.version
	a.e.store.replace(a.hdrs, a.hdr, rec)
	a.undo.add(func() { a.hdr.vals, a.hdr.version = old, oldV })
}

// journal adds a posted journal line to a journal entity set.
func (a *applier) journal(set string, vals map[string]any) error {
	ent, ok := a.e.schema.Entity(set)
	if !ok {
		return nil // schema without this journal: nothing to record
	}
	in := map[string]any{}
	for k, v := range vals {
		if f, ok := ent.byName[k]; ok && v != nil {
			in[k] = a.e.schema.coerce(f, v)
		}
	}
	if f, ok := ent.byName["IsPosted"]; ok && f.Type == TypeEnum {
		in["IsPosted"] = "Yes"
	}
	rec, lines := a.e.store.prepareCreate(ent, in, a.co)
	if lines != nil {
		return failf("Write failed for table row of type '%s'. Infolog: %s", ent.Target, strings.Join(lines, "; "))
	}
	a.e.store.insert(ent, rec)
	key := a.e.store.key(ent, rec)
	a.undo.add(func() { delete(a.e.store.tables[ent.Set].rows, key); a.e.store.tables[ent.Set].sorted = nil })
	return nil
}

// mustBeReleased checks that an order can be worked on (released or
// started, not ended).
func (a *applier) mustBeActive(action string, allowReleased, allowFinished bool) error {
	switch a.status() {
	case "Released":
		if allowReleased {
			return nil
		}
		return failf("Production order %s has status Released; it must be started before %s.", a.order, action)
	case "StartedUp":
		return nil
	case "ReportedFinished":
		if allowFinished {
			return nil
		}
		return failf("Production order %s is already reported as finished; %s is not possible.", a.order, action)
	case "Completed":
		return failf("Production order %s is ended; %s is not possible.", a.order, action)
	}
	return failf("Production order %s has status %s and has not been released; %s is not possible. Release the production order first.", a.order, a.status(), action)
}

func numberOf(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	case float64:
		return x
	}
	return 0
}

func yes(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.EqualFold(x, "yes")
	case bool:
		return x
	case json.Number:
		return x.String() == "1"
	}
	return false
}

func dateOr(v any, def time.Time) string {
	if s, ok := v.(string); ok {
		if t, err := parseDateText(s); err == nil {
			return t.Format(time.DateOnly)
		}
	}
	return def.Format(time.DateOnly)
}

func (a *applier) start(obj map[string]any) error {
	switch a.status() {
	case "Released", "StartedUp":
	case "ReportedFinished", "Completed":
		return failf("Production order %s cannot be started because its status is %s.", a.order, a.status())
	default:
		return failf("Production order %s cannot be started because its status is %s. Release the production order first.", a.order, a.status())
	}
	qty := a.num("ScheduledQuantity") - a.num("StartedQuantity")
	if v, ok := obj["StartedQuantity"]; ok {
		qty = numberOf(v)
	}
	if qty < 0 {
		return failf("The started quantity %g must not be negative.", qty)
	}
	a.startQuantity(qty)
	if rule, _ := obj["AutomaticBOMConsumptionRule"].(string); strings.EqualFold(rule, "Always") {
		return a.flushBOM(qty, dateOr(obj["StartedDate"], time.Now()))
	}
	return nil
}

func (a *applier) startQuantity(qty float64) {
	a.setHeader(map[string]any{"ProductionOrderStatus": "StartedUp", "StartedQuantity": a.num("StartedQuantity") + qty})
	ps := a.state()
	if ps.StartedAt == nil {
		now := time.Now().UTC()
		ps.StartedAt = &now
		a.undo.add(func() { ps.StartedAt = nil })
	}
}

// flushBOM consumes the BOM lines of the order for qty finished units.
func (a *applier) flushBOM(qty float64, date string) error {
	bom, ok := a.e.schema.Entity("ProductionOrderBillOfMaterialLines")
	if !ok {
		return nil
	}
	for _, r := range a.e.store.rows(bom) {
		if r.vals[dataAreaID] != a.co || !strings.EqualFold(fmt.Sprint(r.vals["ProductionOrderNumber"]), a.order) {
			continue
		}
		item, _ := r.vals["ItemNumber"].(string)
		per, _ := r.vals["BOMLineQuantity"].(float64)
		if err := a.consume(item, qty*per, date, ""); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) consume(item string, qty float64, date, unit string) error {
	ps := a.state()
	ps.Consumption[item] += qty
	a.undo.add(func() { ps.Consumption[item] -= qty })
	return a.journal("ProductionPickingListJournalEntries", map[string]any{
		"ProductionOrderNumber": a.order, "ItemNumber": item, "ConsumptionBomQuantity": qty,
		"ConsumptionInventoryQuantity": qty, "ConsumptionDate": date + "T12:00:00Z", "JournalType": "Picklist",
		"BomUnitSymbol": unit,
	})
}

func (a *applier) itemExists(item string) bool {
	prods, ok := a.e.schema.Entity("ReleasedProductsV2")
	if !ok {
		return true
	}
	return a.e.store.get(prods, map[string]any{dataAreaID: a.co, "ItemNumber": item}) != nil
}

func (a *applier) reportFinished(obj map[string]any) error {
	if err := a.mustBeActive("reporting as finished", true, false); err != nil {
		return err
	}
	lines, _ := obj["ReportFinishedLines"].([]any)
	orderItem, _ := a.hdr.vals["ItemNumber"].(string)
	if a.status() == "Released" {
		a.startQuantity(a.num("ScheduledQuantity") - a.num("StartedQuantity"))
	}
	ps := a.state()
	end := false
	for i, l := range lines {
		line, _ := l.(map[string]any)
		item, _ := line["ItemNumber"].(string)
		ptype, _ := line["ProductionType"].(string)
		if item != "" && !strings.EqualFold(item, orderItem) && !strings.EqualFold(ptype, "Co_Product") && !strings.EqualFold(ptype, "By_Product") {
			return failf("Line %d: item %s is not the item %s of production order %s.", i+1, item, orderItem, a.order)
		}
		if item == "" {
			item = orderItem
		}
		good, bad := numberOf(line["ReportedGoodQuantity"]), numberOf(line["ReportedErrorQuantity"])
		if good < 0 || bad < 0 {
			return failf("Line %d: reported quantities must not be negative.", i+1)
		}
		ps.ReportedGood += good
		ps.ReportedError += bad
		a.undo.add(func() { ps.ReportedGood -= good; ps.ReportedError -= bad })
		remaining := math.Max(0, a.num("RemainingReportAsFinishedQuantity")-good)
		a.setHeader(map[string]any{"RemainingReportAsFinishedQuantity": remaining})
		date := dateOr(line["ReportAsFinishedDate"], time.Now())
		if err := a.journal("ReportAsFinishedProductionJournalEntries", map[string]any{
			"ProductionOrderNumber": a.order, "ItemNumber": item, "ReportedGoodInventoryQuantity": good,
			"ReportedErrorInventoryQuantity": bad, "ReportAsFinishedDate": date + "T12:00:00Z",
			"IsLastReportAsFinished": yesNoText(yes(line["EndJob"])), "ProductionType": enumOr(ptype, "MainItem"),
			"WillAsFinishedPostingAcceptQuantityError": yesNoText(yes(line["AcceptError"])),
			"ItemBatchNumber":                          line["ItemBatchNumber"], "LicensePlateNumber": line["LicensePlateNumber"],
		}); err != nil {
			return err
		}
		if rule, _ := line["AutomaticBOMConsumptionRule"].(string); strings.EqualFold(rule, "Always") {
			if err := a.flushBOM(good+bad, date); err != nil {
				return err
			}
		}
		if yes(line["EndJob"]) {
			end = true
		}
	}
	if end || a.num("RemainingReportAsFinishedQuantity") <= 0 {
		a.setHeader(map[string]any{"ProductionOrderStatus": "ReportedFinished"})
	}
	return nil
}

func yesNoText(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func enumOr(s, def string) string {
	for _, m := range []string{"None", "MainItem", "Formula", "BOM", "Co_Product", "By_Product"} {
		if strings.EqualFold(m, s) {
			return m
		}
	}
	return def
}

func (a *applier) pickingList(obj map[string]any) error {
	if err := a.mustBeActive("posting a picking list", false, true); err != nil {
		return err
	}
	lines, _ := obj["PickingListLines"].([]any)
	for i, l := range lines {
		line, _ := l.(map[string]any)
		item, _ := line["ItemNumber"].(string)
		if !a.itemExists(item) {
			return failf("Line %d: item number %s does not exist in company %s.", i+1, item, strings.ToUpper(a.co))
		}
		qty := numberOf(line["ConsumptionBOMQuantity"])
		if _, ok := line["ConsumptionBOMQuantity"]; !ok {
			qty = numberOf(line["ConsumptionInventoryQuantity"])
		}
		unit, _ := line["BOMUnitSymbol"].(string)
		if err := a.consume(item, qty, dateOr(line["ConsumptionDate"], time.Now()), unit); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) routeCard(obj map[string]any) error {
	if err := a.mustBeActive("posting a route card", false, true); err != nil {
		return err
	}
	ops, _ := a.e.schema.Entity("ProductionOrderRouteOperations")
	lines, _ := obj["RouteCardLines"].([]any)
	ps := a.state()
	for i, l := range lines {
		line, _ := l.(map[string]any)
		opNo := int64(numberOf(line["OperationNumber"]))
		prio, _ := line["OperationPriority"].(string)
		if prio == "" {
			prio = "Primary"
		}
		if ops != nil {
			found := false
			for _, r := range a.e.store.rows(ops) {
				if r.vals[dataAreaID] == a.co && strings.EqualFold(fmt.Sprint(r.vals["ProductionOrderNumber"]), a.order) && r.vals["OperationNumber"] == opNo {
					found = true
				}
			}
			if !found {
				return failf("Line %d: operation %d does not exist on the route of production order %s.", i+1, opNo, a.order)
			}
		}
		st := ps.Operations[opNo]
		if st == nil {
			st = &OperationState{}
			ps.Operations[opNo] = st
			a.undo.add(func() { delete(ps.Operations, opNo) })
		}
		prev := *st
		a.undo.add(func() { *st = prev })
		hours, good, bad := numberOf(line["Hours"]), numberOf(line["GoodQuantity"]), numberOf(line["ErrorQuantity"])
		st.Hours += hours
		st.GoodQuantity += good
		st.ErrorQty += bad
		st.Completed = st.Completed || yes(line["OperationCompleted"])
		if err := a.journal("RouteCardProductionJournalEntries", map[string]any{
			"ProductionOrderNumber": a.order, "RouteOperationNumber": opNo, "RouteOperationPriority": prio,
			"OperationsResourceId": line["OperationsResourceId"], "RegisteredHours": hours,
			"ReportedGoodInventoryQuantity": good, "ReportedErrorInventoryQuantity": bad,
			"IsOperationCompleted": yesNoText(yes(line["OperationCompleted"])), "HourlyCostCategoryRate": numberOf(line["HourlyRate"]),
		}); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) end(obj map[string]any) error {
	switch a.status() {
	case "ReportedFinished":
	case "StartedUp":
		if !yes(obj["AutoReportAsFinished"]) {
			return failf("Production order %s must be reported as finished before it can be ended.", a.order)
		}
		remaining := a.num("RemainingReportAsFinishedQuantity")
		ps := a.state()
		ps.ReportedGood += remaining
		a.undo.add(func() { ps.ReportedGood -= remaining })
		if err := a.journal("ReportAsFinishedProductionJournalEntries", map[string]any{
			"ProductionOrderNumber": a.order, "ItemNumber": a.hdr.vals["ItemNumber"], "ReportedGoodInventoryQuantity": remaining,
			"ReportAsFinishedDate": dateOr(obj["EndedDate"], time.Now()) + "T12:00:00Z", "IsLastReportAsFinished": "Yes",
		}); err != nil {
			return err
		}
		a.setHeader(map[string]any{"RemainingReportAsFinishedQuantity": float64(0)})
	case "Completed":
		return failf("Production order %s is already ended.", a.order)
	default:
		return failf("Production order %s has status %s; only orders reported as finished can be ended.", a.order, a.status())
	}
	a.setHeader(map[string]any{"ProductionOrderStatus": "Completed"})
	ps := a.state()
	now := time.Now().UTC()
	ps.EndedAt = &now
	a.undo.add(func() { ps.EndedAt = nil })
	return nil
}

// ProductionOrders returns every production order with the progress MES
// messages reported, ordered by company and number.
func (e *Emulator) ProductionOrders() []ProductionOrder {
	e.mu.Lock()
	defer e.mu.Unlock()
	hdrs, ok := e.schema.Entity("ProductionOrderHeaders")
	if !ok {
		return nil
	}
	var out []ProductionOrder
	for _, r := range e.store.rows(hdrs) {
		v := r.vals
		num := func(f string) float64 { x, _ := v[f].(float64); return x }
		po := ProductionOrder{
			Company: strings.ToUpper(fmt.Sprint(v[dataAreaID])), Number: fmt.Sprint(v["ProductionOrderNumber"]),
			ItemNumber: fmt.Sprint(v["ItemNumber"]), Status: fmt.Sprint(v["ProductionOrderStatus"]),
			ScheduledQuantity: num("ScheduledQuantity"), StartedQuantity: num("StartedQuantity"),
			RemainingQuantity: num("RemainingReportAsFinishedQuantity"),
			Consumption:       map[string]float64{}, Operations: map[string]OperationState{},
		}
		if ps := e.prod[strings.ToLower(fmt.Sprint(v[dataAreaID]))+"|"+strings.ToLower(po.Number)]; ps != nil {
			po.ReportedGood, po.ReportedError = ps.ReportedGood, ps.ReportedError
			for k, q := range ps.Consumption {
				po.Consumption[k] = q
			}
			ops := make([]int64, 0, len(ps.Operations))
			for k := range ps.Operations {
				ops = append(ops, k)
			}
			sort.Slice(ops, func(i, j int) bool { return ops[i] < ops[j] })
			for _, k := range ops {
				po.Operations[strconv.FormatInt(k, 10)] = *ps.Operations[k]
			}
			po.StartedAt, po.EndedAt = ps.StartedAt, ps.EndedAt
		}
		out = append(out, po)
	}
	return out
}
