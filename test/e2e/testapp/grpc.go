package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// grpcServe runs gRPC's health service, SERVING for the service named -name only, so a
// client can tell which server answered, and gRPC's reflection service, whose one method is a
// bidirectional stream.
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
	reflection.Register(s)
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

// grpcStream sends -n messages, -gap apart, on one bidirectional stream (reflection's
// ServerReflectionInfo, each message a ListServices marked by its host field "stream-I") and
// reads the server's answer to each before the next. It prints "sent I UNIXNANO" as it sends
// message I and "reply I SERVICES" when the answer comes, so a test can tell when each message
// left against when its copy arrived.
func grpcStream(args []string) {
	fs := flag.NewFlagSet("grpc-stream", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	n := fs.Int("n", 3, "messages to send")
	gap := fs.Duration("gap", 2*time.Second, "pause between messages")
	fs.Parse(args)
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+time.Duration(*n)*(*gap))
	defer cancel()
	s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= *n; i++ {
		if i > 1 {
			time.Sleep(*gap)
		}
		fmt.Println("sent", i, time.Now().UnixNano())
		err := s.Send(&reflectionpb.ServerReflectionRequest{
			Host:           fmt.Sprintf("stream-%d", i),
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
		})
		if err != nil {
			log.Fatalf("send %d: %v", i, err)
		}
		r, err := s.Recv()
		if err != nil {
			log.Fatalf("reply %d: %v", i, err)
		}
		var names []string
		for _, svc := range r.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		fmt.Println("reply", i, strings.Join(names, ","))
	}
	if err := s.CloseSend(); err != nil {
		log.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		log.Fatalf("end of stream: %v", err)
	}
}
