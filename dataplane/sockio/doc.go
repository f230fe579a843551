// Package sockio reads and writes TCP sockets with raw system calls, made through Go's poller.
//
// A net.Conn's Read and Write put the goroutine in the runtime's system-call state around read(2)
// and write(2): its P may be handed to another thread while the call runs, and the runtime's
// monitor thread (sysmon) is woken, and kept polling every 20 µs, to take Ps back from calls that
// last. A non-blocking socket's call never blocks: it copies bytes and returns. On a busy proxy
// pinned to one core that bookkeeping, and the monitor's wake-ups preempting the proxy's thread,
// cost a share of the CPU the copies cost (README, Performance). A Conn makes the same calls
// without it (syscall.RawSyscall) inside syscall.RawConn's Read and Write, so everything else stays
// as on the net.Conn: the poller waits while the socket is not ready, deadlines apply, Close
// interrupts a wait, and the descriptor's read and write locks are held, so a Conn and the
// *net.TCPConn it wraps may be used side by side.
//
// A Conn's read deadline is moved lazily: a deadline later than the socket's (or none) is noted,
// and set when the socket's earlier one ends a read (SetReadDeadline). A proxy moves each socket's
// read deadline later several times a request, and each move on a net.Conn is a lock and a move
// of the runtime's timer.
//
// The race detector does not see into raw system calls: bytes passed through a Conn give it no
// happens-before edge between the goroutines at its two ends, as a net.Conn's do.
//
// Wrap gives a *net.TCPConn as a Conn (a TLS connection over it is read and written the same
// way). Only Linux has them: elsewhere Wrap gives the connection as it is.
package sockio
