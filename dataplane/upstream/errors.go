package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// Sentinel errors returned (wrapped, with the backend address and the
// underlying cause) by Pool.Forward and Pool.Upgrade. Test for them with
// errors.Is.
//
// The sentinels tell the caller which status to answer when Forward or
// Upgrade returned status 0 (nothing was written to the ResponseWriter). When
// status is non-zero the response header has already been sent and the error
// only describes why the body was cut short, or (status 101) why the tunnel of
// an upgraded connection ended abnormally.
var (
	// ErrDial means no connection to the backend could be established
	// (refused, unreachable, dial timeout, TLS handshake failure, pool closed).
	// The caller answers 502.
	ErrDial = errors.New("upstream: dial failed")

	// ErrTimeout means the backend did not produce the response header within
	// the timeout given to Forward, or stopped reading the request body for
	// longer than that timeout. The caller answers 504.
	ErrTimeout = errors.New("upstream: backend timeout")

	// ErrBadResponse means the backend sent something that is not a valid
	// HTTP/1.x response, closed the connection before the response header was
	// complete, or (with status != 0) broke off in the middle of the body.
	// The caller answers 502 when nothing was written. Upgrade also returns
	// it, with status 0, for a 101 that switches to a protocol the client did
	// not offer, and, with status 101, when reading from or writing to the
	// backend failed inside the tunnel.
	ErrBadResponse = errors.New("upstream: bad response from backend")

	// ErrCanceled means ctx was done (typically: the client went away). The
	// error also wraps ctx's error, so errors.Is(err, context.Canceled) holds.
	// There is usually nobody left to answer; nginx logs such requests as 499.
	ErrCanceled = errors.New("upstream: canceled")

	// ErrRequestBody means reading the outbound request body (out.Body, normally
	// the incoming client request body) failed: the client aborted or sent a
	// truncated body. The backend connection is discarded. The caller answers
	// 400 if it still can. Upgrade returns it with status 101 when reading
	// from the client connection failed inside the tunnel.
	ErrRequestBody = errors.New("upstream: reading request body failed")

	// ErrInvalidRequest means the outbound request cannot be serialized safely:
	// an invalid method, request target, Host, header name or header value (for
	// example a CR or LF that would allow request splitting), or a Content-Length
	// that does not match the body. The caller answers 500 (its own bug) or 400.
	ErrInvalidRequest = errors.New("upstream: invalid outbound request")

	// ErrClientWrite means writing the response to the ResponseWriter failed:
	// the client went away mid-body. Status is non-zero in that case (101
	// when writing to the client connection of a tunnel failed).
	ErrClientWrite = errors.New("upstream: writing response to client failed")

	// ErrUpgradeNotSupported is returned by Upgrade, with status 0 and nothing
	// written, when the client connection cannot be taken over: the request
	// did not arrive over HTTP/1.1 (HTTP/2 and HTTP/3 have no Upgrade, and an
	// HTTP/1.0 server must ignore it), or the ResponseWriter does not support
	// hijacking. The backend has not been contacted, except in the unlikely
	// case that the ResponseWriter advertised Hijack but it failed after the
	// backend switched protocols. The caller may serve the request as an
	// ordinary one with Forward (which is what ignoring Upgrade means) or
	// answer an error status.
	ErrUpgradeNotSupported = errors.New("upstream: client connection cannot be upgraded")

	// ErrPoolClosed is wrapped together with ErrDial when Forward is called on a
	// Pool after Close.
	ErrPoolClosed = errors.New("upstream: pool closed")
)

// wrap builds the error returned to the caller: "upstream ADDR: SENTINEL: CAUSE".
// It is only used on failure paths, so its allocations do not matter.
func wrap(addr string, sentinel error, what string, cause error) error {
	switch {
	case cause == nil && what == "":
		return fmt.Errorf("upstream %s: %w", addr, sentinel)
	case cause == nil:
		return fmt.Errorf("upstream %s: %w: %s", addr, sentinel, what)
	case what == "":
		return fmt.Errorf("upstream %s: %w: %w", addr, sentinel, cause)
	default:
		return fmt.Errorf("upstream %s: %w: %s: %w", addr, sentinel, what, cause)
	}
}

// canceled builds an ErrCanceled error that also wraps the context's cause.
func canceled(addr string, ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil {
		cause = context.Canceled
	}
	return fmt.Errorf("upstream %s: %w: %w", addr, ErrCanceled, cause)
}

// isTimeout reports whether err is a deadline expiry on a connection.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
