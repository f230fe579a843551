package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// exchange is what the request path did with one request, for metrics and the access log.
type exchange struct {
	listener, rule, pool, server string
	status                       int // 0: no response was sent
	upstream                     time.Duration
}

// countingWriter counts the body bytes sent to the client.
type countingWriter struct {
	http.ResponseWriter
	bytes int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer (flush, hijack, deadlines).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// logAccess writes one access log line with the fields of Azure Application Gateway's access log.
func (p *Proxy) logAccess(ctx context.Context, ex *exchange, method, uri, host, client string, bytes int64, took time.Duration) {
	ip, _, err := net.SplitHostPort(client)
	if err != nil {
		ip = client
	}
	serverStatus := ""
	if ex.server != "" && ex.status != 0 {
		serverStatus = http.StatusText(ex.status)
	}
	p.accessLog.LogAttrs(ctx, slog.LevelInfo, "access",
		slog.String("clientIP", ip),
		slog.String("host", host),
		slog.String("httpMethod", method),
		slog.String("requestUri", uri),
		slog.Int("httpStatus", ex.status),
		slog.Int64("sentBytes", bytes),
		slog.Float64("timeTaken", took.Seconds()),
		slog.String("serverRouted", ex.server),
		slog.String("serverStatus", serverStatus),
		slog.Float64("serverResponseLatency", ex.upstream.Seconds()),
		slog.String("listenerName", ex.listener),
		slog.String("ruleName", ex.rule),
		slog.String("backendPoolName", ex.pool),
	)
}
