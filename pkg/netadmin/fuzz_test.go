//go:build linux

package netadmin

import (
	"encoding/json"
	"strings"
	"testing"
)

// The helper decodes requests from whoever sudoers lets run it: what decodeRequest accepts
// carries nothing that could start a new line in a file, and no zone.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"write-hosts","path":"/etc/hosts","entries":[{"IP":"10.96.0.1","Names":["web","web.ns"]}]}`))
	f.Add([]byte(`{"op":"apply-resolv","path":"/etc/resolv.conf","server":"127.0.0.153","search":["ns.svc.cluster.local"]}`))
	f.Add([]byte(`{"op":"add-routes","name":"kt0","routes":["10.96.0.0/16"]}`))
	f.Add([]byte(`{"op":"write-hosts","entries":[{"IP":"fe80::1%a\nb","Names":["x"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeRequest(data)
		if err != nil {
			return
		}
		b, _ := json.Marshal(req)
		var fields []string
		fields = append(fields, req.Name, req.Server)
		fields = append(fields, req.Search...)
		fields = append(fields, req.NSs...)
		for _, e := range req.Entries {
			fields = append(append(fields, e.IP), e.Names...)
		}
		for _, s := range fields {
			if strings.ContainsAny(s, "\n\r\t #%") {
				t.Fatalf("accepted %q in %s", s, b)
			}
		}
	})
}
