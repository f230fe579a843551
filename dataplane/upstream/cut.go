package upstream

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrCut means a Cutter ended the exchange (a drain deadline passed). With
// status 0 nothing was written and the caller answers 502; otherwise the
// response was cut short.
var ErrCut = errors.New("upstream: exchange cut")

// A Cutter ends exchanges before they are done: every exchange that
// ForwardCut started under it and that is still running when Cut is called
// fails at once with ErrCut, its backend connection closed. Exchanges started
// after Cut are not affected. It serves drain deadlines without a context per
// request: entering and leaving cost one uncontended lock each.
//
// The zero value is ready to use. A Cutter is safe for concurrent use.
type Cutter struct {
	gen atomic.Uint64 // Cut calls so far

	mu      sync.Mutex
	running map[*conn]struct{}
}

// Cut aborts every running exchange and returns how many there were.
func (k *Cutter) Cut() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen.Add(1)
	n := len(k.running)
	for c := range k.running {
		c.abort()
	}
	clear(k.running)
	return n
}

// enter registers c's exchange, which began (before its connection was
// taken) in generation gen; if Cut was called since, c is aborted at once.
func (k *Cutter) enter(c *conn, gen uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gen.Load() != gen {
		c.abort()
		return
	}
	if k.running == nil {
		k.running = make(map[*conn]struct{})
	}
	k.running[c] = struct{}{}
}

// leave ends c's registration and reports whether Cut ended the exchange.
func (k *Cutter) leave(c *conn) (cut bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.running[c]; ok {
		delete(k.running, c)
		return false
	}
	return true
}
