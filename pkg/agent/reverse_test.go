package agent

import (
	"net"
	"testing"

	"github.com/kubectl-kt/kt/pkg/wire"
)

// stream is one reverse stream: the agent's end goes into the pool; the client's end is returned.
func stream(t *testing.T, p *reversePool, gen uint64) net.Conn {
	t.Helper()
	agentEnd, clientEnd := net.Pipe()
	p.add(agentEnd, gen)
	t.Cleanup(func() { clientEnd.Close() })
	return clientEnd
}

func TestReversePoolHandsOutStreamsWithTheirPort(t *testing.T) {
	var p reversePool
	client := stream(t, &p, 1)
	got := make(chan int, 1)
	go func() {
		port, _ := wire.ReadReverseGo(client)
		got <- port
	}()
	if c := p.take(8080); c == nil {
		t.Fatal("an idle stream was not handed out")
	}
	if port := <-got; port != 8080 {
		t.Errorf("the client was told port %d, want 8080", port)
	}
	if c := p.take(8080); c != nil {
		t.Fatal("an empty pool handed out a stream")
	}
}

func TestReversePoolDropsOlderGenerationsAndDeadStreams(t *testing.T) {
	var p reversePool
	stream(t, &p, 1)
	dead := stream(t, &p, 2) // a reconnected client: generation 1's stream goes
	stream(t, &p, 1)         // late, from the old generation: refused
	dead.Close()
	if c := p.take(80); c != nil {
		t.Fatal("a dead stream was handed out")
	}
	if c := p.pop(); c != nil {
		t.Errorf("streams of an old generation stayed in the pool")
	}
}
