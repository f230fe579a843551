package http1

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// parker holds idle connections without a goroutine each, as nginx and HAProxy hold theirs: a
// parked connection's descriptor waits in an epoll instance of the server's, armed for one event,
// and one goroutine reading that instance resumes the connection's request loop (in a new
// goroutine) when the client sends its next request or closes. Its idle timeout is a timer; Shutdown
// and Close take parked connections back as they find them.
//
// A goroutine waiting in Go's poller keeps its stack (2 KiB at the least, 8 KiB and more once it
// has served a request through the proxy); a parked connection keeps only its heap objects. The
// epoll descriptor is itself waited on through Go's poller, so no thread blocks on it.
type parker struct {
	mu     sync.Mutex
	ep     *os.File // nil until the first park
	epfd   int      // ep's descriptor (os.File.Fd would make it blocking)
	rc     syscall.RawConn
	slots  []parkSlot // the event's Fd field is the slot's index, its Pad field the slot's generation
	free   []int32
	n      int // connections parked
	closed bool
	done   chan struct{} // closed when the goroutine reading ep has ended
	events []syscall.EpollEvent
	ready  []*conn
}

type parkSlot struct {
	c   *conn
	gen int32
}

// parkState is a connection's part in its server's parker, guarded by the parker's mutex.
type parkState struct {
	sock    syscall.RawConn // the socket, under TLS too; nil if there is none
	looked  bool            // sock has been looked up
	parked  bool
	armed   bool // the descriptor is in the epoll set (armed or fired)
	slot    int32
	n       int // the request index the loop goes on with
	timer   *time.Timer
	expired func()
}

// park hands c's wait for its n-th request to the parker; false if it cannot take it (a
// connection without a socket of its own, or a server closing): the caller then waits in a
// goroutine.
//
// The caller's wait ended without a byte of the next request read: for TLS, a read that timed out,
// so the TLS connection holds no complete record (a partial one waits for the rest of it, which
// the socket then reports).
func (p *parker) park(c *conn, n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.s.shutting.Load() || !c.park.lookUpSocket(c.rw) {
		return false
	}
	if p.ep == nil {
		if err := p.open(); err != nil {
			p.closed = true // no epoll here: every idle connection keeps its goroutine
			if c.s.Log != nil {
				c.s.Log.Warn("idle connections keep a goroutine each", "err", err)
			}
			return false
		}
	}
	slot := p.take(c)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: slot, Pad: p.slots[slot].gen}
	if err := p.ctl(c, &ev); err != nil {
		p.give(slot)
		return false
	}
	ps := &c.park
	ps.parked, ps.slot, ps.n = true, slot, n
	p.n++
	c.base = nil // made again for the next request
	if !c.idleForever {
		d := time.Until(c.idleUntil)
		if ps.timer == nil {
			if ps.expired == nil {
				ps.expired = func() { p.expire(c) }
			}
			ps.timer = time.AfterFunc(d, ps.expired)
		} else {
			ps.timer.Reset(d)
		}
	}
	return true
}

// ctl arms c's descriptor for one event.
func (p *parker) ctl(c *conn, ev *syscall.EpollEvent) error {
	ep := p.epfd
	var err error
	cerr := c.park.sock.Control(func(fd uintptr) {
		if c.park.armed {
			err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, int(fd), ev)
			if err == nil {
				return
			}
		}
		err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, int(fd), ev)
		if errors.Is(err, syscall.EEXIST) {
			err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, int(fd), ev)
		}
	})
	if err = cmp.Or(cerr, err); err != nil {
		return err
	}
	c.park.armed = true
	return nil
}

// open makes the epoll instance and starts the goroutine that reads it.
func (p *parker) open() error {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("epoll descriptor: %w", err)
	}
	f := os.NewFile(uintptr(fd), "http1-idle-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("epoll descriptor: %w", err)
	}
	p.ep, p.epfd, p.rc = f, fd, rc
	p.events = make([]syscall.EpollEvent, 128)
	p.done = make(chan struct{})
	go p.run()
	return nil
}

// run resumes connections as their events come, until the epoll instance is closed.
func (p *parker) run() {
	defer close(p.done)
	for {
		var (
			n    int
			werr error
		)
		err := p.rc.Read(func(fd uintptr) bool {
			for {
				n, werr = syscall.EpollWait(int(fd), p.events, 0)
				if werr != syscall.EINTR {
					// Nothing ready: wait for the poller to report the instance readable.
					return werr != nil || n > 0
				}
			}
		})
		if err != nil || werr != nil {
			return
		}
		p.mu.Lock()
		for _, ev := range p.events[:n] {
			if ev.Fd < 0 || int(ev.Fd) >= len(p.slots) {
				continue
			}
			s := p.slots[ev.Fd]
			if s.c == nil || s.gen != ev.Pad || !s.c.park.parked {
				continue
			}
			// The event disarmed the descriptor (one-shot): nothing more to undo in the set.
			p.release(s.c)
			p.ready = append(p.ready, s.c)
		}
		p.mu.Unlock()
		for i, c := range p.ready {
			go c.loop(c.park.n)
			p.ready[i] = nil
		}
		p.ready = p.ready[:0]
	}
}

// expire takes back a connection whose idle timeout has passed: its loop, resumed, finds the
// read deadline gone and closes it.
func (p *parker) expire(c *conn) {
	if p.unpark(c) {
		go c.loop(c.park.n)
	}
}

// unpark takes c back from the parker if it is parked, taking its descriptor out of the epoll set
// (before anyone closes it); the caller then resumes its loop. False if c was not parked.
func (p *parker) unpark(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.park.parked {
		return false
	}
	p.release(c)
	c.park.sock.Control(func(fd uintptr) {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	c.park.armed = false
	return true
}

// release forgets parked c; p.mu is held.
func (p *parker) release(c *conn) {
	ps := &c.park
	ps.parked = false
	if ps.timer != nil {
		ps.timer.Stop()
	}
	p.give(ps.slot)
	p.n--
}

// take gives c a slot; p.mu is held.
func (p *parker) take(c *conn) int32 {
	var i int32
	if k := len(p.free); k > 0 {
		i = p.free[k-1]
		p.free = p.free[:k-1]
	} else {
		i = int32(len(p.slots))
		p.slots = append(p.slots, parkSlot{})
	}
	p.slots[i].c = c
	p.slots[i].gen++
	return i
}

func (p *parker) give(i int32) {
	p.slots[i].c = nil
	p.free = append(p.free, i)
}

// parked reports how many connections are parked.
func (p *parker) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// close resumes every parked connection in its own goroutine, closes the epoll instance and waits
// for its reader; later parks are refused.
func (p *parker) close() {
	p.mu.Lock()
	p.closed = true
	var resume []*conn
	for _, s := range p.slots {
		if s.c != nil && s.c.park.parked {
			resume = append(resume, s.c)
		}
	}
	p.mu.Unlock()
	for _, c := range resume {
		if p.unpark(c) {
			go c.loop(c.park.n)
		}
	}
	p.mu.Lock()
	ep, done := p.ep, p.done
	p.ep = nil
	p.mu.Unlock()
	if ep != nil {
		ep.Close()
		<-done
	}
}

// lookUpSocket finds the socket under rw (under a TLS connection, its network connection's) once,
// and reports whether there is one.
func (ps *parkState) lookUpSocket(rw net.Conn) bool {
	if !ps.looked {
		ps.sock, ps.looked = socketOf(rw), true
	}
	return ps.sock != nil
}

func socketOf(c net.Conn) syscall.RawConn {
	for {
		switch x := c.(type) {
		case syscall.Conn:
			rc, err := x.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = x.NetConn()
		default:
			return nil
		}
	}
}
