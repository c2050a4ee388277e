package tun

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// inNewNetns runs f on a thread of its own in a new network namespace; the thread ends with
// it, and the namespace with the thread.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root (a TUN device in a network namespace of its own), and CI runs as root")
		}
		t.Skip("needs root: a TUN device in a network namespace of its own")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread goes away with the namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("new network namespace: %v", err)
			return
		}
		f()
	}()
	<-done
}

// TestOffloadRoundTripThroughTheKernel writes an ICMP echo request in many pieces to a real
// TUN device with virtio-net headers and reads the kernel's reply back.
func TestOffloadRoundTripThroughTheKernel(t *testing.T) {
	inNewNetns(t, func() {
		d, err := Create("kttest%d", 1500)
		if err != nil {
			t.Errorf("create: %v", err)
			return
		}
		defer d.Close()
		if !d.Offload() {
			t.Errorf("no offload on %s: the kernel has TUN offloads since 2.6", d.Name())
			return
		}
		link, err := netlink.LinkByName(d.Name())
		if err == nil {
			err = netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{10, 9, 9, 1}, Mask: net.CIDRMask(24, 32)}})
		}
		if err != nil {
			t.Errorf("address: %v", err)
			return
		}
		payload := bytes.Repeat([]byte("kt offload "), 100)
		pkt := icmpEcho(net.IP{10, 9, 9, 2}, net.IP{10, 9, 9, 1}, 0x4b54, 7, payload)
		var pieces [][]byte // more than the writer's array holds
		for b := pkt; len(b) > 0; {
			n := min(len(b), 37)
			pieces = append(pieces, b[:n])
			b = b[n:]
		}
		if err := d.WriteOffload(pieces, false, 0, 0, 0, 0); err != nil {
			t.Errorf("write in %d pieces: %v", len(pieces), err)
			return
		}
		buf := make([]byte, d.OffloadMaxSize()+64)
		stop := time.AfterFunc(5*time.Second, func() { d.Close() }) // a read that never ends fails the test
		defer stop.Stop()
		for {
			got, err := d.ReadOffload(buf)
			if err != nil {
				t.Errorf("no echo reply from the kernel: %v", err)
				return
			}
			if len(got) < 28 || got[0]>>4 != 4 || got[9] != unix.IPPROTO_ICMP {
				continue // the kernel's own traffic (IPv6 router solicitations and the like)
			}
			icmp := got[20:]
			if icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != 0x4b54 || binary.BigEndian.Uint16(icmp[6:]) != 7 || !bytes.Equal(icmp[8:], payload) {
				t.Errorf("got ICMP type %d, %d bytes; want the echo reply to our request", icmp[0], len(icmp))
			}
			return
		}
	})
}

// icmpEcho builds an IPv4 ICMP echo request with its checksums.
func icmpEcho(src, dst net.IP, id, seq uint16, payload []byte) []byte {
	icmp := make([]byte, 8+len(payload))
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, 0))
	ip := make([]byte, 20, 20+len(icmp))
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_ICMP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	copy(ip[12:], src.To4())
	copy(ip[16:], dst.To4())
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
	return append(ip, icmp...)
}
