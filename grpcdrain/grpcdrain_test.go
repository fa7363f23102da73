package grpcdrain_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/baton-go/baton/grpcdrain"
)

// testTimeout bounds every wait; tests assert outcomes, not timings.
const testTimeout = 30 * time.Second

var quiet = slog.New(slog.DiscardHandler)

const (
	blockMethod    = "/test.Block/Block"
	stubbornMethod = "/test.Block/Stubborn"
)

// blockDesc is a unary method that answers once its release channel is
// closed (written by hand: no generated code).
var blockDesc = grpc.ServiceDesc{
	ServiceName: "test.Block",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Block",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			b := srv.(*blocker)
			b.entered <- struct{}{}
			select {
			case <-b.release:
				return wrapperspb.String("released " + in.GetValue()), nil
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		},
	}, {
		// Stubborn ignores its context: it answers only once released.
		MethodName: "Stubborn",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			b := srv.(*blocker)
			b.entered <- struct{}{}
			<-b.release
			b.stubbornDone <- struct{}{}
			return wrapperspb.String("released " + in.GetValue()), nil
		},
	}},
}

type blocker struct {
	entered      chan struct{}
	release      chan struct{}
	stubbornDone chan struct{}
}

type testServer struct {
	srv     *grpc.Server
	drainer *grpcdrain.Drainer
	block   *blocker
	conn    *grpc.ClientConn
}

// start serves the health service and test.Block on a fresh loopback
// listener and connects a client (retries off) to it.
func start(t *testing.T) *testServer {
	t.Helper()
	ts := &testServer{drainer: grpcdrain.New(grpcdrain.Options{Logger: quiet}),
		block: &blocker{entered: make(chan struct{}, 10), release: make(chan struct{}), stubbornDone: make(chan struct{}, 10)}}
	ts.srv = grpc.NewServer(ts.drainer.ServerOption())
	healthpb.RegisterHealthServer(ts.srv, health.NewServer())
	ts.srv.RegisterService(&blockDesc, ts.block)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ts.srv.Serve(ln)
	t.Cleanup(ts.srv.Stop)
	ts.conn, err = grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.conn.Close() })
	return ts
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

type drainResult struct {
	rep grpcdrain.Report
	err error
}

func (ts *testServer) drain(ctx context.Context) chan drainResult {
	res := make(chan drainResult, 1)
	go func() {
		rep, err := ts.drainer.Drain(ctx, ts.srv)
		res <- drainResult{rep, err}
	}()
	return res
}

// result waits for a drain's outcome; a drain that does not return fails
// the test instead of hanging it.
func result(t *testing.T, res chan drainResult) drainResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(testTimeout):
		t.Fatalf("Drain did not return within %v", testTimeout)
		return drainResult{}
	}
}

// waitGoAway waits until the client has left READY: the server's GOAWAY
// arrived, so the drain is under way.
func waitGoAway(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx := ctxTimeout(t)
	for conn.GetState() == connectivity.Ready {
		if !conn.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatal("the client never saw the drain's GOAWAY")
		}
	}
}

// TestDrainWaitsForRPCs: an RPC in flight when the drain starts completes;
// the drain waits for it and cuts nothing.
func TestDrainWaitsForRPCs(t *testing.T) {
	ts := start(t)
	reply := make(chan error, 1)
	go func() {
		out := new(wrapperspb.StringValue)
		err := ts.conn.Invoke(ctxTimeout(t), blockMethod, wrapperspb.String("a"), out)
		if err == nil && out.GetValue() != "released a" {
			err = errors.New("wrong answer " + out.GetValue())
		}
		reply <- err
	}()
	<-ts.block.entered
	res := ts.drain(ctxTimeout(t))
	waitGoAway(t, ts.conn)
	close(ts.block.release)
	if err := <-reply; err != nil {
		t.Fatalf("RPC in flight during the drain: %v", err)
	}
	r := result(t, res)
	if r.err != nil {
		t.Fatalf("Drain: %v", r.err)
	}
	if r.rep.RPCsAtStart != 1 || r.rep.ConnsAtStart != 1 || r.rep.Forced || r.rep.CutRPCs != 0 || r.rep.CutMethods != nil {
		t.Fatalf("report %+v, want 1 RPC and 1 conn at start, nothing cut", r.rep)
	}
	if n := ts.drainer.InFlight(); n != 0 {
		t.Fatalf("%d RPCs in flight after the drain", n)
	}
}

// TestDrainDeadlineCutsWhatIsLeft: a Watch stream never ends by itself and
// a unary RPC is stuck; when the drain's context ends, Stop cuts both and
// the report names them.
func TestDrainDeadlineCutsWhatIsLeft(t *testing.T) {
	ts := start(t)
	watch, err := healthpb.NewHealthClient(ts.conn).Watch(ctxTimeout(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message: %v, %v", st, err)
	}
	reply := make(chan error, 1)
	go func() {
		reply <- ts.conn.Invoke(ctxTimeout(t), blockMethod, wrapperspb.String("a"), new(wrapperspb.StringValue))
	}()
	<-ts.block.entered

	ctx, cancel := context.WithCancel(context.Background())
	res := ts.drain(ctx)
	waitGoAway(t, ts.conn)
	cancel() // the drain deadline, now: both RPCs are still running
	r := result(t, res)
	if !errors.Is(r.err, grpcdrain.ErrForced) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Drain error %v, want ErrForced and context.Canceled", r.err)
	}
	want := map[string]int{blockMethod: 1, "/grpc.health.v1.Health/Watch": 1}
	if !r.rep.Forced || r.rep.CutRPCs != 2 || r.rep.CutStreams != 1 || len(r.rep.CutMethods) != 2 ||
		r.rep.CutMethods[blockMethod] != 1 || r.rep.CutMethods["/grpc.health.v1.Health/Watch"] != 1 {
		t.Fatalf("report %+v, want forced, 2 RPCs cut (1 stream): %v", r.rep, want)
	}
	if r.rep.RPCsAtStart != 2 {
		t.Errorf("RPCsAtStart %d, want 2", r.rep.RPCsAtStart)
	}
	if _, err := watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("cut Watch: %v, want Unavailable", err)
	}
	if err := <-reply; status.Code(err) != codes.Unavailable {
		t.Errorf("cut unary RPC: %v, want Unavailable", err)
	}
	// A second Drain returns the first one's outcome.
	rep2, err2 := ts.drainer.Drain(ctxTimeout(t), ts.srv)
	if rep2.CutRPCs != 2 || !errors.Is(err2, grpcdrain.ErrForced) {
		t.Errorf("second Drain: %+v, %v", rep2, err2)
	}
}

// TestDrainIdle: a server without RPCs stops at once, with its client
// connection counted.
func TestDrainIdle(t *testing.T) {
	ts := start(t)
	if _, err := healthpb.NewHealthClient(ts.conn).Check(ctxTimeout(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	r := result(t, ts.drain(ctxTimeout(t)))
	if r.err != nil || r.rep.ConnsAtStart != 1 || r.rep.RPCsAtStart != 0 || r.rep.Forced {
		t.Fatalf("Drain: %+v, %v", r.rep, r.err)
	}
}

// TestDrainDoesNotWaitForStubbornHandlers: a handler that ignores its
// context keeps GracefulStop waiting even after Stop; Drain returns at the
// deadline all the same, its client has its error, and the handler is
// still running.
func TestDrainDoesNotWaitForStubbornHandlers(t *testing.T) {
	ts := start(t)
	reply := make(chan error, 1)
	go func() {
		reply <- ts.conn.Invoke(ctxTimeout(t), stubbornMethod, wrapperspb.String("s"), new(wrapperspb.StringValue))
	}()
	<-ts.block.entered
	t.Cleanup(func() { close(ts.block.release) })

	ctx, cancel := context.WithCancel(context.Background())
	res := ts.drain(ctx)
	waitGoAway(t, ts.conn)
	cancel()
	r := result(t, res)
	if !errors.Is(r.err, grpcdrain.ErrForced) || r.rep.CutRPCs != 1 || r.rep.CutStreams != 0 || r.rep.CutMethods[stubbornMethod] != 1 {
		t.Fatalf("Drain: %+v, %v; want ErrForced, 1 unary RPC cut", r.rep, r.err)
	}
	select {
	case err := <-reply:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("cut RPC: %v, want Unavailable", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the client of the cut RPC got no answer")
	}
	select {
	case <-ts.block.stubbornDone:
		t.Fatal("the stubborn handler returned before it was released")
	default:
	}
	if n := ts.drainer.InFlight(); n != 1 {
		t.Errorf("InFlight %d after the drain, want 1 (the stubborn handler)", n)
	}
}

// TestDrainConcurrentCalls: a second Drain called while the first waits
// returns the first one's outcome.
func TestDrainConcurrentCalls(t *testing.T) {
	ts := start(t)
	reply := make(chan error, 1)
	go func() {
		reply <- ts.conn.Invoke(ctxTimeout(t), blockMethod, wrapperspb.String("a"), new(wrapperspb.StringValue))
	}()
	<-ts.block.entered
	first := ts.drain(ctxTimeout(t))
	waitGoAway(t, ts.conn)
	second := ts.drain(ctxTimeout(t))
	close(ts.block.release)
	r1, r2 := result(t, first), result(t, second)
	if r1.err != nil || r2.err != nil || r1.rep.RPCsAtStart != 1 || r2.rep.Started != r1.rep.Started {
		t.Fatalf("first %+v, %v; second %+v, %v", r1.rep, r1.err, r2.rep, r2.err)
	}
	if err := <-reply; err != nil {
		t.Fatalf("RPC in flight: %v", err)
	}
}
