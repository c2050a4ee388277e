package main

import (
	"flag"
	"log"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

// serveRegistry runs go-containerregistry's OCI registry (the distribution API, blobs and
// manifests in memory), which logs each request: a test sees what the kubelet pulled.
func serveRegistry(args []string) {
	fs := flag.NewFlagSet("registry", flag.ExitOnError)
	addr := fs.String("listen", "127.0.0.1:5111", "listen address")
	fs.Parse(args)
	reg := registry.New(registry.Logger(log.New(os.Stdout, "", 0))) // a line per request
	log.Printf("testapp registry on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, reg))
}
