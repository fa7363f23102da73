// Command grpc is a small gRPC service built on baton: it can be upgraded
// to a new binary with `baton upgrade --name NAME` (or SIGHUP) without
// failing an RPC.
//
// It serves the standard health service (grpc.health.v1.Health: Check and
// Watch) and a tiny unary echo, baton.example.Echo/Echo, whose request and
// response are a google.protobuf.StringValue (no generated code needed).
// Every response carries the serving process's pid in the "x-pid" header
// metadata (and "x-version", "x-generation"), so that a client sees which
// generation answered.
//
// The health service reports SERVING (for "" and "baton.example.Echo")
// while this generation serves, and NOT_SERVING from the moment it starts
// to drain: a client that checks health learns that this process is going
// away, while the RPCs that still reach it are answered.
//
// When baton hands the listening socket over to a new generation, this one
// drains with grpcdrain: GracefulStop (grpc-go's two-phase GOAWAY; RPCs in
// flight finish), bounded by the drain deadline (-drain-timeout), after
// which Stop cuts what is left and the count is logged. A health Watch
// stream open on a draining generation gets NOT_SERVING and stays open
// until its client ends it or the deadline cuts it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/baton-go/baton"
	"github.com/baton-go/baton/grpcdrain"
)

// buildVersion is the default of -version; set it with
// -ldflags "-X main.buildVersion=v2".
var buildVersion = "dev"

// EchoMethod is the full name of the echo RPC.
const EchoMethod = "/baton.example.Echo/Echo"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpc:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:50051", "TCP address to serve gRPC on")
	name := flag.String("name", "grpc", "control endpoint name (baton upgrade --name NAME)")
	version := flag.String("version", buildVersion, "version string reported in x-version")
	pidFile := flag.String("pidfile", "", "write the serving generation's pid here")
	drainTimeout := flag.Duration("drain-timeout", 30*time.Second, "drain deadline after a handover: RPCs still running then are cut")
	readyTimeout := flag.Duration("ready-timeout", 30*time.Second, "how long a new generation may take to become ready")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("app", "grpc", "pid", os.Getpid(), "version", *version)
	upg, err := baton.New(baton.Options{
		Name:         *name,
		PIDFile:      *pidFile,
		ReadyTimeout: *readyTimeout,
		DrainTimeout: *drainTimeout,
		Logger:       log,
	})
	if err != nil {
		return fmt.Errorf("cannot start: %w", err)
	}
	defer upg.Stop()

	// Set on every response, whatever the service: a client learns which
	// generation answered.
	md := metadata.Pairs("x-pid", strconv.Itoa(os.Getpid()), "x-version", *version, "x-generation", strconv.Itoa(upg.Generation()))
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := grpc.SetHeader(ctx, md); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := ss.SetHeader(md); err != nil {
			return err
		}
		return handler(srv, ss)
	}

	drainer := grpcdrain.New(grpcdrain.Options{Logger: log})
	srv := grpc.NewServer(drainer.ServerOption(), grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	healthSrv := health.NewServer() // "" is SERVING from the start
	healthSrv.SetServingStatus("baton.example.Echo", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, healthSrv)
	srv.RegisterService(&echoDesc, echoServer{prefix: fmt.Sprintf("%s pid %d: ", *version, os.Getpid())})

	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	go func() {
		// baton closes this process's listener at the handover (the socket
		// stays open in the new generation): Serve then returns
		// net.ErrClosed, and the connections it accepted are still served.
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Error("serve", "err", err)
		}
	}()

	if err := upg.Ready(); err != nil {
		return fmt.Errorf("not ready: %w", err)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-upg.Exit():
		log.Info("handed over; draining")
	case s := <-stop:
		log.Info("stopping", "signal", s.String())
		upg.Stop()
	}
	healthSrv.Shutdown() // NOT_SERVING, for every service, from now on
	ctx, cancel := upg.DrainContext()
	defer cancel()
	rep, err := drainer.Drain(ctx, srv)
	log.Info("drained", "took", rep.Finished.Sub(rep.Started).Round(time.Millisecond),
		"rpcs_at_start", rep.RPCsAtStart, "cut_rpcs", rep.CutRPCs, "cut_streams", rep.CutStreams, "err", err)
	return nil
}

// echoServer answers Echo with prefix + the request's value.
type echoServer struct{ prefix string }

func (e echoServer) echo(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(e.prefix + in.GetValue()), nil
}

// echoDesc describes baton.example.Echo by hand: one unary method on
// well-known message types, so no code is generated.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "baton.example.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			call := func(ctx context.Context, req any) (any, error) {
				return srv.(echoServer).echo(ctx, req.(*wrapperspb.StringValue))
			}
			if interceptor == nil {
				return call(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}, call)
		},
	}},
}
