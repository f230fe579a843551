package probe

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// tlsHello is what a layer-4 TLS test server saw of a probe.
type tlsHello struct {
	serverName string
	alpn       []string
	afterBytes int   // application bytes received after the handshake
	err        error // handshake error, if any
}

// startTLSRaw starts a TLS server on 127.0.0.1 that presents chain, completes the handshake and
// then reads until the client closes, reporting each connection on the returned channel.
func startTLSRaw(t *testing.T, chain ...*testCert) (host string, port int, hellos <-chan tlsHello) {
	t.Helper()
	cert := tls.Certificate{PrivateKey: chain[0].key, Leaf: chain[0].cert}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.cert.Raw)
	}
	ch := make(chan tlsHello, 16)
	host, port = rawServer(t, func(c net.Conn) {
		var h tlsHello
		cfg := &tls.Config{
			Certificates: []tls.Certificate{cert},
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				h.serverName, h.alpn = hello.ServerName, hello.SupportedProtos
				return nil, nil
			},
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, cfg)
		if h.err = tc.Handshake(); h.err == nil {
			n, _ := io.Copy(io.Discard, tc)
			h.afterBytes = int(n)
		}
		ch <- h
	})
	return host, port, ch
}

func TestRunTcp(t *testing.T) {
	var mu sync.Mutex
	got := 0
	h, port := rawServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		mu.Lock()
		got += int(n)
		mu.Unlock()
	})
	t.Run("healthy", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Tcp", Host: h, Port: port, Timeout: 2 * time.Second})
		wantHealthy(t, r)
		if got := stageNames(r); got != "tcp" {
			t.Errorf("stages = %s, want tcp", got)
		}
		if want := "127.0.0.1:" + strconv.Itoa(port); r.Addr != want {
			t.Errorf("Addr = %q, want %q", r.Addr, want)
		}
		if r.Status != 0 {
			t.Errorf("Status = %d", r.Status)
		}
	})
	t.Run("any case", func(t *testing.T) {
		wantHealthy(t, Run(context.Background(), Spec{Protocol: "TCP", Host: h, Port: port, Timeout: 2 * time.Second}))
	})
	t.Run("connect error", func(t *testing.T) {
		closed := closedPort(t)
		r := Run(context.Background(), Spec{Protocol: "Tcp", Host: "127.0.0.1", Port: closed, Timeout: 2 * time.Second})
		wantUnhealthy(t, r, ReasonTCPConnect, "127.0.0.1", "port "+strconv.Itoa(closed), "refused")
		if got := stageNames(r); got != "tcp" {
			t.Errorf("stages = %s", got)
		}
	})
	t.Run("no port", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Tcp", Host: "127.0.0.1", Timeout: 2 * time.Second})
		wantUnhealthy(t, r, ReasonTCPConnect, "invalid port")
	})
	t.Run("dns", func(t *testing.T) {
		dns := startDNS(t, map[string]net.IP{"backend.fleetgate.test.": net.IPv4(127, 0, 0, 1)}, false)
		res := testResolver(dns)
		r := Run(context.Background(), Spec{Protocol: "Tcp", Host: "backend.fleetgate.test", Port: port, Timeout: 5 * time.Second, Resolver: res})
		wantHealthy(t, r)
		if got := stageNames(r); got != "dns,tcp" {
			t.Errorf("stages = %s, want dns,tcp", got)
		}
		r = Run(context.Background(), Spec{Protocol: "Tcp", Host: "missing.fleetgate.test", Port: port, Timeout: 5 * time.Second, Resolver: res})
		wantUnhealthy(t, r, ReasonDNS, `"missing.fleetgate.test"`, "no such host")
		if r.Addr != "" || stageNames(r) != "dns" {
			t.Errorf("Addr %q, stages %s", r.Addr, stageNames(r))
		}
	})
	t.Run("dns timeout", func(t *testing.T) {
		dns := startDNS(t, nil, true)
		start := time.Now()
		r := Run(context.Background(), Spec{Protocol: "Tcp", Host: "backend.fleetgate.test", Port: port, Timeout: 300 * time.Millisecond, Resolver: testResolver(dns)})
		wantUnhealthy(t, r, ReasonTimeout, "resolving")
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Run took %s with a 300ms timeout", d)
		}
	})
	// The probe sends nothing: the server read no bytes from any of the connections above.
	mu.Lock()
	defer mu.Unlock()
	if got != 0 {
		t.Errorf("the Tcp probes sent %d bytes", got)
	}
}

func TestRunTls(t *testing.T) {
	p := getPKI(t)
	roots := pool(p.root)
	tests := []struct {
		name   string
		chain  []*testCert
		spec   func(*Spec)
		reason string // "" healthy
		facts  []string
	}{
		{name: "healthy, custom root", chain: []*testCert{p.leaf, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true }},
		{name: "healthy, ServerName over HostHeader", chain: []*testCert{p.leaf, p.inter},
			spec: func(s *Spec) {
				s.RootCAs, s.CustomRoots, s.HostHeader, s.ServerName = roots, true, "ignored.test", "backend.test"
			}},
		{name: "healthy, IP SAN", chain: []*testCert{p.ipLeaf, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots, s.ServerName = roots, true, "" }},
		{name: "healthy, checks off", chain: []*testCert{p.selfSigned},
			spec: func(s *Spec) { s.ServerName, s.SkipChainCheck, s.SkipNameCheck = "other.test", true, true }},
		{name: "invalid CA", chain: []*testCert{p.selfSigned},
			reason: ReasonInvalidCA, facts: []string{"self-signed", "well-known"}},
		{name: "trusted root mismatch", chain: []*testCert{p.otherLeaf},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonTrustedRootMismatch, facts: []string{`issuer CN="Unconfigured Root"`, "configured trusted root"}},
		{name: "invalid common name", chain: []*testCert{p.wrongName, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidCommonName, facts: []string{`CN="other.test"`, `"backend.test"`}},
		{name: "invalid date", chain: []*testCert{p.expired, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidDate, facts: []string{"has expired"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, port, hellos := startTLSRaw(t, tt.chain...)
			s := Spec{Protocol: "Tls", Host: h, Port: port, ServerName: "backend.test", Timeout: 5 * time.Second}
			if tt.spec != nil {
				tt.spec(&s)
			}
			r := Run(context.Background(), s)
			if tt.reason == "" {
				wantHealthy(t, r)
			} else {
				wantUnhealthy(t, r, tt.reason, tt.facts...)
			}
			if got := stageNames(r); got != "tcp,tls" {
				t.Errorf("stages = %s, want tcp,tls", got)
			}
			if _, ok := findStage(r, StageTLS); !ok {
				t.Fatal("no tls stage")
			}
			select {
			case hello := <-hellos:
				wantName := s.ServerName
				if net.ParseIP(wantName) != nil || wantName == "" {
					wantName = "" // no SNI for an IP address
				}
				if hello.serverName != wantName {
					t.Errorf("SNI %q, want %q", hello.serverName, wantName)
				}
				if len(hello.alpn) != 0 {
					t.Errorf("ALPN %v offered; a Tls probe offers none", hello.alpn)
				}
				if hello.afterBytes != 0 {
					t.Errorf("the probe sent %d bytes after the handshake", hello.afterBytes)
				}
				if (hello.err == nil) != (tt.reason == "") {
					t.Errorf("server handshake error %v", hello.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the server saw no connection")
			}
		})
	}
}

// TestRunTlsTimeout: a server that accepts the connection but never answers the handshake.
func TestRunTlsTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h, port := rawServer(t, func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // reads the ClientHello, answers nothing
	})
	start := time.Now()
	r := Run(context.Background(), Spec{Protocol: "Tls", Host: h, Port: port, ServerName: "backend.test", Timeout: timeout})
	wantUnhealthy(t, r, ReasonTimeout, "in the TLS handshake", "300ms")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %s with a %s timeout", d, timeout)
	}
	if got := stageNames(r); got != "tcp,tls" {
		t.Errorf("stages = %s, want tcp,tls", got)
	}
}

// TestRunTlsPlainServer: a backend that does not speak TLS.
func TestRunTlsPlainServer(t *testing.T) {
	h, port := rawServer(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		c.Read(buf)
		io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
	})
	r := Run(context.Background(), Spec{Protocol: "Tls", Host: h, Port: port, ServerName: "backend.test", Timeout: 2 * time.Second})
	wantUnhealthy(t, r, ReasonVerificationFailed, "TLS handshake with")
}
