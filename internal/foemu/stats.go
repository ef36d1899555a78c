package foemu

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stats counts requests per route and status, and per client, since the
// emulator started or was last reset. Benchmarks read it to compute the
// fraction of throttled requests.
type Stats struct {
	// Since is when counting started.
	Since time.Time `json:"since"`
	// Routes maps a route (odata, batch, dmf, mes, token, ...) to counts
	// per HTTP status ("200", "429", ...). Status "0" counts connections
	// closed without an answer (injected resets).
	Routes map[string]map[string]int64 `json:"routes"`
	// Clients maps a client ID to its counts.
	Clients map[string]ClientStats `json:"clients"`
}

// ClientStats are the counts of one client.
type ClientStats struct {
	// Requests counts authenticated HTTP requests.
	Requests int64 `json:"requests"`
	// Throttled counts HTTP requests answered 429.
	Throttled int64 `json:"throttled"`
	// BatchOperations counts operations inside $batch requests, and
	// ThrottledOperations those answered with an inner 429.
	BatchOperations     int64 `json:"batch_operations"`
	ThrottledOperations int64 `json:"throttled_operations"` // batch operations answered 429
	// ByRoute maps route to status to count.
	ByRoute map[string]map[string]int64 `json:"by_route"`
}

// Total returns the number of requests counted for a route.
func (s Stats) Total(route string) int64 {
	var n int64
	for _, c := range s.Routes[route] {
		n += c
	}
	return n
}

// Count returns the number of requests of a route answered with status.
func (s Stats) Count(route string, status int) int64 {
	return s.Routes[route][strconv.Itoa(status)]
}

type stats struct {
	mu      sync.Mutex
	since   time.Time
	routes  map[string]map[string]int64
	clients map[string]*ClientStats
}

func newStats() *stats {
	return &stats{since: time.Now().UTC(), routes: map[string]map[string]int64{}, clients: map[string]*ClientStats{}}
}

func (s *stats) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.since = time.Now().UTC()
	s.routes = map[string]map[string]int64{}
	s.clients = map[string]*ClientStats{}
}

func (s *stats) client(id string) *ClientStats {
	key := strings.ToLower(id)
	c := s.clients[key]
	if c == nil {
		c = &ClientStats{ByRoute: map[string]map[string]int64{}}
		s.clients[key] = c
	}
	return c
}

func (s *stats) record(route, client string, status int) {
	st := strconv.Itoa(status)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes[route] == nil {
		s.routes[route] = map[string]int64{}
	}
	s.routes[route][st]++
	if client == "" {
		return
	}
	c := s.client(client)
	c.Requests++
	if status == 429 {
		c.Throttled++
	}
	if c.ByRoute[route] == nil {
		c.ByRoute[route] = map[string]int64{}
	}
	c.ByRoute[route][st]++
}

func (s *stats) recordBatchOps(client string, ops, throttled int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.client(client)
	c.BatchOperations += int64(ops)
	c.ThrottledOperations += int64(throttled)
}

func (s *stats) snapshot() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{Since: s.since, Routes: map[string]map[string]int64{}, Clients: map[string]ClientStats{}}
	for r, m := range s.routes {
		out.Routes[r] = copyCounts(m)
	}
	for id, c := range s.clients {
		cc := *c
		cc.ByRoute = map[string]map[string]int64{}
		for r, m := range c.ByRoute {
			cc.ByRoute[r] = copyCounts(m)
		}
		out.Clients[id] = cc
	}
	return out
}

func copyCounts(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Stats returns the request counts.
func (e *Emulator) Stats() Stats { return e.stats.snapshot() }
