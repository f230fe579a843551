package http1

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// parker holds idle connections without a goroutine each, as nginx and HAProxy hold theirs: a
// parked connection's descriptor waits in an epoll instance of the server's, armed for one event,
// and one goroutine reading that instance resumes the connection's request loop (in a new
// goroutine) when the client sends its next request or closes. Its idle timeout waits in a heap
// of deadlines that one timer serves (parkTimers); Shutdown and Close take parked connections back
// as they find them.
//
// A goroutine waiting in Go's poller keeps its stack (2 KiB at the least, 8 KiB and more once it
// has served a request through the proxy); a parked connection keeps only its heap objects. The
// epoll descriptor is itself waited on through Go's poller, so no thread blocks on it.
//
// Where the socket is held by a SocketHolder, the socket leaves Go's poller too while parked: a
// duplicate of its descriptor waits in the epoll set, and its net.Conn (Go's poll descriptor, the
// net package's file and addresses, together most of what an idle connection still costs) is
// closed; the connection gets a new one (net.FileConn) when it wakes.
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
	ready  []*conn    // woken: resumed in a goroutine each
	ended  []*conn    // closed by their clients while detached: closed by the parker's goroutine
	timers parkTimers // the parked connections' next steps, on one timer
}

type parkSlot struct {
	c   *conn
	gen int32
}

// parkState is a connection's part in its server's parker, guarded by the parker's mutex.
type parkState struct {
	sock     syscall.RawConn // the socket, under TLS too, when no holder holds it; nil if there is none
	holder   SocketHolder    // the socket's holder: the socket leaves Go's poller while parked
	looked   bool            // sock and holder have been looked up
	parked   bool
	armed    bool // sock's descriptor is in the epoll set (armed or fired)
	detached bool // the holder's socket is closed; fd, a duplicate of its descriptor, is in the epoll set
	fd       int
	slot     int32
	n        int   // the request index the loop goes on with
	due      int64 // when its next step is due (parkTimers' clock)
	at       int32 // its index in parkTimers' heap; -1: not there
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
	ps := &c.park
	if p.closed || c.s.shutting.Load() || !ps.lookUp(c.rw) {
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
	ev := p.event(slot)
	arm := p.ctl
	if ps.holder != nil && (c.s.detach < 0 || p.n >= cmp.Or(c.s.crowd, detachCrowd)) {
		arm = p.detach
	}
	if err := arm(c, &ev); err != nil {
		p.give(slot)
		return false
	}
	ps.parked, ps.slot, ps.n = true, slot, n
	p.n++
	c.base = nil // made again for the next request
	p.schedule(c)
	return true
}

// event is the one-shot event of slot's connection.
func (p *parker) event(slot int32) syscall.EpollEvent {
	return syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: slot, Pad: p.slots[slot].gen}
}

// detachAfter is how long a connection is parked before its socket leaves Go's poller (where
// a SocketHolder holds it): leaving and coming back cost some 20 us of system calls, which a
// connection idle for seconds repays in memory and one that sends a request every few hundred
// milliseconds would pay again and again.
const detachAfter = time.Second

// detachCrowd is the number of parked connections from which a connection's socket leaves Go's
// poller as soon as it parks: Go never frees a poll descriptor (~0.3 KiB with its two timers)
// but reuses it, so the most sockets ever in the poller at once set what they cost for good. A
// burst of new connections that go idle would otherwise all be there for their first second.
const detachCrowd = 1024

// schedule sets parked c's deadline for its next step: its socket leaving Go's poller, or its idle
// timeout; p.mu is held.
func (p *parker) schedule(c *conn) {
	ps := &c.park
	var at time.Time
	switch {
	case ps.holder != nil && !ps.detached:
		at = time.Now().Add(cmp.Or(max(c.s.detach, 0), detachAfter))
		if !c.idleForever && c.idleUntil.Before(at) {
			at = c.idleUntil
		}
	case !c.idleForever:
		at = c.idleUntil
	default:
		p.timers.remove(c)
		return
	}
	p.timers.set(c, at)
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

// detach takes the holder's socket out of Go's poller: a duplicate of its descriptor is armed
// for one event in the epoll set, and the socket's net.Conn is closed (the duplicate keeps the
// connection open).
func (p *parker) detach(c *conn, ev *syscall.EpollEvent) error {
	ps := &c.park
	sc, ok := ps.holder.Socket().(syscall.Conn)
	if !ok {
		return errors.ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd, derr := -1, error(nil)
	err = rc.Control(func(s uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			derr = e
			return
		}
		fd = int(r)
	})
	if err = cmp.Or(err, derr); err != nil {
		return err
	}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, ev); err != nil {
		syscall.Close(fd)
		return err
	}
	// Nothing of Go's socket stays: not its file, not its addresses' allocations, and no read
	// waiter bound to it (made again when the socket comes back).
	nc := ps.holder.Socket()
	nc.Close()
	ps.holder.SetSocket(closedSocketOf(nc))
	c.waiter = nil
	ps.detached, ps.fd, ps.sock = true, fd, nil
	return nil
}

// attach ends a detached connection's stay in the epoll set; p.mu is held. If the connection
// goes on, its socket comes back to Go's poller as a new net.Conn in its holder; if not (its idle
// timeout passed), the socket is closed, and the holder keeps the stand-in it got at detach.
func (p *parker) attach(c *conn, goOn bool) {
	ps := &c.park
	// Out of the set first: the registration lives as long as the socket, not the descriptor.
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, ps.fd, nil)
	if goOn {
		f := os.NewFile(uintptr(ps.fd), "")
		if s, err := net.FileConn(f); err == nil {
			ps.holder.SetSocket(s)
			c.waiter = newReadWaiter(c.rw)
		} else if c.s.Log != nil {
			// The stand-in stays: the next read finds the connection closed.
			c.s.Log.Warn("closing a parked connection that could not be resumed", "err", err)
		}
		f.Close()
	} else {
		syscall.Close(ps.fd)
	}
	ps.detached, ps.fd, ps.sock = false, -1, nil
}

// closedSocketOf gives the stand-in for nc once closed, with its addresses.
func closedSocketOf(nc net.Conn) closedSocket {
	return closedSocket{local: addrPortOf(nc.LocalAddr()), remote: addrPortOf(nc.RemoteAddr())}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// hungUp reports whether the socket fd has nothing more to read: its peer closed (or reset) it
// and no byte of a request waits.
func hungUp(fd int) bool {
	var b [1]byte
	for {
		n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			return true
		}
		return n == 0
	}
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
	p.timers.p = p
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
			// The event disarmed the descriptor (one-shot): nothing more to undo in the set
			// (unless detached: attach takes it out). A detached connection its client has
			// closed is closed without going back to Go's poller.
			goOn := true
			if s.c.park.detached && ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				goOn = !hungUp(s.c.park.fd)
			}
			p.release(s.c, goOn)
			if goOn {
				p.ready = append(p.ready, s.c)
			} else {
				p.ended = append(p.ended, s.c)
			}
		}
		p.mu.Unlock()
		for i, c := range p.ready {
			go c.loop(c.park.n)
			p.ready[i] = nil
		}
		p.ready = p.ready[:0]
		// Closed here: a goroutine each only to close them would cost a stack each when many
		// clients leave at once.
		for i, c := range p.ended {
			c.end()
			p.ended[i] = nil
		}
		p.ended = p.ended[:0]
	}
}

// expire is parked c's next step, due: its socket leaves Go's poller once it has been parked for
// detachAfter; its idle timeout having passed, the parker takes it back and closes it.
func (p *parker) expire(c *conn) {
	p.mu.Lock()
	ps := &c.park
	if !ps.parked || ps.at >= 0 {
		// Woken meanwhile, or parked again with a new deadline.
		p.mu.Unlock()
		return
	}
	if ps.holder != nil && !ps.detached && (c.idleForever || time.Now().Before(c.idleUntil)) {
		// Out of the set as the live socket, back in as a duplicate of its descriptor.
		ps.sock.Control(func(fd uintptr) {
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
		ps.armed = false
		ev := p.event(ps.slot)
		err := p.detach(c, &ev)
		if err != nil {
			err = p.ctl(c, &ev)
		}
		if err == nil {
			p.schedule(c)
			p.mu.Unlock()
			return
		}
		// Neither: the connection cannot wait here any more.
		p.release(c, true)
		p.mu.Unlock()
		go c.loop(ps.n)
		return
	}
	p.mu.Unlock()
	// The idle timeout has passed. A detached connection is closed here (in the timer's goroutine):
	// nothing of it is in Go's hands that could block. A live one is closed by its loop, as a TLS
	// connection's close writes an alert.
	if taken, detached := p.takeBack(c, false); taken && detached {
		c.end()
	} else if taken {
		go c.loop(c.park.n)
	}
}

// unpark takes c back from the parker if it is parked, taking its descriptor out of the epoll set
// (before anyone closes it); the caller then resumes its loop. False if c was not parked.
func (p *parker) unpark(c *conn) bool {
	taken, _ := p.takeBack(c, true)
	return taken
}

// takeBack is unpark; goOn false says the connection is to close (its socket is not worth
// giving back to Go's poller). detached reports that the connection had left Go's poller.
func (p *parker) takeBack(c *conn, goOn bool) (taken, detached bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.park.parked {
		return false, false
	}
	detached = c.park.detached
	p.release(c, goOn)
	if !detached {
		c.park.sock.Control(func(fd uintptr) {
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
		c.park.armed = false
	}
	return true, detached
}

// release forgets parked c (giving a detached connection its socket back, if it goes on); p.mu
// is held.
func (p *parker) release(c *conn, goOn bool) {
	ps := &c.park
	ps.parked = false
	p.timers.remove(c)
	if ps.detached {
		p.attach(c, goOn)
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
	c.park.at = -1
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
	p.timers.stop()
	p.mu.Unlock()
	if ep != nil {
		ep.Close()
		<-done
	}
}

// lookUp finds the socket under rw (under a TLS connection, its network connection's), or its
// holder, once, and reports whether there is either.
func (ps *parkState) lookUp(rw net.Conn) bool {
	if !ps.looked {
		ps.looked = true
		if ps.holder = holderOf(rw); ps.holder == nil {
			ps.sock = socketOf(rw)
		}
	}
	if ps.holder != nil && ps.sock == nil {
		// The holder's socket now; a new one after it comes back (attach).
		ps.sock = socketOf(ps.holder.Socket())
	}
	return ps.sock != nil
}

// holderOf finds the SocketHolder under c, if any, whose socket has a descriptor.
func holderOf(c net.Conn) SocketHolder {
	for {
		if h, ok := c.(SocketHolder); ok {
			if _, ok := h.Socket().(syscall.Conn); ok {
				return h
			}
			return nil
		}
		nc, ok := c.(interface{ NetConn() net.Conn }) // *tls.Conn
		if !ok {
			return nil
		}
		c = nc.NetConn()
	}
}

func socketOf(c net.Conn) syscall.RawConn {
	for {
		switch x := c.(type) {
		case syscall.Conn:
			return rawConnOf(c)
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = x.NetConn()
		default:
			return nil
		}
	}
}

// closedSocket is what a SocketHolder holds while its socket is out of Go's hands: the parker
// holds a duplicate of its descriptor, or closed it. The addresses are the socket's, for whoever
// asks after, kept as values: 48 bytes rather than Go's addresses and the sockaddrs they point
// into.
type closedSocket struct{ local, remote netip.AddrPort }

func (closedSocket) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (closedSocket) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (closedSocket) Close() error                     { return nil }
func (s closedSocket) LocalAddr() net.Addr            { return net.TCPAddrFromAddrPort(s.local) }
func (s closedSocket) RemoteAddr() net.Addr           { return net.TCPAddrFromAddrPort(s.remote) }
func (closedSocket) SetDeadline(time.Time) error      { return net.ErrClosed }
func (closedSocket) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (closedSocket) SetWriteDeadline(time.Time) error { return net.ErrClosed }
