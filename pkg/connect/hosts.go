package connect

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubectl-kt/kt/pkg/dns"
	"github.com/kubectl-kt/kt/pkg/netadmin"
)

// hostsWriter keeps kt's block in the hosts file equal to the Services of some namespaces:
// svc.ns and svc.ns.svc.<domain> for each, the bare svc for the current namespace, and the
// pods of headless Services by their hostnames (StatefulSet pods). Its names come from the
// same local copy as localDNS's (dns.Names: one watch of Services and one of headless
// Services' EndpointSlices for every namespace when it may, else one of each per namespace);
// it computes the whole block in memory and writes it once per burst of changes.
type hostsWriter struct {
	client     kubernetes.Interface
	admin      netadmin.Admin
	path       string
	namespaces []string
	current    string
	domain     string

	names   *dns.Names
	listed  chan error // Run's result
	changed chan struct{}
	written uint64 // the last block written (its hash), to skip an unchanged one
	mu      sync.Mutex
}

// hostsDebounce is how long the writer waits after a change for more of a burst, and
// hostsMaxWait how long at most, under a stream of changes.
const (
	hostsDebounce = 100 * time.Millisecond
	hostsMaxWait  = time.Second
)

// watch starts the watches, as soon as connect starts: their first list overlaps the
// shadow's start. start waits for it.
func (h *hostsWriter) watch(ctx context.Context) {
	h.changed = make(chan struct{}, 1)
	h.names = dns.NewNames(h.domain)
	h.names.OnChange = func() {
		select {
		case h.changed <- struct{}{}:
		default:
		}
	}
	h.listed = make(chan error, 1)
	go func() {
		h.listed <- h.names.Run(ctx, h.client, dns.Watch{Current: h.current, Namespaces: h.namespaces, NeedSlices: true})
	}()
}

// start waits for the watches' first list (starting them if watch did not) and writes the
// first block.
func (h *hostsWriter) start(ctx context.Context) error {
	if h.names == nil {
		h.watch(ctx)
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case err := <-h.listed:
		if err != nil {
			return fmt.Errorf("watch Services and EndpointSlices in %v: %w", h.namespaces, err)
		}
	case <-t.C:
		return fmt.Errorf("watch Services and EndpointSlices in %v: not listed within 30 s", h.namespaces)
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.write(ctx)
}

// entries computes the block from what the watches hold.
func (h *hostsWriter) entries() []dns.HostEntry { return h.names.Hosts() }

// write writes the block when it differs from the last one written.
func (h *hostsWriter) write(ctx context.Context) error {
	e := h.entries()
	key := hashEntries(e)
	h.mu.Lock()
	defer h.mu.Unlock()
	if key == h.written {
		return nil
	}
	if err := h.admin.WriteHostsBlock(h.path, e); err != nil {
		return err
	}
	h.written = key
	klog.FromContext(ctx).V(2).Info("hosts block written", "entries", len(e))
	return nil
}

// hashEntries is a digest of the block, to tell a changed one: 10000 entries hashed, not
// printed into a string kept between writes.
func hashEntries(e []dns.HostEntry) uint64 {
	f := fnv.New64a()
	for _, x := range e {
		io.WriteString(f, x.IP)
		for _, n := range x.Names {
			f.Write([]byte{0})
			io.WriteString(f, n)
		}
		f.Write([]byte{'\n'})
	}
	return f.Sum64()
}

// run writes the block after each burst of changes: hostsDebounce after the last change,
// or hostsMaxWait after the first one under a stream of them.
func (h *hostsWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.changed:
		}
		deadline := time.After(hostsMaxWait)
	burst:
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.changed:
				continue
			case <-time.After(hostsDebounce):
			case <-deadline:
			}
			break burst
		}
		if err := h.write(ctx); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).V(1).Info("update hosts", "err", err)
		}
	}
}
