//go:build !linux

package http1

// parker parks idle connections on Linux only; elsewhere each keeps a goroutine.
type parker struct{}

type parkState struct{ n int }

func (*parker) park(*conn, int) bool { return false }
func (*parker) unpark(*conn) bool    { return false }
func (*parker) parked() int          { return 0 }
func (*parker) close()               {}
