package config

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Defaults and ranges of the data-plane limits (Gateway.limits).
const (
	DefaultMaxRequestHeaderBytes                       = 64 << 10 // bytes
	MinMaxRequestHeaderBytes, MaxMaxRequestHeaderBytes = 1 << 10, 1 << 20

	DefaultReadHeaderTimeout                   = 10 // seconds
	MinReadHeaderTimeout, MaxReadHeaderTimeout = 1, 300

	DefaultClientIdleTimeout                   = 120 // seconds
	MinClientIdleTimeout, MaxClientIdleTimeout = 1, 3600

	DefaultMaxConnectionsPerListener = 0 // unlimited
	MaxMaxConnectionsPerListener     = 1_000_000

	DefaultMaxRequestBodyBytes = 0 // unlimited
	MaxMaxRequestBodyBytes     = 10 << 30
)

// Limits are a gateway's data-plane limits with every default filled in, in the units the data
// plane uses. Zero MaxConnections and MaxRequestBody mean unlimited.
type Limits struct {
	MaxRequestHeaderBytes int
	ReadHeaderTimeout     time.Duration
	ClientIdleTimeout     time.Duration
	MaxConnections        int
	MaxRequestBody        int64
}

// LimitsOf returns the limits a gateway asks for, defaults filled in for unset fields, whether or
// not the gateway was normalized.
func LimitsOf(gw *fgv1.Gateway) Limits {
	l := gw.GetLimits()
	v := func(p *int32, def int32) int32 {
		if p == nil {
			return def
		}
		return *p
	}
	if l == nil {
		l = &fgv1.Limits{}
	}
	body := int64(DefaultMaxRequestBodyBytes)
	if l.MaxRequestBodyBytes != nil {
		body = *l.MaxRequestBodyBytes
	}
	return Limits{
		MaxRequestHeaderBytes: int(v(l.MaxRequestHeaderBytes, DefaultMaxRequestHeaderBytes)),
		ReadHeaderTimeout:     time.Duration(v(l.ReadHeaderTimeoutSeconds, DefaultReadHeaderTimeout)) * time.Second,
		ClientIdleTimeout:     time.Duration(v(l.ClientIdleTimeoutSeconds, DefaultClientIdleTimeout)) * time.Second,
		MaxConnections:        int(v(l.MaxConnectionsPerListener, DefaultMaxConnectionsPerListener)),
		MaxRequestBody:        body,
	}
}

// normalizeLimits fills in the default of every unset limit.
func normalizeLimits(gw *fgv1.Gateway) {
	if gw.Limits == nil {
		gw.Limits = &fgv1.Limits{}
	}
	l := gw.Limits
	if l.MaxRequestHeaderBytes == nil {
		l.MaxRequestHeaderBytes = proto.Int32(DefaultMaxRequestHeaderBytes)
	}
	if l.ReadHeaderTimeoutSeconds == nil {
		l.ReadHeaderTimeoutSeconds = proto.Int32(DefaultReadHeaderTimeout)
	}
	if l.ClientIdleTimeoutSeconds == nil {
		l.ClientIdleTimeoutSeconds = proto.Int32(DefaultClientIdleTimeout)
	}
	if l.MaxConnectionsPerListener == nil {
		l.MaxConnectionsPerListener = proto.Int32(DefaultMaxConnectionsPerListener)
	}
	if l.MaxRequestBodyBytes == nil {
		l.MaxRequestBodyBytes = proto.Int64(DefaultMaxRequestBodyBytes)
	}
}

// limits checks the ranges of the limits that are set.
func (v *validator) limits(l *fgv1.Limits) {
	if l == nil {
		return
	}
	v.rangeOpt("limits.maxRequestHeaderBytes", l.MaxRequestHeaderBytes, MinMaxRequestHeaderBytes, MaxMaxRequestHeaderBytes)
	v.rangeOpt("limits.readHeaderTimeoutSeconds", l.ReadHeaderTimeoutSeconds, MinReadHeaderTimeout, MaxReadHeaderTimeout)
	v.rangeOpt("limits.clientIdleTimeoutSeconds", l.ClientIdleTimeoutSeconds, MinClientIdleTimeout, MaxClientIdleTimeout)
	v.rangeOpt("limits.maxConnectionsPerListener", l.MaxConnectionsPerListener, 0, MaxMaxConnectionsPerListener)
	if b := l.MaxRequestBodyBytes; b != nil && (*b < 0 || *b > MaxMaxRequestBodyBytes) {
		v.add("limits.maxRequestBodyBytes", fmt.Sprintf("%d is out of range 0-%d", *b, int64(MaxMaxRequestBodyBytes)))
	}
}
