package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dig asks for each name's A record in turn, over UDP, and prints a JSON line for each: its
// rcode, its answers and how long the answer took. The server defaults to the first
// nameserver of /etc/resolv.conf (in a netns, the netns's own file).
func dig(args []string) {
	fs := flag.NewFlagSet("dig", flag.ExitOnError)
	server := fs.String("server", "", "HOST:PORT to ask (default: /etc/resolv.conf's first nameserver)")
	fs.Parse(args)
	if *server == "" {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cfg.Servers) == 0 {
			log.Fatalf("no nameserver in /etc/resolv.conf: %v", err)
		}
		*server = cfg.Servers[0] + ":" + cfg.Port
	}
	c := &dns.Client{Timeout: 10 * time.Second}
	enc := json.NewEncoder(os.Stdout)
	for _, name := range fs.Args() {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		t0 := time.Now()
		r, _, err := c.Exchange(m, *server)
		ms := float64(time.Since(t0).Microseconds()) / 1000
		out := map[string]any{"name": name, "ms": ms}
		if err != nil {
			out["error"] = err.Error()
		} else {
			out["rcode"] = dns.RcodeToString[r.Rcode]
			var as []string
			for _, a := range r.Answer {
				as = append(as, strings.ReplaceAll(a.String(), "\t", " "))
			}
			out["answers"] = as
		}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}
