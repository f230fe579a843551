package agent_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
)

// echoServer echoes lines back, prefixed with its name.
func echoServer(t *testing.T, addr, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", name, sc.Text())
				}
			}()
		}
	}()
	return l.Addr().String()
}

// Layer-4 listeners through a real worker fed by the control plane: a Tcp listener and a Tls
// listener (terminated, certificate by SNI) in front of TCP echo servers, probed with Tcp probes.
func TestLayer4ThroughWorker(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	addr := echoServer(t, "127.0.0.91:0", "E")
	_, port, _ := net.SplitHostPort(addr)
	tcpPort, tlsPort := freePort(t), freePort(t)
	certPEM, cert := selfSignedPEM(t, "db.test")
	w := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	rev := cptest.Apply(t, cptest.Dial(t, cp.Addr), fmt.Sprintf(`
name: appgw1
sslCertificates: [{name: c, data: %q}]
listeners:
  - {name: plain, protocol: Tcp, port: %d}
  - {name: secure, protocol: Tls, port: %d, sslCertificate: c, hostNames: [db.test]}
backendAddressPools: [{name: pool1, backendAddresses: [{ipAddress: 127.0.0.91}]}]
backendSettingsCollection: [{name: echo, port: %s, protocol: Tcp, probe: tcp}]
probes: [{name: tcp, protocol: Tcp, interval: 1, timeout: 1}]
routingRules:
  - {name: r-plain, priority: 1, listener: plain, backendAddressPool: pool1, backendSettings: echo}
  - {name: r-secure, priority: 2, listener: secure, backendAddressPool: pool1, backendSettings: echo}
`, certPEM, tcpPort, tlsPort, port))
	cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "not applied")

	roundTrip := func(c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintln(c, "hello")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "E hello\n" {
			t.Fatalf("echo through the listener: %q %v", line, err)
		}
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.2", fmt.Sprint(tcpPort)))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(c)
	c.Close()

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	tc, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.2", fmt.Sprint(tlsPort)), &tls.Config{RootCAs: roots, ServerName: "db.test"})
	if err != nil {
		t.Fatalf("TLS listener: %v", err)
	}
	roundTrip(tc)
	tc.Close()

	addrE := "127.0.0.91:" + port
	cptest.Eventually(t, 15*time.Second, func() bool {
		return backendHealth(t, cp.Addr)[addrE].GetHealth() == "Healthy"
	}, "Tcp probe of the echo server not Healthy: %v", backendHealth(t, cp.Addr)[addrE])
}
