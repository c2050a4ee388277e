package agent

import (
	"net"
	"sync"
	"time"
)

// Activity tracks the client's open connections, so the agent can tell how long its client
// has been gone.
type Activity struct {
	mu        sync.Mutex
	active    int
	idleSince time.Time
	now       func() time.Time
}

// NewActivity returns a tracker that counts as idle from now.
func NewActivity(now func() time.Time) *Activity {
	if now == nil {
		now = time.Now
	}
	return &Activity{idleSince: now(), now: now}
}

// Begin records an open connection; call the returned func (once) when it ends.
func (a *Activity) Begin() (end func()) {
	a.mu.Lock()
	a.active++
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.active--
			if a.active == 0 {
				a.idleSince = a.now()
			}
			a.mu.Unlock()
		})
	}
}

// Idle reports how long no connection has been open (0 while one is).
func (a *Activity) Idle() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active > 0 {
		return 0
	}
	return a.now().Sub(a.idleSince)
}

// Active reports the number of open connections.
func (a *Activity) Active() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active
}

// serve accepts on l and runs handle for each connection, counted as activity.
func (a *Activity) serve(l net.Listener, handle func(net.Conn)) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		end := a.Begin()
		go func() {
			defer end()
			handle(c)
		}()
	}
}
