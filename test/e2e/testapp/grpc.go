package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// grpcServe runs gRPC's health service, SERVING for the service named -name only, so a
// client can tell which server answered.
func grpcServe(args []string) {
	fs := flag.NewFlagSet("grpc-serve", flag.ExitOnError)
	addr := fs.String("addr", ":9000", "listen address")
	name := fs.String("name", "", "the health service name this server reports SERVING")
	fs.Parse(args)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus(*name, healthpb.HealthCheckResponse_SERVING)
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	log.Printf("grpc health server %q on %s", *name, *addr)
	log.Fatal(s.Serve(l))
}

// grpcCheck calls Check (unary) and Watch (server streaming) for -service with the metadata
// given as -md key=value, printing "check <status>" and "watch <status>".
func grpcCheck(args []string) {
	fs := flag.NewFlagSet("grpc-check", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	svc := fs.String("service", "", "health service to check")
	md := fs.String("md", "", "metadata key=value")
	fs.Parse(args)
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if k, v, ok := strings.Cut(*md, "="); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	c := healthpb.NewHealthClient(conn)
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: *svc})
	if err != nil {
		fmt.Println("check error:", err)
	} else {
		fmt.Println("check", resp.Status)
	}
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: *svc})
	if err != nil {
		fmt.Println("watch error:", err)
		os.Exit(0)
	}
	r, err := w.Recv()
	if err != nil {
		fmt.Println("watch error:", err)
		return
	}
	fmt.Println("watch", r.Status)
}
