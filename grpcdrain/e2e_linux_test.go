package grpcdrain_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/baton-go/baton/internal/proctest"
)

const (
	echoMethod = "/baton.example.Echo/Echo" // examples/grpc
	// e2eDrainTimeout is the example's -drain-timeout: nothing in this
	// test should need it (no RPC lasts), it bounds an old generation.
	e2eDrainTimeout = 10 * time.Second
	// e2eProbation is baton's default Options.Probation: an old
	// generation keeps its sockets until then, or until its successor
	// hands over.
	e2eProbation = 3 * time.Second
)

// TestUpgradesUnderGRPCLoad: 20 `baton upgrade`s (the real CLI) of
// examples/grpc, alternating two builds, under unary gRPC load from
// clients that do not retry: no RPC may fail, every generation answers
// (its pid in the x-pid header), every old one exits (status 0 where we
// reap it), and a health Watch on the first generation sees NOT_SERVING
// once it drains.
func TestUpgradesUnderGRPCLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds baton and examples/grpc, 20 upgrades under load")
	}
	began := time.Now()
	sub, err := proctest.ModuleRoot() // this module, grpcdrain
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: unix socket paths are limited to ~104 bytes.
	dir, err := os.MkdirTemp("", "bgrpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	t.Setenv("BATON_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("GORACE", "halt_on_error=1 atexit_sleep_ms=0")

	// Race-enabled binaries when this test is (the build cache then holds
	// grpc-go's race build already).
	var race []string
	if raceEnabled {
		race = []string{"-race"}
	}
	bins, err := proctest.Build(filepath.Dir(sub), dir, map[string]string{"baton": "./cmd/baton"}, map[string][]string{"baton": race})
	if err != nil {
		t.Fatal(err)
	}
	apps, err := proctest.Build(sub, dir, map[string]string{"grpc-v1": "./examples/grpc", "grpc-v2": "./examples/grpc"}, map[string][]string{
		"grpc-v1": append([]string{"-ldflags", "-X main.buildVersion=v1"}, race...),
		"grpc-v2": append([]string{"-ldflags", "-X main.buildVersion=v2"}, race...),
	})
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(began)

	tracker := proctest.NewTracker()
	t.Cleanup(tracker.Close)
	svcDir := filepath.Join(dir, "svc")
	if err := os.Mkdir(svcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join(svcDir, "grpc")
	install(t, apps["grpc-v1"], installed)
	logf, err := os.Create(filepath.Join(dir, "grpc.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("service log (tail):\n%s", b)
		}
		logf.Close()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "grpc-e2e"
	addr := freeLoopback(t)
	svc, err := proctest.Start(ctx, tracker, bins["baton"], name, os.Environ(), logf, installed,
		"-name", name, "-addr", addr, "-drain-timeout", e2eDrainTimeout.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAll(t, bins["baton"], name, tracker) })
	st, err := svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A health Watch on the first generation: SERVING now, NOT_SERVING
	// once it drains.
	watchConn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	defer watchConn.Close()
	watchCtx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	watch, err := healthpb.NewHealthClient(watchConn).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message: %v, %v; want SERVING", m, err)
	}
	if hdr, err := watch.Header(); err != nil || pidOf(hdr) != st.PID {
		t.Fatalf("Watch header %v, %v; want x-pid %d", hdr, err, st.PID)
	}

	load, err := startGRPCLoad(addr, 4, 3, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	defer load.stop()
	if err := load.waitFor(ctx, func() bool { return load.pids[st.PID] >= 200 }, fmt.Sprintf("200 answers from pid %d", st.PID)); err != nil {
		t.Fatal(err)
	}

	const upgrades = 20
	pids := []int{st.PID}
	upStart := time.Now()
	var upTotal time.Duration
	for i := 1; i <= upgrades; i++ {
		version := "v1"
		if i%2 == 1 {
			version = "v2"
		}
		install(t, apps["grpc-"+version], installed)
		rep, err := svc.Upgrade(ctx)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i, err)
		}
		if rep.ExitCode != 0 || !rep.OK || rep.Result == nil {
			t.Fatalf("upgrade %d: exit %d, %s: %s %s", i, rep.ExitCode, rep.Code, rep.Error, rep.Stderr)
		}
		upTotal += rep.Returned.Sub(rep.Triggered)
		pid := rep.Result.PID
		// The load moved to the new generation (each of its connections
		// got the old one's GOAWAY and connected again).
		if err := load.waitFor(ctx, func() bool { return load.pids[pid] >= 200 }, fmt.Sprintf("200 answers from pid %d (upgrade %d)", pid, i)); err != nil {
			t.Fatal(err)
		}
		if got := load.version(pid); got != version {
			t.Errorf("upgrade %d: pid %d answers as %q, installed %q", i, pid, got, version)
		}
		if i == 1 {
			m, err := watch.Recv()
			if err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Errorf("Watch on the first generation after its handover: %v, %v; want NOT_SERVING", m, err)
			}
			endWatch() // else it holds the first generation until its drain deadline
		}
		pids = append(pids, pid)
	}
	upgradesTook := time.Since(upStart)
	res := load.stop()

	if res.ok == 0 {
		t.Fatal("no RPC succeeded")
	}
	if res.failed != 0 {
		t.Errorf("%d of %d RPCs failed: %v; first: %v", res.failed, res.ok+res.failed, res.byCode, res.failures)
	}
	for _, pid := range pids {
		if res.pids[pid] == 0 {
			t.Errorf("generation pid %d never answered", pid)
		}
	}
	for _, pid := range pids[:len(pids)-1] {
		wctx, wcancel := context.WithTimeout(ctx, e2eDrainTimeout+e2eProbation+10*time.Second)
		ex, err := tracker.WaitExit(wctx, pid)
		wcancel()
		if err != nil {
			t.Errorf("old generation %d did not exit: %v", pid, err)
		} else if ex.Reaped && ex.ExitCode != 0 {
			t.Errorf("old generation %d exited with status %d", pid, ex.ExitCode)
		}
	}
	t.Logf("%d upgrades (baton upgrade: %v on average, %v in all with the waits for the load) under %d client goroutines on %d connections: %s; built in %v, test took %v",
		upgrades, (upTotal / upgrades).Round(time.Millisecond), upgradesTook.Round(time.Millisecond), 4*3, 4, res, built.Round(time.Second), time.Since(began).Round(time.Second))
}

// grpcLoad sends unary RPCs (Echo, and a health Check every tenth call)
// from several goroutines on several connections; retries are off
// (grpc.WithDisableRetry), so an RPC that fails is counted, never sent
// again. grpc-go still re-sends, transparently, an RPC that the server
// refused unprocessed (its stream id above a GOAWAY's last one): the
// server never saw it. Those are counted apart, with a client
// stats.Handler.
type grpcLoad struct {
	conns  []*grpc.ClientConn
	halt   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	done   chan struct{}
	issued atomic.Int64
	ok     atomic.Int64
	resent atomic.Int64 // transparent retry attempts
	// notServing counts health Checks answered NOT_SERVING (by a
	// draining generation): answers, not failures.
	notServing atomic.Int64

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every 100th answer of a pid
	pids     map[int]int64
	versions map[int]string
	failed   map[codes.Code]int64
	failures []string
	result   *grpcResult
}

type grpcResult struct {
	ok, failed, resent, notServing int64
	byCode                         map[codes.Code]int64
	pids                           map[int]int64
	failures                       []string
}

func (r grpcResult) String() string {
	return fmt.Sprintf("%d RPCs, %d ok, %d failed, answered by %d pids, %d health Checks answered NOT_SERVING by a draining generation, %d transparent retries (refused unprocessed)",
		r.ok+r.failed, r.ok, r.failed, len(r.pids), r.notServing, r.resent)
}

func startGRPCLoad(addr string, conns, perConn int, max int64) (*grpcLoad, error) {
	l := &grpcLoad{halt: make(chan struct{}), done: make(chan struct{}), changed: make(chan struct{}),
		pids: map[int]int64{}, versions: map[int]string{}, failed: map[codes.Code]int64{}}
	for range conns {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDisableRetry(), grpc.WithStatsHandler(resendCounter{&l.resent}))
		if err != nil {
			l.stop()
			return nil, err
		}
		l.conns = append(l.conns, conn)
		for range perConn {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for n := 0; ; n++ {
					select {
					case <-l.halt:
						return
					default:
					}
					if l.issued.Add(1) > max {
						return
					}
					l.one(conn, n%10 == 9)
				}
			}()
		}
	}
	go func() { l.wg.Wait(); close(l.done) }()
	return l, nil
}

func (l *grpcLoad) one(conn *grpc.ClientConn, check bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hdr metadata.MD
	var err error
	if check {
		var resp *healthpb.HealthCheckResponse
		resp, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			l.notServing.Add(1)
		}
	} else {
		out := new(wrapperspb.StringValue)
		err = conn.Invoke(ctx, echoMethod, wrapperspb.String("ping"), out, grpc.Header(&hdr))
		if err == nil && !strings.HasSuffix(out.GetValue(), "ping") {
			err = status.Errorf(codes.DataLoss, "echo answered %q", out.GetValue())
		}
	}
	pid := pidOf(hdr)
	if err == nil && pid <= 0 {
		err = status.Errorf(codes.DataLoss, "no x-pid header: %v", hdr)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed[status.Code(err)]++
		if len(l.failures) < 20 {
			l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
		}
		return
	}
	l.ok.Add(1)
	l.pids[pid]++
	if v := hdr.Get("x-version"); len(v) == 1 {
		l.versions[pid] = v[0]
	}
	if l.pids[pid]%100 == 0 {
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *grpcLoad) version(pid int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.versions[pid]
}

// waitFor waits until cond (called with l.mu held) holds.
func (l *grpcLoad) waitFor(ctx context.Context, cond func() bool, what string) error {
	for {
		l.mu.Lock()
		met, ch := cond(), l.changed
		l.mu.Unlock()
		if met {
			return nil
		}
		select {
		case <-ch:
		case <-l.done:
			l.mu.Lock()
			defer l.mu.Unlock()
			if cond() {
				return nil
			}
			return fmt.Errorf("load ended before %s", what)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

// stop ends the load (every worker returned, the connections closed) and
// returns its figures; later calls return the same.
func (l *grpcLoad) stop() grpcResult {
	l.once.Do(func() {
		close(l.halt)
		l.wg.Wait()
		for _, c := range l.conns {
			c.Close()
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		r := &grpcResult{ok: l.ok.Load(), resent: l.resent.Load(), notServing: l.notServing.Load(),
			byCode: map[codes.Code]int64{}, pids: map[int]int64{}, failures: l.failures}
		for c, n := range l.failed {
			r.byCode[c] = n
			r.failed += n
		}
		for p, n := range l.pids {
			r.pids[p] = n
		}
		l.result = r
	})
	return *l.result
}

// resendCounter counts the attempts grpc-go makes on its own (transparent
// retries).
type resendCounter struct{ n *atomic.Int64 }

func (h resendCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (h resendCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.IsTransparentRetryAttempt {
		h.n.Add(1)
	}
}
func (h resendCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h resendCounter) HandleConn(context.Context, stats.ConnStats) {}

func pidOf(md metadata.MD) int {
	v := md.Get("x-pid")
	if len(v) != 1 {
		return 0
	}
	pid, err := strconv.Atoi(v[0])
	if err != nil {
		return 0
	}
	return pid
}

// install copies src to dst through a rename: the running generation's
// binary is never written to.
func install(t *testing.T, src, dst string) {
	t.Helper()
	if err := proctest.InstallCopy(src, dst); err != nil {
		t.Fatal(err)
	}
}

// freeLoopback returns a loopback TCP address that was free a moment ago.
func freeLoopback(t *testing.T) string {
	t.Helper()
	a, err := proctest.FreeAddr("tcp")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// stopAll stops the service with `baton stop` and waits for every tracked
// generation to be gone; what is left is killed (never a pid <= 0).
func stopAll(t *testing.T, batonCLI, name string, tracker *proctest.Tracker) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, batonCLI, "stop", "--name", name).CombinedOutput(); err != nil {
		t.Errorf("baton stop: %v: %s", err, out)
	}
	live := tracker.Live()
	sort.Ints(live)
	for _, pid := range live {
		if _, err := tracker.WaitExit(ctx, pid); err != nil {
			t.Errorf("generation left running after stop: %v", err)
			if p, err := os.FindProcess(pid); err == nil && pid > 0 {
				p.Kill()
			}
		}
	}
}
