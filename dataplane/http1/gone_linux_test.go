package http1

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// The request context (the connection) reports ClientGone false while the client keeps its
// connection, true once it closes it, and carries ConnContext's values.
func TestClientGone(t *testing.T) {
	type key struct{}
	seen := make(chan context.Context, 1)
	release := make(chan struct{})
	s := &Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, key{}, "conn") },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen <- r.Context()
			<-release
		}),
	}
	r := start(t, s)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	var ctx context.Context
	select {
	case ctx = <-seen:
	case <-time.After(ioTimeout):
		t.Fatal("the handler never ran")
	}
	if v, _ := ctx.Value(key{}).(string); v != "conn" {
		t.Errorf("the request context's value = %q; want ConnContext's", v)
	}
	w, ok := ctx.(interface{ ClientGone() bool })
	if !ok {
		t.Fatalf("the request context (%T) has no ClientGone", ctx)
	}
	if w.ClientGone() {
		t.Error("ClientGone while the client is connected")
	}
	c.Close()
	gone := false
	for deadline := time.Now().Add(ioTimeout); !gone && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		gone = w.ClientGone()
	}
	if !gone {
		t.Error("ClientGone still false after the client closed")
	}
}
