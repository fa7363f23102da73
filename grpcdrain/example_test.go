package grpcdrain_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/baton-go/baton/grpcdrain"
)

// A server drained within 10 seconds: the RPCs that are still running
// then are cut, and the Report counts them. Under baton, the listener
// comes from Upgrader.Listen and the context from Upgrader.DrainContext,
// once Upgrader.Exit is closed.
func Example() {
	d := grpcdrain.New(grpcdrain.Options{Logger: slog.New(slog.DiscardHandler)})
	srv := grpc.NewServer(d.ServerOption())
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(srv, healthSrv)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("before the drain:", resp.GetStatus())

	// Time to go: say so to health checkers, then drain.
	healthSrv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := d.Drain(ctx, srv)
	fmt.Printf("drained: connections %d, forced %v, RPCs cut %d, err %v\n", rep.ConnsAtStart, rep.Forced, rep.CutRPCs, err)
	// Output:
	// before the drain: SERVING
	// drained: connections 1, forced false, RPCs cut 0, err <nil>
}
