package http1

import (
	"container/heap"
	"time"
)

// parkTimers holds the parked connections' deadlines (the socket leaving Go's poller, the idle
// timeout) in a min-heap served by one timer, as nginx keeps its timers in one tree: a runtime
// timer and its callback per connection cost some 150 bytes each, the heap 8 bytes a connection
// and an index in it. Every method is called with the parker's mutex held.
type parkTimers struct {
	p     *parker
	conns deadlineHeap
	epoch time.Time   // the clock's zero: due times are nanoseconds since (monotonic)
	timer *time.Timer // nil until the first deadline
	armed int64       // when timer fires; 0: stopped
}

// set makes at c's deadline, in the heap or moved in it.
func (t *parkTimers) set(c *conn, at time.Time) {
	if t.epoch.IsZero() {
		t.epoch = time.Now()
	}
	c.park.due = max(int64(at.Sub(t.epoch)), 1)
	if c.park.at >= 0 {
		heap.Fix(&t.conns, int(c.park.at))
	} else {
		heap.Push(&t.conns, c)
	}
	t.arm()
}

// remove takes c's deadline out of the heap, if there. The timer is left as it is: firing
// early, it finds nothing due and is set for the next deadline.
func (t *parkTimers) remove(c *conn) {
	if c.park.at >= 0 {
		heap.Remove(&t.conns, int(c.park.at))
	}
}

// arm sets the timer for the earliest deadline, if that is sooner than it is set for.
func (t *parkTimers) arm() {
	if len(t.conns) == 0 {
		return
	}
	due := t.conns[0].park.due
	if t.armed != 0 && t.armed <= due {
		return
	}
	t.armed = due
	d := time.Duration(due) - time.Since(t.epoch)
	if t.timer == nil {
		t.timer = time.AfterFunc(d, t.fire)
	} else {
		t.timer.Reset(d)
	}
}

// fire runs (in the timer's goroutine) the next step of every connection whose deadline has
// come, and sets the timer for the next one.
func (t *parkTimers) fire() {
	p := t.p
	p.mu.Lock()
	now := int64(time.Since(t.epoch))
	t.armed = 0
	var due []*conn
	for len(t.conns) > 0 && t.conns[0].park.due <= now {
		due = append(due, heap.Pop(&t.conns).(*conn))
	}
	t.arm()
	p.mu.Unlock()
	for _, c := range due {
		p.expire(c)
	}
}

// stop stops the timer (the parker is closing).
func (t *parkTimers) stop() {
	if t.timer != nil {
		t.timer.Stop()
		t.armed = 0
	}
}

// deadlineHeap orders connections by their park.due; each knows its index (park.at).
type deadlineHeap []*conn

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].park.due < h[j].park.due }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].park.at, h[j].park.at = int32(i), int32(j)
}

func (h *deadlineHeap) Push(x any) {
	c := x.(*conn)
	c.park.at = int32(len(*h))
	*h = append(*h, c)
}

func (h *deadlineHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.park.at = -1
	return c
}
