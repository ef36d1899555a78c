// Command mes-simulator plays an MES for demos and rehearsals: it reads the
// released production orders of an fo-emulator, and publishes, over MQTT
// (QoS 1), a start message for each and then report-as-finished messages
// until each order's quantity is reported. With each report it publishes
// the picking-list consumption of the reported quantity: one message per
// line of the order's bill of materials (the emulator's
// ProductionOrderBillOfMaterialLines), quantity = good x BOMLineQuantity.
//
//	mes-simulator --broker tcp://127.0.0.1:1883 --emulator https://127.0.0.1:8443 --ca DIR/ca.pem
//
// Messages are JSON on <prefix>/started, <prefix>/finished and
// <prefix>/consumption:
//
//	{"msg_id":"P000101-start","type":"started","order":"P000101","item":"FG-1000","qty":100,"lot":"LOT-P000101","company":"USMF","ts":"..."}
//	{"msg_id":"P000101-fin-3","type":"finished","order":"P000101","item":"FG-1000","good":10,"scrap":0,"company":"USMF","ts":"..."}
//	{"msg_id":"P000101-cons-3-2@20250303T101500.123Z","type":"consumption","order":"P000101","item":"RM-2001","qty":10,"bom_line":2,"company":"USMF","ts":"..."}
//
// msg_id is stable, so a republished message is recognised by plantgate's
// dedup window. A consumption msg_id ends in the simulator's start time, so
// it is unique across restarts too (rounds count from 1 on every start).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

type bomLine struct {
	Company  string  `json:"dataAreaId"`
	Order    string  `json:"ProductionOrderNumber"`
	Line     int     `json:"LineNumber"`
	Item     string  `json:"ItemNumber"`
	Quantity float64 `json:"BOMLineQuantity"`
}

type order struct {
	Company  string  `json:"company"`
	Number   string  `json:"production_order"`
	Item     string  `json:"item_number"`
	Status   string  `json:"status"`
	Quantity float64 `json:"scheduled_quantity"`
	Reported float64 `json:"reported_good_quantity"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mes-simulator:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("mes-simulator", flag.ContinueOnError)
	broker := fs.String("broker", "tcp://127.0.0.1:1883", "MQTT broker URL (tcp:// or ssl://)")
	user := fs.String("username", "", "MQTT username")
	pass := fs.String("password", "", "MQTT password (or $MES_SIMULATOR_PASSWORD)")
	emu := fs.String("emulator", "https://127.0.0.1:8443", "fo-emulator base URL")
	caFile := fs.String("ca", "", "CA file to trust for the emulator (its DATA-DIR/ca.pem)")
	prefix := fs.String("prefix", "mes/line3", "topic prefix")
	every := fs.Duration("every", time.Second, "time between messages")
	batch := fs.Float64("batch", 10, "good quantity per report-as-finished message")
	once := fs.Bool("once", false, "report each order once fully, then exit")
	consume := fs.Bool("consumption", true, "publish picking-list consumption with each report-as-finished message")
	skip := fs.String("skip", "", "orders to leave alone, comma-separated (another line reports them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pass == "" {
		*pass = os.Getenv("MES_SIMULATOR_PASSWORD")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cl, err := newClient(*caFile)
	if err != nil {
		return err
	}
	orders, err := fetchOrders(ctx, cl, *emu)
	if err != nil {
		return err
	}
	orders = slices.DeleteFunc(orders, func(o order) bool { return slices.Contains(strings.Split(*skip, ","), o.Number) })
	if len(orders) == 0 {
		return errors.New("the emulator has no released production orders")
	}
	// runID makes consumption msg_ids unique across restarts.
	runID := time.Now().UTC().Format("20060102T150405.000Z")
	var bom map[string][]bomLine
	if *consume {
		if bom, err = fetchBOM(ctx, cl, *emu); err != nil {
			fmt.Fprintf(out, "mes-simulator: no consumption messages: %v\n", err)
		}
	}
	opts := mqtt.NewClientOptions().AddBroker(*broker).SetClientID(fmt.Sprintf("mes-simulator-%d", os.Getpid())).
		SetUsername(*user).SetPassword(*pass).SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect to %s: %w", *broker, t.Error())
	}
	defer c.Disconnect(250)
	fmt.Fprintf(out, "mes-simulator: %d production orders (%d with a bill of materials), publishing to %s/{started,finished,consumption} on %s\n",
		len(orders), len(bom), *prefix, *broker)

	publish := func(topic string, msg map[string]any) error {
		msg["ts"] = time.Now().UTC().Format(time.RFC3339Nano)
		b, _ := json.Marshal(msg)
		t := c.Publish(topic, 1, false, b)
		if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			return fmt.Errorf("publish %s: %w", topic, t.Error())
		}
		fmt.Fprintf(out, "published %s %s\n", topic, b)
		return nil
	}
	tick := time.NewTicker(*every)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			return true
		}
	}
	for _, o := range orders {
		if o.Status == "Released" {
			if err := publish(*prefix+"/started", map[string]any{"msg_id": o.Number + "-start", "type": "started", "order": o.Number,
				"item": o.Item, "qty": o.Quantity, "lot": "LOT-" + o.Number, "company": o.Company}); err != nil {
				return err
			}
			if !wait() {
				return nil
			}
		}
	}
	for round := 1; ; round++ {
		active := 0
		for i := range orders {
			o := &orders[i]
			left := o.Quantity - o.Reported
			if left <= 0 {
				continue
			}
			active++
			good := *batch
			if good > left {
				good = left
			}
			if err := publish(*prefix+"/finished", map[string]any{"msg_id": fmt.Sprintf("%s-fin-%d", o.Number, round), "type": "finished",
				"order": o.Number, "item": o.Item, "good": good, "scrap": 0, "company": o.Company}); err != nil {
				return err
			}
			o.Reported += good
			for _, l := range bom[strings.ToUpper(o.Company)+"/"+o.Number] {
				if err := publish(*prefix+"/consumption", map[string]any{"msg_id": fmt.Sprintf("%s-cons-%d-%d@%s", o.Number, round, l.Line, runID),
					"type": "consumption", "order": o.Number, "item": l.Item, "qty": good * l.Quantity, "bom_line": l.Line, "company": o.Company}); err != nil {
					return err
				}
			}
			if !wait() {
				return nil
			}
		}
		if active == 0 {
			if *once {
				return nil
			}
			fmt.Fprintln(out, "mes-simulator: every order is reported; idling (Ctrl-C to stop)")
			<-ctx.Done()
			return nil
		}
	}
}

// newClient returns an HTTP client for the emulator that trusts caFile.
func newClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}, nil
}

// fetchBOM reads the emulator's production order BOM lines, by
// "<COMPANY>/<order>", in line number order.
func fetchBOM(ctx context.Context, cl *http.Client, base string) (map[string][]bomLine, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/_emulator/records/ProductionOrderBillOfMaterialLines", nil)
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET BOM lines: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET BOM lines: %s: %s", resp.Status, body)
	}
	var recs struct {
		Value []bomLine `json:"value"`
	}
	if err := json.Unmarshal(body, &recs); err != nil {
		return nil, fmt.Errorf("decode BOM lines: %w", err)
	}
	out := map[string][]bomLine{}
	for _, l := range recs.Value {
		if l.Item == "" || l.Quantity <= 0 {
			continue
		}
		k := strings.ToUpper(l.Company) + "/" + l.Order // records hold dataAreaId in lower case, as F&O does
		out[k] = append(out[k], l)
	}
	for _, ls := range out {
		sort.Slice(ls, func(i, j int) bool { return ls[i].Line < ls[j].Line })
	}
	return out, nil
}

func fetchOrders(ctx context.Context, cl *http.Client, base string) ([]order, error) {
	var lastErr error
	for i := 0; i < 30; i++ { // the emulator may still be starting
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/_emulator/production-orders", nil)
		resp, err := cl.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET production orders: %s: %s", resp.Status, body)
			}
			var all []order
			if err := json.Unmarshal(body, &all); err != nil {
				var wrapped struct {
					Value []order `json:"value"`
				}
				if err2 := json.Unmarshal(body, &wrapped); err2 != nil {
					return nil, fmt.Errorf("decode production orders: %w", err)
				}
				all = wrapped.Value
			}
			var out []order
			for _, o := range all {
				if o.Status == "Released" || o.Status == "StartedUp" {
					out = append(out, o)
				}
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
			return out, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("reach the emulator at %s: %w", base, lastErr)
}
