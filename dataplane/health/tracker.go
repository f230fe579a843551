package health

import (
	"sync"
	"sync/atomic"
	"time"
)

// Health values a worker reports, as Azure spells them.
const (
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
	Unknown   = "Unknown" // probe pending
)

// MaxTransitions is how many transitions a server keeps.
const MaxTransitions = 50

// Outcome is one probe's result as the state machine needs it.
type Outcome struct {
	OK      bool
	Reason  string
	Message string
	At      time.Time
}

// Transition is one change of health.
type Transition struct {
	At       time.Time
	From, To string
	Reason   string
	Message  string
}

// Tracker is one server's health state machine: Unknown until the first result, Unhealthy after
// threshold consecutive failures, Healthy after one success. It does no I/O; Observe feeds it.
// Usable is safe to call from the request path at any time.
type Tracker struct {
	usable atomic.Bool // read per request

	mu          sync.Mutex
	threshold   int
	status      string
	failures    int
	reason      string
	message     string
	lastProbe   time.Time
	transitions []Transition
}

// NewTracker returns a tracker in the Unknown state. A server whose probe is pending takes traffic.
func NewTracker(threshold int) *Tracker {
	t := &Tracker{threshold: max(threshold, 1), status: Unknown}
	t.usable.Store(true)
	return t
}

// SetThreshold changes the failure threshold for the results to come.
func (t *Tracker) SetThreshold(n int) {
	t.mu.Lock()
	t.threshold = max(n, 1)
	t.mu.Unlock()
}

// Usable tells whether the server may get new requests: not Unhealthy.
func (t *Tracker) Usable() bool { return t.usable.Load() }

// Observe records a probe result and reports whether the health changed.
func (t *Tracker) Observe(o Outcome) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastProbe = o.At
	next := t.status
	if o.OK {
		t.failures = 0
		t.reason, t.message = "", o.Message
		next = Healthy
	} else {
		t.failures++
		t.reason, t.message = o.Reason, o.Message
		if t.failures >= t.threshold {
			next = Unhealthy
		}
	}
	if next == t.status {
		return false
	}
	tr := Transition{At: o.At, From: t.status, To: next}
	if !o.OK {
		tr.Reason, tr.Message = o.Reason, o.Message
	}
	if len(t.transitions) == MaxTransitions {
		copy(t.transitions, t.transitions[1:])
		t.transitions = t.transitions[:MaxTransitions-1]
	}
	t.transitions = append(t.transitions, tr)
	t.status = next
	t.usable.Store(next != Unhealthy)
	return true
}

// State is a copy of a tracker's state.
type State struct {
	Status      string
	Reason      string
	Message     string
	Failures    int
	LastProbe   time.Time
	Transitions []Transition
}

// State returns a copy of the current state.
func (t *Tracker) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return State{
		Status:      t.status,
		Reason:      t.reason,
		Message:     t.message,
		Failures:    t.failures,
		LastProbe:   t.lastProbe,
		Transitions: append([]Transition(nil), t.transitions...),
	}
}
