package fodmf_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/plantgate/plantgate/internal/app"
	"github.com/plantgate/plantgate/internal/foemu"
	"github.com/plantgate/plantgate/internal/foemu/foemutest"
	"github.com/plantgate/plantgate/internal/queue"
	"github.com/plantgate/plantgate/internal/testutil/lazyfs"
	_ "github.com/plantgate/plantgate/plugins/all"
	"github.com/plantgate/plantgate/plugins/outputs/fodmf"
)

// The child gateway: a file source of JSON lines, one flow, one fo.dmf
// sink of picking list journal lines on the emulator. %[6]s is the queue's
// commit_max_delay: a run that must see a step between two commits widens
// the window with it (every commit then waits that long for company), and
// the step then shows in the status until the next step is on disk.
const dmfCrashConfig = `gateway:
  id: crash
  data_dir: %[1]s
  drain_timeout: 1s
  queue:
    commit_max_delay: %[6]s
http:
  listen: %[4]s
fo:
  emu:
    url: %[2]s
    tenant_id: 00000000-0000-0000-0000-0000000000aa
    client_id: plantgate-demo
    client_secret: ${env:PG_DMF_CRASH_FO_SECRET}
    authority_url: %[2]s
    ca_file: %[3]s
    company: USMF
    timeout: 2s
sources:
  in:
    type: file
    path: %[5]s
    follow: true
    poll_interval: 10ms
flows:
  picking:
    from: in
    key: payload.order
    id: payload.id
    to: dmf
    map:
      PRODUCTIONORDERNUMBER: payload.order
      ITEMNUMBER: payload.item
      CONSUMPTIONBOMQUANTITY: payload.qty
sinks:
  dmf:
    type: fo.dmf
    env: emu
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
    poll_initial: 20ms
    poll_max: 200ms
    not_found_grace: 2s
    batch: {max_records: 40, max_age: 200ms}
`

const (
	envDMFCrashConfig = "PLANTGATE_DMF_CRASH_CONFIG"
	envDMFCrashLog    = "PLANTGATE_DMF_CRASH_LOG"
	dmfCrashLines     = 40 // batch.max_records
	dmfSink           = "dmf"
	// slowCommit is the commit_max_delay of runs that kill between two
	// commits of the sink (closed, uploaded, importing once F&O took it,
	// settling).
	slowCommit = 80 * time.Millisecond
)

// TestDMFCrashGateway is not a test: the crash tests run the test binary
// again with PLANTGATE_DMF_CRASH_CONFIG set, and this function then runs a
// gateway on that config until it is killed (or SIGTERM stops it). With
// PLANTGATE_DMF_CRASH_LOG it appends its log (JSON lines) to that file.
func TestDMFCrashGateway(t *testing.T) {
	path := os.Getenv(envDMFCrashConfig)
	if path == "" {
		t.Skip("helper process for the fo.dmf crash tests")
	}
	cfg, flows, err := app.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(2)
	}
	log := zerolog.Nop()
	if p := os.Getenv(envDMFCrashLog); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err == nil {
			log = zerolog.New(f).Level(zerolog.InfoLevel).With().Timestamp().Logger()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := app.New(cfg, flows, log).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// TestIntegrationDMFKilledAtEveryStep kills a gateway (a child process)
// with SIGKILL while its fo.dmf batch is at each step, each kill checked
// against the step the queue file holds afterwards: closed (package built,
// the step not moved on), packaged (upload running), importing with the
// ImportFromPackage never received by F&O, uploaded (the same batch
// requested again after not_found_grace, its package uploaded again),
// uploaded (upload done, the import about to be requested), importing
// with the import accepted by F&O but the sink not told, polling (F&O
// executing), polling with F&O done but the sink not told, settling (the
// batch booked, its lines not yet acked); then at random moments. F&O's
// own records must hold every line exactly once, each execution submitted
// once and none failed as a parallel import.
func TestIntegrationDMFKilledAtEveryStep(t *testing.T) {
	runDMFCrash(t, dmfCrashPlan{rounds: 1, random: 4, lines: 640})
}

// TestPowerCutDMFAtEveryStep is TestIntegrationDMFKilledAtEveryStep with
// the gateway's data directory (queue file, package files) on LazyFS:
// every kill is followed by a power cut, which drops whatever the gateway
// wrote and did not fsync.
func TestPowerCutDMFAtEveryStep(t *testing.T) {
	if os.Getenv(envDMFCrashConfig) != "" {
		t.Skip("inside the helper")
	}
	fs := lazyfs.MountWith(t, lazyfs.Config{CacheSize: "64mb"})
	runDMFCrash(t, dmfCrashPlan{rounds: 1, random: 3, lines: 640, fs: fs})
}

// TestLongDMFCrash is the soak variant: the step kills three times over,
// then 30 kills at random moments.
func TestLongDMFCrash(t *testing.T) {
	if os.Getenv("PLANTGATE_LONG") == "" {
		t.Skip("set PLANTGATE_LONG=1 (make e2e-long)")
	}
	runDMFCrash(t, dmfCrashPlan{rounds: 3, random: 30, lines: 40 * 90})
}

// TestLongDMFPowerCut is the soak variant of the power cuts.
func TestLongDMFPowerCut(t *testing.T) {
	if os.Getenv("PLANTGATE_LONG") == "" {
		t.Skip("set PLANTGATE_LONG=1 (make e2e-long)")
	}
	if os.Getenv(envDMFCrashConfig) != "" {
		t.Skip("inside the helper")
	}
	fs := lazyfs.MountWith(t, lazyfs.Config{CacheSize: "256mb"})
	runDMFCrash(t, dmfCrashPlan{rounds: 3, random: 20, lines: 40 * 80, fs: fs})
}

type dmfCrashPlan struct {
	rounds int // times the step kills run
	random int // kills at random moments afterwards
	lines  int
	fs     *lazyfs.FS // power cuts after each kill when set
}

// dmfBatch is a batch as the sink's status shows it.
type dmfBatch struct {
	ID          string `json:"id"`
	Step        string `json:"step"`
	ExecutionID string `json:"execution_id"`
	Lines       int    `json:"lines"`
	Status      string `json:"status"`
	LastError   string `json:"last_error"`
}

// dmfView is what the parent reads from GET /api/v1/status.
type dmfView struct {
	atEnd, ready bool
	records      int64
	batches      []dmfBatch // of the sink dmf
	sinkError    string
	bySink       map[string][]dmfBatch
}

func (v dmfView) batch() (dmfBatch, bool) {
	if len(v.batches) == 0 {
		return dmfBatch{}, false
	}
	return v.batches[0], true
}

// persistedBatch is the sink's state in the queue file.
type persistedBatch struct {
	ID          string `json:"id"`
	Step        string `json:"step"`
	ExecutionID string `json:"execution_id"`
	From        uint64 `json:"from"`
	To          uint64 `json:"to"`
	Lines       int    `json:"lines"`
	PackageFile string `json:"package_file"`
	PackageSHA  string `json:"package_sha256"`
}

type dmfKill struct {
	n         int
	target    string // what the kill aimed at
	shown     dmfBatch
	persisted *persistedBatch // nil: no batch in flight on disk
	pending   int64           // records pending in the queue file after the kill
	hit       bool
}

func (k dmfKill) String() string {
	on := "no batch on disk"
	if p := k.persisted; p != nil {
		on = fmt.Sprintf("on disk %s at %s", p.ID, p.Step)
		if p.ExecutionID != "" {
			on += " (" + p.ExecutionID[strings.LastIndexByte(p.ExecutionID[:strings.LastIndexByte(p.ExecutionID, '-')], '-')+1:] + ")"
		}
	}
	return fmt.Sprintf("kill %d [%s]: shown %s at %s; %s; %d pending", k.n, k.target, k.shown.ID, k.shown.Step, on, k.pending)
}

var stepOrder = map[string]int{fodmf.StepClosed: 0, fodmf.StepPackaged: 1, fodmf.StepUploaded: 2, fodmf.StepImporting: 3, fodmf.StepPolling: 4, fodmf.StepSettling: 5}

// dmfRig runs the child gateway against an emulator in this process.
type dmfRig struct {
	t        *testing.T
	em       *foemu.Emulator
	fs       *lazyfs.FS
	work     string // config, input, logs: never on LazyFS
	dataDir  string // the gateway's data_dir
	input    string
	logPath  string
	httpAddr string
	cfgPath  string
	tmpl     string // the config template (dmfCrashConfig)
	rng      *rand.Rand
	runs     int
	cuts     int
	kills    []dmfKill

	cmd    *exec.Cmd
	exited chan error
	stderr *strings.Builder
}

func runDMFCrash(t *testing.T, plan dmfCrashPlan) {
	if os.Getenv(envDMFCrashConfig) != "" {
		t.Skip("inside the helper")
	}
	began := time.Now()
	em := foemutest.Start(t)
	r := &dmfRig{t: t, em: em, fs: plan.fs, work: t.TempDir(), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 23))}
	r.dataDir = filepath.Join(r.work, "data")
	if r.fs != nil {
		r.dataDir = filepath.Join(r.fs.Dir(), "data")
	}
	r.input = filepath.Join(r.work, "in.jsonl")
	r.logPath = filepath.Join(r.work, "gateway.log")
	r.cfgPath = filepath.Join(r.work, "plantgate.yaml")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.httpAddr = ln.Addr().String()
	_ = ln.Close()
	// Every line is told apart by its quantity, unique in the run.
	var in strings.Builder
	for i := range plan.lines {
		fmt.Fprintf(&in, `{"id":"l%d","order":"P%06d","item":"RM-2000","qty":%d}`+"\n", i, 101+i%3, i+1)
	}
	if err := os.WriteFile(r.input, []byte(in.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd != nil {
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.exited
		}
		if t.Failed() {
			t.Logf("gateway log (last 60 lines):\n%s", r.logTail(60))
		}
		if p := os.Getenv("PLANTGATE_DMF_CRASH_KEEP_LOG"); p != "" {
			b, _ := os.ReadFile(r.logPath)
			_ = os.WriteFile(p, b, 0o600)
		}
	})

	for round := 0; round < plan.rounds; round++ {
		r.stepKills()
	}
	for i := 0; i < plan.random; i++ {
		delay := time.Duration(0)
		if r.rng.IntN(2) == 0 {
			delay = 20 * time.Millisecond
		}
		r.start(delay)
		time.Sleep(time.Duration(150+r.rng.IntN(900)) * time.Millisecond)
		v, _ := r.status()
		b, _ := v.batch()
		r.kill("random", b, "")
	}
	r.finish()
	r.verify(plan.lines)

	hits := map[string]int{}
	for _, k := range r.kills {
		if k.persisted != nil {
			hits[k.persisted.Step]++
		} else {
			hits["(none)"]++
		}
	}
	t.Logf("%d lines, %d gateway runs, %d kills (SIGKILL), %d power cuts, in %v; steps on disk at the kills: %v",
		plan.lines, r.runs, len(r.kills), r.cuts, time.Since(began).Round(time.Millisecond), hits)
}

// stepKills kills the gateway once at each step (see
// TestIntegrationDMFKilledAtEveryStep), retrying a kill that missed its
// step (the sink moved on before the signal landed) on a later batch.
func (r *dmfRig) stepKills() {
	t := r.t
	// closed: the package is built; the commit of the step packaged waits.
	r.aim(fodmf.StepClosed, fodmf.StepClosed, func() dmfBatch {
		r.start(slowCommit)
		return r.waitBatch("a batch at closed", func(b dmfBatch) bool { return b.Step == fodmf.StepClosed })
	})
	// packaged: the upload is slow.
	r.faults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteBlob, Latency: foemu.Duration(400 * time.Millisecond)}}})
	r.aim(fodmf.StepPackaged, fodmf.StepPackaged, func() dmfBatch {
		r.start(0)
		return r.waitBatch("a batch at packaged", func(b dmfBatch) bool { return b.Step == fodmf.StepPackaged })
	})
	// importing, never received: the package uploads slowly; meanwhile
	// the emulator starts resetting every DMF connection, so
	// ImportFromPackage never reaches it (the emulator's latency would
	// not do: it handles a request whose client died during the latency).
	var lost dmfBatch
	r.aim("importing (not received)", fodmf.StepImporting+"|"+fodmf.StepPolling, func() dmfBatch {
		r.faults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteBlob, Latency: foemu.Duration(400 * time.Millisecond)}}})
		r.start(0)
		r.waitBatch("a batch at packaged", func(b dmfBatch) bool { return b.Step == fodmf.StepPackaged })
		time.Sleep(150 * time.Millisecond) // GetAzureWriteUrl answered; the upload is in its latency
		r.faults(foemu.Faults{Rules: []foemu.FaultRule{
			{Route: foemu.RouteBlob, Latency: foemu.Duration(400 * time.Millisecond)},
			{Route: foemu.RouteDMF, Outage: &foemu.Outage{Mode: foemu.OutageReset}},
		}})
		lost = r.waitBatch("a batch requesting its import", func(b dmfBatch) bool {
			return (b.Step == fodmf.StepImporting || b.Step == fodmf.StepPolling) && b.ExecutionID != ""
		})
		time.Sleep(100 * time.Millisecond)
		return lost
	})
	if _, ok := r.em.Execution(lost.ExecutionID); ok {
		t.Fatalf("execution %s reached the emulator through its DMF outage", lost.ExecutionID)
	}
	// uploaded, the same batch again: F&O does not know its executionId
	// after not_found_grace, so the sink uploads the package again (slowly)
	// to request the import a second time under the same id.
	r.faults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteBlob, Latency: foemu.Duration(400 * time.Millisecond)}}})
	r.aim("uploaded (requested again)", fodmf.StepUploaded, func() dmfBatch {
		r.start(0)
		return r.waitBatch("batch "+lost.ID+" back at uploaded after not_found_grace", func(b dmfBatch) bool {
			return b.ID == lost.ID && b.Step == fodmf.StepUploaded
		})
	})
	r.faults(foemu.Faults{})
	// uploaded, another batch: the upload is done, the commit of the step
	// importing waits (ImportFromPackage comes after it).
	r.aim(fodmf.StepUploaded, fodmf.StepUploaded, func() dmfBatch {
		r.start(slowCommit)
		return r.waitBatch("another batch at uploaded", func(b dmfBatch) bool { return b.ID != lost.ID && b.Step == fodmf.StepUploaded })
	})
	// importing, accepted: F&O has the execution, the commit of the step
	// polling waits.
	r.aim("importing (accepted)", fodmf.StepImporting, func() dmfBatch {
		r.start(slowCommit)
		b := r.waitBatch("a batch at importing", func(b dmfBatch) bool { return b.Step == fodmf.StepImporting && b.ExecutionID != "" })
		r.waitFor("F&O to accept "+b.ExecutionID, 10*time.Second, func() bool {
			_, ok := r.em.Execution(b.ExecutionID)
			return ok
		})
		return b
	})
	// polling: F&O's execution hangs in Executing.
	r.faults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(1500 * time.Millisecond)}})
	var hung dmfBatch
	r.aim(fodmf.StepPolling, fodmf.StepPolling, func() dmfBatch {
		r.start(0)
		hung = r.waitBatch("a batch polling an execution that runs", func(b dmfBatch) bool {
			if b.Step != fodmf.StepPolling || b.ExecutionID == "" {
				return false
			}
			ex, ok := r.em.Execution(b.ExecutionID)
			return ok && ex.Status == foemu.StatusExecuting
		})
		return hung
	})
	// polling, F&O done: the kill lands as the execution ends, before the
	// sink's next (slow) poll hears of it.
	first := true
	r.aim("polling (F&O done)", fodmf.StepPolling, func() dmfBatch {
		if !first {
			// The last try's batch settled first: hang another one.
			r.faults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(1500 * time.Millisecond)}})
			r.start(0)
			hung = r.waitBatch("a batch polling an execution that runs", func(b dmfBatch) bool {
				if b.Step != fodmf.StepPolling || b.ExecutionID == "" {
					return false
				}
				ex, ok := r.em.Execution(b.ExecutionID)
				return ok && ex.Status == foemu.StatusExecuting
			})
		}
		first = false
		r.faults(foemu.Faults{Rules: []foemu.FaultRule{{Route: foemu.RouteDMF, Latency: foemu.Duration(300 * time.Millisecond)}}})
		if r.cmd == nil {
			r.start(0)
		}
		r.waitFor("execution "+hung.ExecutionID+" to end", 10*time.Second, func() bool {
			ex, _ := r.em.Execution(hung.ExecutionID)
			return ex.FinishedAt != nil
		})
		return hung
	})
	r.faults(foemu.Faults{})
	// settling: the batch is booked (step settling on disk), the commit of
	// the ack waits.
	r.aim(fodmf.StepSettling, fodmf.StepSettling, func() dmfBatch {
		r.start(slowCommit)
		return r.waitBatch("a batch at settling", func(b dmfBatch) bool { return b.Step == fodmf.StepSettling })
	})
}

// aim runs try (which starts the gateway and waits for the moment) and
// kills the gateway, up to 4 times, until the queue file shows the batch
// shown at step want after the kill.
func (r *dmfRig) aim(target, want string, try func() dmfBatch) {
	r.t.Helper()
	for n := 0; n < 4; n++ {
		b := try()
		if k := r.kill(target, b, want); k.hit {
			return
		}
	}
	r.t.Errorf("4 kills aimed at %s, none landed there", target)
}

func (r *dmfRig) faults(f foemu.Faults) {
	r.t.Helper()
	if err := r.em.SetFaults(f); err != nil {
		r.t.Fatal(err)
	}
}

func (r *dmfRig) start(commitDelay time.Duration) {
	r.t.Helper()
	if r.cmd != nil {
		return
	}
	tmpl := r.tmpl
	if tmpl == "" {
		tmpl = dmfCrashConfig
	}
	cfg := fmt.Sprintf(tmpl, r.dataDir, r.em.BaseURL(), r.em.CAFile(), r.httpAddr, r.input, commitDelay)
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.runs++
	f, _ := os.OpenFile(r.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	fmt.Fprintf(f, "{\"message\":\"=== run %d (commit_max_delay %v) ===\"}\n", r.runs, commitDelay)
	_ = f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDMFCrashGateway$", "-test.count=1")
	cmd.Env = append(os.Environ(), envDMFCrashConfig+"="+r.cfgPath, envDMFCrashLog+"="+r.logPath,
		"PG_DMF_CRASH_FO_SECRET="+foemu.DefaultClientSecret)
	r.stderr = &strings.Builder{}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd = cmd
	r.exited = make(chan error, 1)
	go func() { r.exited <- cmd.Wait() }()
}

// kill SIGKILLs the gateway and waits for it to exit; on LazyFS it then
// cuts the power and mounts again. It reads the batch the queue file
// holds and records the kill: a hit when it is shown's batch at step want.
func (r *dmfRig) kill(target string, shown dmfBatch, want string) dmfKill {
	r.t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	r.cmd = nil
	if r.fs != nil {
		r.fs.Cut()
		r.fs.Remount()
		r.cuts++
	}
	k := dmfKill{n: len(r.kills) + 1, target: target, shown: shown}
	k.persisted, k.pending = r.onDisk()
	if p := k.persisted; p != nil && p.ID == shown.ID {
		for _, w := range strings.Split(want, "|") {
			k.hit = k.hit || w != "" && p.Step == w
		}
		// The step on disk is never behind the one shown (it is shown once
		// it is on disk), except where the sink itself goes back: to
		// uploaded to request an unknown import again, to closed to build a
		// lost package again.
		if stepOrder[p.Step] < stepOrder[shown.Step] && p.Step != fodmf.StepUploaded && p.Step != fodmf.StepClosed {
			r.t.Errorf("%s: the step on disk is behind the one the status showed", k)
		}
	}
	// The package is synced before the step packaged is written: from
	// packaged to polling it must be there, intact, after a cut too.
	if p := k.persisted; p != nil && stepOrder[p.Step] >= stepOrder[fodmf.StepPackaged] && p.Step != fodmf.StepSettling {
		b, err := os.ReadFile(p.PackageFile)
		if sum := sha256.Sum256(b); err != nil || hex.EncodeToString(sum[:]) != p.PackageSHA {
			r.t.Errorf("%s: the package file %s is lost or damaged (%v) although the step on disk is %s", k, p.PackageFile, err, p.Step)
		}
	}
	r.kills = append(r.kills, k)
	r.t.Log(k.String())
	return k
}

// onDisk reads the sink's batch in flight and the pending records from
// the queue file (the gateway is not running).
func (r *dmfRig) onDisk() (*persistedBatch, int64) {
	r.t.Helper()
	path := filepath.Join(r.dataDir, "queue.db")
	if _, err := os.Stat(path); err != nil {
		return nil, 0
	}
	s, err := queue.Open(path, queue.Options{ReadOnly: true, OpenTimeout: 5 * time.Second})
	if err != nil {
		r.t.Fatalf("open the queue after kill %d: %v", len(r.kills)+1, err)
	}
	defer func() { _ = s.Close() }()
	var pending int64
	if st, err := s.Stats(); err == nil {
		pending = st.Records
	}
	v, ok, err := s.GetState("sink."+dmfSink, "batch/"+dmfSink)
	if err != nil {
		r.t.Fatalf("read the batch after kill %d: %v", len(r.kills)+1, err)
	}
	if !ok {
		return nil, pending
	}
	var p persistedBatch
	if err := json.Unmarshal(v, &p); err != nil {
		r.t.Fatalf("batch state %s: %v", v, err)
	}
	return &p, pending
}

func (r *dmfRig) status() (dmfView, bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + r.httpAddr + "/api/v1/status")
	if err != nil {
		return dmfView{}, false
	}
	defer func() { _ = resp.Body.Close() }()
	var st app.Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return dmfView{}, false
	}
	v := dmfView{ready: st.Ready, records: st.Queue.Records, bySink: map[string][]dmfBatch{}}
	v.atEnd = len(st.Sources) == 1 && st.Sources[0].Details["at_end"] == true
	for _, s := range st.Sinks {
		var bs []dmfBatch
		if d, ok := s.Details["batches"]; ok {
			raw, _ := json.Marshal(d)
			_ = json.Unmarshal(raw, &bs)
		}
		v.bySink[s.Name] = bs
		if s.Name == dmfSink {
			v.sinkError, v.batches = s.LastError, bs
		}
	}
	return v, true
}

// waitFor polls cond every 2 ms; the gateway must not exit meanwhile.
func (r *dmfRig) waitFor(what string, timeout time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if r.cmd != nil {
			select {
			case err := <-r.exited:
				r.exited <- err
				r.t.Fatalf("gateway run %d exited while waiting for %s: %v\n%s", r.runs, what, err, r.stderr.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			v, _ := r.status()
			r.t.Fatalf("timed out after %v waiting for %s; status: %+v", timeout, what, v)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitBatch waits until the status shows a batch for which cond holds.
func (r *dmfRig) waitBatch(what string, cond func(dmfBatch) bool) dmfBatch {
	r.t.Helper()
	var got dmfBatch
	r.waitFor(what, 20*time.Second, func() bool {
		v, ok := r.status()
		if !ok {
			return false
		}
		b, ok := v.batch()
		if ok && cond(b) {
			got = b
			return true
		}
		return false
	})
	return got
}

// finish runs the gateway until it read the whole input and its queue is
// empty, then stops it with SIGTERM.
func (r *dmfRig) finish() {
	r.t.Helper()
	r.faults(foemu.Faults{})
	r.start(0)
	r.waitFor("the queue drained", 60*time.Second, func() bool {
		v, ok := r.status()
		return ok && v.ready && v.atEnd && v.records == 0 && len(v.batches) == 0
	})
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-r.exited; err != nil {
		r.t.Fatalf("gateway stop: %v\n%s", err, r.stderr.String())
	}
	r.cmd = nil
	if r.fs != nil {
		// A clean stop: what it synced is on the disk; one last cut shows
		// nothing it acked rested on unsynced writes.
		r.fs.Cut()
		r.fs.Remount()
		r.cuts++
	}
}

// verify checks F&O's records and executions and the queue file.
func (r *dmfRig) verify(lines int) {
	t := r.t
	s, err := queue.Open(filepath.Join(r.dataDir, "queue.db"), queue.Options{ReadOnly: true, OpenTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Check(); err != nil {
		t.Errorf("queue check: %v", err)
	}
	if st, err := s.Stats(); err != nil || st.Records != 0 || st.Dead != 0 {
		t.Errorf("queue at the end: %+v (%v); want nothing pending, no dead letters", st, err)
	}
	if dead, _ := s.ListDead(dmfSink, 0, 0); len(dead) != 0 {
		t.Errorf("%d lines dead-lettered, first: %s", len(dead), dead[0].Reason)
	}
	if _, ok, _ := s.GetState("sink."+dmfSink, "batch/"+dmfSink); ok {
		t.Error("a batch is still in flight in the queue file")
	}

	recs, err := r.em.Records("ProductionPickingListJournalEntries")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for _, rec := range recs {
		q, err := strconv.ParseFloat(fmt.Sprint(rec["ConsumptionBomQuantity"]), 64)
		if err != nil {
			t.Errorf("record without a quantity: %v", rec)
			continue
		}
		seen[int(q)]++
	}
	var twice, lost []int
	for q, n := range seen {
		if n > 1 {
			twice = append(twice, q)
		}
	}
	for i := 1; i <= lines; i++ {
		if seen[i] == 0 {
			lost = append(lost, i)
		}
	}
	sort.Ints(twice)
	if len(recs) != lines || len(twice) > 0 || len(lost) > 0 {
		t.Errorf("%d lines in F&O, want %d exactly once: %d imported more than once (qty %v), %d lost (qty %v)",
			len(recs), lines, len(twice), clipInts(twice), len(lost), clipInts(lost))
	}
	ex := r.em.Executions()
	lineCount := 0
	for _, e := range ex {
		if e.Submissions != 1 {
			t.Errorf("execution %s: ImportFromPackage called %d times for an import F&O had accepted", e.ID, e.Submissions)
		}
		if e.ParallelWith != "" {
			t.Errorf("execution %s: imported in parallel with %s", e.ID, e.ParallelWith)
		}
		if e.Status != foemu.StatusSucceeded {
			t.Errorf("execution %s ended %s", e.ID, e.Status)
		}
		for _, ee := range e.Entities {
			lineCount += ee.TargetRecords
		}
	}
	if lineCount != lines {
		t.Errorf("the executions imported %d lines, want %d", lineCount, lines)
	}
	st := r.em.DMFStats()
	t.Logf("F&O: %d lines, each once, in %d executions (each submitted once, none parallel); by status %v",
		len(recs), len(ex), st.ByStatus)
}

func clipInts(v []int) []int { return v[:min(len(v), 20)] }

func (r *dmfRig) logTail(n int) string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// dmfTwoSinksConfig is dmfCrashConfig with a second fo.dmf sink on the
// same F&O environment: lines of kind "a" go to dmf, of kind "b" to dmf2.
var dmfTwoSinksConfig = strings.Replace(strings.Replace(dmfCrashConfig, `flows:
  picking:
    from: in
    key: payload.order`, `flows:
  picking2:
    from: in
    when: payload.kind == "b"
    key: payload.order
    id: payload.id
    to: dmf2
    map:
      PRODUCTIONORDERNUMBER: payload.order
      ITEMNUMBER: payload.item
      CONSUMPTIONBOMQUANTITY: payload.qty
  picking:
    from: in
    when: payload.kind == "a"
    key: payload.order`, 1), `sinks:
  dmf:`, `sinks:
  dmf2:
    type: fo.dmf
    env: emu
    definition_group: MES-PickingList
    entity: Production order picking list journal lines
    columns: [JOURNALLINENUMBER, PRODUCTIONORDERNUMBER, ITEMNUMBER, CONSUMPTIONBOMQUANTITY]
    line_field: JOURNALLINENUMBER
    poll_initial: 20ms
    poll_max: 200ms
    not_found_grace: 2s
    batch: {max_records: 40, max_age: 200ms}
  dmf:`, 1)

// TestIntegrationDMFTwoSinksRestartNotParallel: two fo.dmf sinks share an
// F&O environment, hence its import lock. The gateway is killed while one
// sink polls an execution F&O still runs and the other waits for the lock
// with its package uploaded. After the restart both resume; the one at
// uploaded must not import while the other's execution still runs (F&O
// fails parallel imports).
//
// Before a resumed import took the lock when its sink was built, the two
// resumed sinks raced for it and the one at uploaded won about one run in
// three: it imported while the other's execution ran, F&O failed it, and
// its lines were dead-lettered.
func TestIntegrationDMFTwoSinksRestartNotParallel(t *testing.T) {
	if os.Getenv(envDMFCrashConfig) != "" {
		t.Skip("inside the helper")
	}
	em := foemutest.Start(t)
	r := &dmfRig{t: t, em: em, work: t.TempDir(), tmpl: dmfTwoSinksConfig}
	r.dataDir = filepath.Join(r.work, "data")
	r.input = filepath.Join(r.work, "in.jsonl")
	r.logPath = filepath.Join(r.work, "gateway.log")
	r.cfgPath = filepath.Join(r.work, "plantgate.yaml")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.httpAddr = ln.Addr().String()
	_ = ln.Close()
	const lines = 400
	var in strings.Builder
	for i := range lines {
		fmt.Fprintf(&in, `{"id":"l%d","kind":%q,"order":"P%06d","item":"RM-2000","qty":%d}`+"\n", i, string(rune('a'+i%2)), 101+i%3, i+1)
	}
	if err := os.WriteFile(r.input, []byte(in.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd != nil {
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.exited
		}
		if t.Failed() {
			t.Logf("gateway log (last 40 lines):\n%s", r.logTail(40))
		}
		if p := os.Getenv("PLANTGATE_DMF_CRASH_KEEP_LOG"); p != "" {
			b, _ := os.ReadFile(r.logPath)
			_ = os.WriteFile(p, b, 0o600)
		}
	})
	for k := 0; k < 4; k++ {
		r.faults(foemu.Faults{DMF: foemu.DMFFaults{HangFor: foemu.Duration(2500 * time.Millisecond)}})
		r.start(0)
		var shown string
		r.waitFor("one sink polling a running execution, the other at uploaded", 20*time.Second, func() bool {
			v, ok := r.status()
			if !ok {
				return false
			}
			var polling, waiting bool
			shown = ""
			for name, bs := range v.bySink {
				for _, b := range bs {
					shown += fmt.Sprintf(" %s:%s", name, b.Step)
					if b.Step == fodmf.StepPolling && b.ExecutionID != "" {
						ex, ok := r.em.Execution(b.ExecutionID)
						polling = polling || ok && ex.Status == foemu.StatusExecuting
					}
					waiting = waiting || b.Step == fodmf.StepUploaded
				}
			}
			return polling && waiting
		})
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.exited
		r.cmd = nil
		r.faults(foemu.Faults{})
		t.Logf("kill %d with%s", k+1, shown)
	}
	r.finish()
	for _, e := range em.Executions() {
		if e.ParallelWith != "" || e.Status != foemu.StatusSucceeded {
			t.Errorf("execution %s ended %s (imported while %q still ran)", e.ID, e.Status, e.ParallelWith)
		}
	}
	s, err := queue.Open(filepath.Join(r.dataDir, "queue.db"), queue.Options{ReadOnly: true, OpenTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	for _, sink := range []string{"dmf", "dmf2"} {
		if dead, _ := s.ListDead(sink, 0, 0); len(dead) != 0 {
			t.Errorf("%s: %d lines dead-lettered, first: %s", sink, len(dead), dead[0].Reason)
		}
	}
	recs, _ := em.Records("ProductionPickingListJournalEntries")
	if len(recs) != lines {
		t.Errorf("%d lines in F&O, want %d", len(recs), lines)
	}
}
