// Command opcua-simulator plays a production line's PLC for demos and
// rehearsals: an OPC UA server (internal/opcuasim, on the gopcua server)
// whose good and scrap counters count up while the machine runs an order.
//
//	opcua-simulator --listen 127.0.0.1:4840 [--secure --pki DIR] --orders P000103:FG-1000,P000104:FG-1000
//	opcua-simulator --emulator https://127.0.0.1:18443 --ca DIR/ca.pem [--orders ...]
//
// With --emulator the orders are fo-emulator's released orders of
// --company (or those of --orders); each runs once it is started in F&O,
// for at most the quantity F&O has left to report, and when all are done
// the line idles.
//
// Nodes, in namespace urn:plantgate:line-simulator (nsu=...;s=<name>):
// Line3.GoodCount and Line3.ScrapCount (UInt32, never reset), Line3.State
// (Running, Changeover), Line3.Running (Boolean), Line3.Order and
// Line3.Item (String). Each --every the running order makes 1 to --parts
// good parts and now and then a scrap one; after --per-order parts the
// line changes over to the next order for one tick. The counters persist
// in --pki's counters.txt, so a restarted simulator counts on.
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
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/plantgate/plantgate/internal/opcuasim"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "opcua-simulator:", err)
		os.Exit(1)
	}
}

type order struct{ number, item string }

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("opcua-simulator", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4840", "host:port to listen on")
	secure := fs.Bool("secure", false, "offer Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss (Sign, SignAndEncrypt)")
	allowNone := fs.Bool("allow-none", false, "with --secure, offer None too")
	pki := fs.String("pki", "", "keep the server certificate and the counters here")
	shift := fs.Int("ns-shift", 0, "register that many other namespaces first (the simulator's namespace index moves)")
	ordersFlag := fs.String("orders", "", "ORDER:ITEM,... to run (default: released orders of --emulator)")
	emu := fs.String("emulator", "", "fo-emulator base URL to take released orders from")
	caFile := fs.String("ca", "", "CA file of the emulator (its DATA-DIR/ca.pem)")
	company := fs.String("company", "USMF", "with --emulator: take the orders of this company (the plant's legal entity)")
	every := fs.Duration("every", 5*time.Second, "time between production ticks")
	parts := fs.Int("parts", 3, "most good parts per tick")
	perOrder := fs.Int("per-order", 20, "good parts per order before the changeover")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, portS, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	}
	port, _ := strconv.Atoi(portS)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	orders, err := parseOrders(*ordersFlag)
	if err != nil {
		return err
	}
	if len(orders) == 0 && *emu != "" {
		if orders, err = fetchOrders(ctx, *emu, *caFile, *company); err != nil {
			return err
		}
	}
	if len(orders) == 0 {
		return errors.New("no orders: give --orders or --emulator")
	}
	sim, err := opcuasim.Start(ctx, opcuasim.Options{Host: host, Port: port, Secure: *secure, AllowNone: *allowNone, PKIDir: *pki, Shift: *shift})
	if err != nil {
		return err
	}
	good, scrap := loadCounters(*pki)
	sim.Set(opcuasim.Good, good)
	sim.Set(opcuasim.Scrap, scrap)
	fmt.Fprintf(out, "opcua-simulator: %s, namespace %s, %d orders, good %d scrap %d\n", sim.Endpoint(), opcuasim.DefaultNamespace, len(orders), good, scrap)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for i := 0; ctx.Err() == nil; i++ {
		if i == len(orders) {
			if *emu != "" {
				// F&O has every order reported: the line stands still.
				sim.Set(opcuasim.State, "Idle")
				sim.Set(opcuasim.Running, false)
				fmt.Fprintln(out, "opcua-simulator: every order is reported; idling (Ctrl-C to stop)")
				<-ctx.Done()
				break
			}
			i = 0
		}
		o := orders[i]
		quantity := *perOrder
		if *emu != "" {
			left := waitStarted(ctx, *emu, *caFile, o.number, out)
			if left <= 0 {
				continue
			}
			quantity = min(quantity, left)
		}
		sim.Set(opcuasim.Order, o.number)
		sim.Set(opcuasim.Item, o.item)
		sim.Set(opcuasim.State, "Running")
		sim.Set(opcuasim.Running, true)
		fmt.Fprintf(out, "running %s (%s)\n", o.number, o.item)
		made := 0
		for made < quantity && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
				n := min(1+rng.IntN(*parts), quantity-made)
				made += n
				good += uint32(n)
				sim.Set(opcuasim.Good, good)
				if rng.IntN(10) == 0 {
					scrap++
					sim.Set(opcuasim.Scrap, scrap)
				}
				saveCounters(*pki, good, scrap)
				fmt.Fprintf(out, "%s: good %d (+%d) scrap %d\n", o.number, good, n, scrap)
			}
		}
		sim.Set(opcuasim.State, "Changeover")
		sim.Set(opcuasim.Running, false)
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	fmt.Fprintln(out, "opcua-simulator: stopping")
	go func() { _ = sim.Close() }() // the gopcua server waits up to 10 s for clients
	time.Sleep(200 * time.Millisecond)
	return nil
}

// waitStarted waits up to a minute for the emulator to show the order
// started (F&O refuses reports as finished before), polling every 2 s, and
// returns the quantity left to report.
func waitStarted(ctx context.Context, base, caFile, number string, out io.Writer) int {
	for i := 0; i < 30 && ctx.Err() == nil; i++ {
		o, err := orderStatus(ctx, base, caFile, number)
		if err == nil && o.Status == "StartedUp" {
			return int(o.Scheduled - o.Reported)
		}
		if err == nil && o.Status != "Released" {
			fmt.Fprintf(out, "skipping %s: status %s\n", number, o.Status)
			return 0
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	fmt.Fprintf(out, "skipping %s: not started within a minute\n", number)
	return 0
}

func parseOrders(s string) ([]order, error) {
	var out []order
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		num, item, ok := strings.Cut(part, ":")
		if !ok || num == "" || item == "" {
			return nil, fmt.Errorf("--orders: %q: want ORDER:ITEM", part)
		}
		out = append(out, order{num, item})
	}
	return out, nil
}

func loadCounters(dir string) (uint32, uint32) {
	if dir == "" {
		return 0, 0
	}
	b, err := os.ReadFile(filepath.Join(dir, "counters.txt"))
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	g, _ := strconv.ParseUint(f[0], 10, 32)
	s, _ := strconv.ParseUint(f[1], 10, 32)
	return uint32(g), uint32(s)
}

func saveCounters(dir string, good, scrap uint32) {
	if dir == "" {
		return
	}
	_ = os.MkdirAll(dir, 0o700)
	tmp := filepath.Join(dir, "counters.txt.tmp")
	if os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", good, scrap)), 0o600) == nil {
		_ = os.Rename(tmp, filepath.Join(dir, "counters.txt"))
	}
}

// fetchOrders takes the released orders of company from an fo-emulator,
// last first (an MES simulator on the same emulator takes them first
// first).
type emuOrder struct {
	Number    string  `json:"production_order"`
	Item      string  `json:"item_number"`
	Status    string  `json:"status"`
	Company   string  `json:"company"`
	Scheduled float64 `json:"scheduled_quantity"`
	Reported  float64 `json:"reported_good_quantity"`
}

func orderStatus(ctx context.Context, base, caFile, number string) (emuOrder, error) {
	all, err := listOrders(ctx, base, caFile)
	if err != nil {
		return emuOrder{}, err
	}
	for _, o := range all {
		if o.Number == number {
			return o, nil
		}
	}
	return emuOrder{}, fmt.Errorf("no order %s", number)
}

func fetchOrders(ctx context.Context, base, caFile, company string) ([]order, error) {
	all, err := listOrders(ctx, base, caFile)
	if err != nil {
		return nil, err
	}
	var out []order
	for _, o := range all {
		if (o.Status == "Released" || o.Status == "StartedUp") && strings.EqualFold(o.Company, company) {
			out = append(out, order{o.Number, o.Item})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].number > out[j].number })
	return out, nil
}

func listOrders(ctx context.Context, base, caFile string) ([]emuOrder, error) {
	cl := &http.Client{Timeout: 10 * time.Second}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cl.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	var lastErr error
	for i := 0; i < 30; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/_emulator/production-orders", nil)
		resp, err := cl.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET production orders: %s", resp.Status)
			}
			var all []emuOrder
			if err := json.Unmarshal(body, &all); err != nil {
				var wrapped struct {
					Value json.RawMessage `json:"value"`
				}
				if json.Unmarshal(body, &wrapped) != nil || json.Unmarshal(wrapped.Value, &all) != nil {
					return nil, fmt.Errorf("decode production orders: %w", err)
				}
			}
			return all, nil
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
