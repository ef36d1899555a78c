package app

import (
	"fmt"
	"strings"

	"github.com/plantgate/plantgate/internal/config"
	"github.com/plantgate/plantgate/plugins/outputs"
	"github.com/plantgate/plantgate/plugins/outputs/foodata"
)

// Integration pattern limits used by PatternAdvice and by the status's
// drift check (rates.go), in records per second. Sources:
// /work/shared/docs/d365-facts.md sections 3 and 11, design.md "The
// integration patterns".
const (
	// maxSyncRate: OData and the MES message service take one request per
	// record. F&O's user-based service protection allows one client (user
	// or app + client ID) 6,000 requests per 300 s, 20 per second, and the
	// resource-based limits, on by default, publish no number at all. The
	// 20/s (also the default fo environment max_requests_per_second) is
	// shared by every flow of the environment, the reads that verify a
	// record in doubt, probes and the catch-up after an outage, so one flow
	// above a quarter of it is bulk: DMF, which service protection exempts.
	maxSyncRate = 5.0
	// telemetryRate: 50 records/s is 180,000 an hour, 4.3 million a day,
	// the volume of machine telemetry, not of business transactions. The
	// fastest bulk load into F&O on record is 1M journal lines in 2 h 29 min
	// (about 110 lines/s, custom file integration, section 11 [S28]) and
	// Microsoft publishes no DMF rows/minute figure; one flow at 50/s would
	// take half of that on any F&O sink, DMF included. Below it (design.md's
	// example: consumption at 40/s) DMF is the right path.
	telemetryRate = 50.0
)

// Sink types by integration pattern. Advice names only the types that
// are registered in this build (outputs.Types), never one that does not
// exist yet.
var (
	syncSinkTypes = []string{"fo.odata", "fo.mes"}
	bulkSinkTypes = []string{"fo.dmf"}
)

// dualWriteEntitySets are F&O entity sets of master data that Dual-write's
// out-of-box maps keep in sync between F&O and Dataverse (customers,
// vendors, products and their groups; d365-facts.md section 10). The list
// is short on purpose: only master data no shop-floor transaction writes.
// Besides these, an entity set whose name starts with "CDS" (F&O's
// entities made for Dataverse, such as CDSReleasedDistinctProducts) or
// contains "Dataverse" counts, case-insensitively.
var dualWriteEntitySets = []string{
	"CustomersV3", "CustomersV2", "VendorsV2", "CustomerGroups", "VendorGroups",
	"ProductsV2", "ReleasedProductsV2", "ReleasedDistinctProductsV2",
}

// isDualWriteEntity says whether an OData entity set is master data that
// Dual-write syncs.
func isDualWriteEntity(set string) bool {
	for _, s := range dualWriteEntitySets {
		if strings.EqualFold(set, s) {
			return true
		}
	}
	l := strings.ToLower(set)
	return strings.HasPrefix(l, "cds") || strings.Contains(l, "dataverse")
}

// odataEntity returns the entity set of a fo.odata sink's settings.
func odataEntity(s *config.Plugin) string {
	if c, ok := s.Settings.(*foodata.Config); ok && c != nil {
		return c.Entity
	}
	return ""
}

// registeredSinks returns the types among types that are registered.
func registeredSinks(types []string) []string {
	var out []string
	for _, t := range types {
		if _, ok := outputs.Lookup(t); ok {
			out = append(out, t)
		}
	}
	return out
}

func isSyncSink(typ string) bool { return typ == "fo.odata" || typ == "fo.mes" }

// telemetryAdvice says what to do with telemetry-rate values.
const telemetryAdvice = "aggregate before sending (for example good and scrap counts per order and shift, " +
	"one consumption line per BOM line and shift) and keep the raw values in a historian"

// PatternAdvice warns when a flow does not fit the integration pattern of
// its sinks (design.md, "The integration patterns"):
//   - a declared rate at telemetry level (telemetryRate) to any F&O sink:
//     F&O is not a telemetry store, aggregate first;
//   - a declared rate above maxSyncRate to OData or the MES message
//     service: route it to DMF;
//   - an urgent flow to DMF: its batches are minutes apart;
//   - a flow writing master data that Dual-write syncs (customers,
//     vendors, products) through OData: not a gateway path.
//
// Each warning is at the flow, whose path Problem.String prints; the
// message does not repeat it. A flow without expect is judged only on
// what it writes; check-config does not ask for expect, because flows
// that predate it (configs/demo.yaml's order-lot) would warn.
func PatternAdvice(cfg *config.Config) []config.Problem {
	var out []config.Problem
	for _, name := range cfg.FlowOrder {
		f := cfg.Flows[name]
		if f == nil {
			continue
		}
		pos := f.Pos
		if pos.Path == "" {
			pos.Path = "flows." + name
		}
		rate := f.Expect.PerSecond()
		add := func(msg string) { out = append(out, config.Problem{Pos: pos, Msg: msg}) }
		for _, sn := range f.To {
			s := cfg.Sinks[sn]
			if s == nil {
				continue
			}
			switch {
			case strings.HasPrefix(s.Type, "fo.") && rate >= telemetryRate:
				add(fmt.Sprintf("expects %s to sink %s (%s): that is telemetry volume (%s a day), and F&O is not a telemetry store; %s",
					declaredRate(f.Expect), sn, s.Type, dailyWords(rate), telemetryAdvice))
			case isSyncSink(s.Type) && rate > maxSyncRate:
				add(fmt.Sprintf("expects %s to sink %s (%s): above what F&O's throttling tolerates for one client "+
					"(about %s, one request per record); %s", declaredRate(f.Expect), sn, s.Type, rateWords(maxSyncRate), bulkAdvice()))
			}
			if strings.HasPrefix(s.Type, "fo.dmf") && f.Expect.Urgent {
				msg := fmt.Sprintf("is urgent but sink %s (%s) imports in batches minutes apart", sn, s.Type)
				if sync := registeredSinks(syncSinkTypes); len(sync) > 0 {
					msg += "; route urgent records to " + strings.Join(sync, " or ")
				}
				add(msg)
			}
			if s.Type == "fo.odata" {
				if set := odataEntity(s); isDualWriteEntity(set) {
					add(fmt.Sprintf("writes %s through sink %s (%s): master data that Dual-write keeps in sync between F&O and "+
						"Dataverse apps, not shop-floor transactions; plantgate is not the path for it: maintain it in F&O "+
						"(or Dataverse) and let Dual-write sync it", set, sn, s.Type))
				}
			}
		}
	}
	return append(out, orderScopeAdvice(cfg)...)
}

// declaredRate prints a declared rate, with records/s when it is written
// per minute or hour.
func declaredRate(e config.Expect) string {
	if strings.HasSuffix(e.Rate, "/s") {
		return strings.TrimSuffix(e.Rate, "/s") + " records/s"
	}
	return e.Rate + " (" + rateWords(e.PerSecond()) + ")"
}

// dailyWords prints a rate per second as records per day.
func dailyWords(r float64) string {
	d := r * 86400
	if d >= 1e6 {
		return strings.TrimSuffix(fmt.Sprintf("%.1f", d/1e6), ".0") + " million records"
	}
	return fmt.Sprintf("%.0f records", d)
}

// orderScopeAdvice warns when two sinks of one type keep order in the same
// scope (pipeline.SinkFactory.OrderScope): two fo.mes sinks of one F&O
// environment and company each keep a production order's messages in
// order, but not across each other.
func orderScopeAdvice(cfg *config.Config) []config.Problem {
	var out []config.Problem
	first := map[string]string{}
	for _, sn := range cfg.SinkOrder {
		s := cfg.Sinks[sn]
		f, ok := outputs.Lookup(s.Type)
		if !ok || f.OrderScope == nil {
			continue
		}
		scope := s.Type + " " + f.OrderScope(s.Settings)
		prev, seen := first[scope]
		if !seen {
			first[scope] = sn
			continue
		}
		pos := s.Pos
		if pos.Path == "" {
			pos.Path = "sinks." + sn
		}
		out = append(out, config.Problem{Pos: pos, Msg: fmt.Sprintf(
			"sinks %s and %s are both %s sinks of %s: each keeps a production order's records in order, but not across "+
				"the other, and F&O processes an order's messages in the order they arrive. Use one sink and name each "+
				"record's message type in its flow (map _messageType)", prev, sn, s.Type, f.OrderScope(s.Settings))})
	}
	return out
}

// bulkAdvice says what to do with a high-rate flow, naming a bulk sink
// only when one is registered.
func bulkAdvice() string {
	if bulk := registeredSinks(bulkSinkTypes); len(bulk) > 0 {
		return "route it to a " + strings.Join(bulk, " or ") + " sink"
	}
	return "send fewer records (for example one total per order and shift instead of every event); " +
		"this build has no bulk (DMF) sink"
}
