package foemu_test

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
)

func TestThrottling(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) {
		c.Throttling.RequestsPerSecond = 1
		c.Throttling.Burst = 2
	})
	get := func() reply { return a.do(http.MethodGet, "/data/ReleasedProductsV2?$top=1", "") }
	for i := range 2 {
		if r := get(); r.status != 200 {
			t.Fatalf("request %d: status %d", i+1, r.status)
		}
	}
	r := get()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("third request: status %d, want 429", r.status)
	}
	if msg := r.innerMessage(t); msg != "Number of requests exceeded the limit of 2 over the time window of 2 seconds." {
		t.Errorf("message = %q", msg)
	}
	prev, _ := strconv.Atoi(r.header.Get("Retry-After"))
	if prev < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	// A client that keeps sending while throttled sees Retry-After grow.
	for i := range 3 {
		r := get()
		ra, _ := strconv.Atoi(r.header.Get("Retry-After"))
		if r.status != 429 || ra <= prev {
			t.Fatalf("retry %d: status %d Retry-After %d, want 429 and more than %d", i+1, r.status, ra, prev)
		}
		prev = ra
	}
	// DMF calls are exempt from service protection.
	if _, r := a.action("GetAzureWriteUrl", map[string]any{"uniqueFileName": "x.zip"}); r.status != 200 {
		t.Errorf("DMF action while throttled: status %d", r.status)
	}
	st := a.em.Stats()
	if got := st.Clients["plantgate-demo"].Throttled; got != 4 {
		t.Errorf("throttled count = %d, want 4", got)
	}
	if got := st.Count(foemu.RouteOData, 429); got != 4 {
		t.Errorf("odata 429 count = %d, want 4", got)
	}
}

func TestThrottlingPriority(t *testing.T) {
	em := foemutest.Start(t, func(c *foemu.Config) {
		c.Throttling.RequestsPerSecond = 0.01
		c.Throttling.Burst = 2
		c.Identity.Clients = []foemu.ClientConfig{
			{ClientID: "low-app", Secret: "s1", Priority: "Low"},
			{ClientID: "high-app", Secret: "s2", Priority: "High"},
		}
	})
	allowed := func(id, secret string) int {
		a := &api{t: t, em: em, token: foemutest.ClientToken(t, em, id, secret, em.EnvironmentURL()+"/.default"), hc: em.HTTPClient()}
		n := 0
		for range 10 {
			if a.do(http.MethodGet, "/data/ReleasedProductsV2?$top=1", "").status == 200 {
				n++
			}
		}
		return n
	}
	if got := allowed("low-app", "s1"); got != 1 {
		t.Errorf("Low priority allowed %d requests, want 1 (burst 2 x 0.5)", got)
	}
	if got := allowed("high-app", "s2"); got != 4 {
		t.Errorf("High priority allowed %d requests, want 4 (burst 2 x 2)", got)
	}
}

func TestThrottlingConcurrency(t *testing.T) {
	a := newAPI(t, func(c *foemu.Config) {
		c.Throttling.Concurrent = 1
		c.Faults.Rules = []foemu.FaultRule{{Route: "odata", Latency: foemu.Duration(300 * time.Millisecond)}}
	})
	var wg sync.WaitGroup
	codes := make([]int, 3)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = a.do(http.MethodGet, "/data/ReleasedProductsV2?$top=1", "").status
		}()
	}
	wg.Wait()
	ok, throttled := 0, 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 429:
			throttled++
		}
	}
	if ok < 1 || throttled < 1 || ok+throttled != 3 {
		t.Errorf("statuses = %v, want at least one 200 and one 429 with one concurrent request allowed", codes)
	}
}

func TestFaults(t *testing.T) {
	a := newAPI(t)
	set := func(f foemu.Faults) {
		t.Helper()
		if err := a.em.SetFaults(f); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("error rate", func(t *testing.T) {
		set(foemu.Faults{Rules: []foemu.FaultRule{{Route: "odata", ErrorRate: 1, ErrorStatus: 502}}})
		if r := a.do(http.MethodGet, "/data/ReleasedProductsV2", ""); r.status != 502 {
			t.Errorf("odata status = %d, want 502", r.status)
		}
		if r := a.do(http.MethodPost, "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetAzureWriteUrl", `{"uniqueFileName":"a"}`); r.status != 200 {
			t.Errorf("dmf status = %d, want 200 (rule is for odata only)", r.status)
		}
	})
	t.Run("latency", func(t *testing.T) {
		set(foemu.Faults{Rules: []foemu.FaultRule{{Route: "*", Latency: foemu.Duration(120 * time.Millisecond)}}})
		start := time.Now()
		a.do(http.MethodGet, "/data/ReleasedProductsV2?$top=1", "")
		if d := time.Since(start); d < 120*time.Millisecond {
			t.Errorf("request took %v, want at least 120ms", d)
		}
	})
	t.Run("outage 503", func(t *testing.T) {
		set(foemu.Faults{Rules: []foemu.FaultRule{{Route: "*", Outage: &foemu.Outage{Mode: "503", Duration: foemu.Duration(time.Minute)}}}})
		r := a.do(http.MethodGet, "/data/ReleasedProductsV2", "")
		if r.status != 503 || r.header.Get("Retry-After") == "" {
			t.Errorf("status = %d Retry-After %q, want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
		}
		ctl := &api{t: t, em: a.em, hc: a.hc}
		if r := ctl.do(http.MethodGet, "/_emulator/stats", ""); r.status != 200 {
			t.Errorf("control endpoint during outage: %d", r.status)
		}
	})
	t.Run("outage reset", func(t *testing.T) {
		set(foemu.Faults{Rules: []foemu.FaultRule{{Route: "mes", Outage: &foemu.Outage{Mode: "reset"}}}})
		req, _ := http.NewRequest(http.MethodPost, a.em.BaseURL()+"/api/services/SysMessageServices/SysMessageService/SendMessage", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := a.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("got status %d, want the connection closed", resp.StatusCode)
		}
		if n := a.em.Stats().Count(foemu.RouteMES, 0); n < 1 {
			t.Errorf("reset count = %d", n)
		}
	})
	t.Run("outage refuse", func(t *testing.T) {
		set(foemu.Faults{Rules: []foemu.FaultRule{{Route: "*", Outage: &foemu.Outage{Mode: "refuse", Duration: foemu.Duration(400 * time.Millisecond)}}}})
		addr := strings.TrimPrefix(a.em.BaseURL(), "https://")
		foemutest.WaitFor(t, 2*time.Second, "connections refused", func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				return false
			}
			return errors.Is(err, syscall.ECONNREFUSED)
		})
		foemutest.WaitFor(t, 3*time.Second, "the listener to come back", func() bool {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
		if r := a.do(http.MethodGet, "/data/ReleasedProductsV2?$top=1", ""); r.status != 200 {
			t.Errorf("after the outage: status %d", r.status)
		}
	})
	t.Run("invalid rule", func(t *testing.T) {
		if err := a.em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: "nowhere"}}}); !errors.Is(err, foemu.ErrConfig) {
			t.Errorf("err = %v, want ErrConfig", err)
		}
		if err := a.em.SetFaults(foemu.Faults{Rules: []foemu.FaultRule{{Route: "odata", Outage: &foemu.Outage{Mode: "refuse"}}}}); err == nil {
			t.Error("refuse outage on one route accepted")
		}
	})
}
