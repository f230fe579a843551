//go:build !unix

package upstream

// canProbe reports whether idle connections can be checked with probeFd.
const canProbe = false

// probeFd is not available on this platform; idle connections are assumed to
// be alive and the stale-connection retry in Forward is the safety net.
func (c *conn) probeFd(fd uintptr) bool {
	c.dead = false
	return true
}
