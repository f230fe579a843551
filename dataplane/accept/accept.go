// Package accept is the accept loop the data plane's HTTP servers (dataplane/http1,
// dataplane/http2) share: the listeners a server accepts from, closed together when it shuts
// down, and accepting that pauses rather than ends when the process runs out of descriptors.
package accept

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Loops is the set of listeners a server accepts from. The zero value is ready to use.
type Loops struct {
	mu     sync.Mutex
	ls     map[net.Listener]struct{}
	closed bool
}

// Serve accepts connections from l and hands each to serve, until l fails, or until Close, when
// it returns http.ErrServerClosed (so does serve returning false: its server is shutting down).
// Running out of file descriptors (or a timeout) pauses accepting, 5 ms doubling to 1 s, as
// net/http's server does, instead of ending it.
func (a *Loops) Serve(l net.Listener, serve func(net.Conn) bool, log *slog.Logger) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return http.ErrServerClosed
	}
	if a.ls == nil {
		a.ls = map[net.Listener]struct{}{}
	}
	a.ls[l] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.ls, l)
		a.mu.Unlock()
	}()
	var pause time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if a.isClosed() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				if log != nil {
					log.Warn("accept failed; retrying", "err", err, "pause", pause)
				}
				time.Sleep(pause)
				continue
			}
			return err
		}
		pause = 0
		if !serve(nc) {
			return http.ErrServerClosed
		}
	}
}

// Close closes the listeners, and makes Serve return http.ErrServerClosed from now on.
func (a *Loops) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for l := range a.ls {
		l.Close()
	}
}

func (a *Loops) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}
