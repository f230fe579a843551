// Package probe runs one health probe against one backend server and
// classifies the outcome the way Azure Application Gateway's backend health
// does: healthy, or unhealthy with one reason code (ReasonTimeout,
// ReasonDNS, ...), a message with the facts and a one-line remediation hint.
//
// It is the I/O half of health checking: the threshold state machine
// (dataplane/health) calls Run once per interval and server. A probe is one
// GET over a fresh HTTP/1.1 connection (TLS for Https), with
// "Connection: close": no pooling, which is also what a backend sees from
// Azure. The whole probe (DNS, connect, TLS, response header and body) is
// bounded by Spec.Timeout.
//
// The layer-4 protocols stop early: a Tcp probe is healthy once the TCP
// connection is established (it is closed at once), a Tls probe once the TLS
// handshake completed and the certificate passed the same checks as an
// Https probe's; neither sends anything at the application level.
//
// Classification follows the pipeline; the first stage that fails decides:
//
//  1. timeout: the probe deadline passed in any stage -> backend-server-timeout
//  2. dns: the FQDN cannot be resolved -> dns-resolution-error
//  3. tcp: no connection -> tcp-connect-error
//  4. tls (Https, Tls): certificate checks in the order date -> chain (CA or
//     trusted root) -> name, see verifier; other handshake failures ->
//     certificate-verification-failed
//  5. http: status not in Match.Status -> http-status-code-mismatch
//  6. body: Match.Body not in the first 64 KiB -> http-response-body-mismatch
//
// A backend that closes or resets the connection before a complete response
// is tcp-connect-error (it cannot be talked to on that port); bytes that are
// not an HTTP response are http-status-code-mismatch with "Received:none".
// A cancellation of the caller's context is reported as
// backend-server-timeout, with a message saying it was canceled.
package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stage names, in pipeline order.
const (
	StageDNS  = "dns"
	StageTCP  = "tcp"
	StageTLS  = "tls"
	StageHTTP = "http"
	StageBody = "body"
)

const (
	// MaxBodyBytes is how much of the body is read and searched for Match.Body.
	MaxBodyBytes = 64 << 10
	// DefaultTimeout applies when Spec.Timeout is not positive (Azure's default).
	DefaultTimeout = 30 * time.Second
	// UserAgent is sent with every probe.
	UserAgent = "Fleetgate-Probe/1"
)

// Spec is one probe of one server. Build it once per server and
// configuration; Run does not modify it.
type Spec struct {
	Protocol   string        // "Http", "Https", "Tcp" or "Tls" (any case; anything else is Http)
	Host       string        // server host: an IP address or an FQDN (resolved by Run; see Resolver)
	Port       int           // 0: 80 for Http, 443 for Https and Tls; Tcp needs one
	HostHeader string        // Host header sent; default Host (with :Port unless the protocol's default)
	Path       string        // request path, e.g. "/health"; default "/"
	Timeout    time.Duration // whole probe: DNS+connect+TLS+response, never exceeded; <= 0: DefaultTimeout
	Match      Match
	// TLS (Https and Tls)
	RootCAs     *x509.CertPool // nil: system roots
	CustomRoots bool           // RootCAs holds configured trustedRootCertificates only (affects classification)
	ServerName  string         // SNI and name to verify; default HostHeader (without a port), then Host
	Resolver    Resolver       // nil: net.DefaultResolver
	// SkipChainCheck and SkipNameCheck turn off the certificate date-and-chain check and the name
	// check (Azure's validateCertChainAndExpiration and validateSNI set to false).
	SkipChainCheck, SkipNameCheck bool
	// LocalIP, if valid, is the source address of the probe's connection: the worker's own address,
	// so that backends see probes come from where its traffic comes from.
	LocalIP netip.Addr
}

// Resolver resolves an FQDN server's host. *net.Resolver implements it; a
// caching resolver may be plugged in. An implementation that ignores ctx
// does not delay Run past its timeout.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Stage is one step of a probe, for an on-demand printout.
type Stage struct {
	Name     string        // StageDNS, StageTCP, StageTLS, StageHTTP or StageBody
	Duration time.Duration // time spent in the stage
	Detail   string        // dns: addresses; tcp: ip:port; tls: version, cipher, name, each cert's subject CN, SANs, issuer, validity; http: status; body: bytes read, match offset
	Err      string        // why the stage failed; "" if it passed
}

// Result is the outcome of one probe.
type Result struct {
	Healthy  bool
	Reason   string  // one of the Reason codes, "" when healthy
	Message  string  // the facts, e.g. "Expected:200-399 Received:404"
	Hint     string  // one-line remediation hint for the reason
	Status   int     // HTTP status, 0 if none
	Addr     string  // "ip:port" actually dialled
	Stages   []Stage // each stage run, in order, with its time
	Duration time.Duration
	At       time.Time // when the probe started
}

var (
	bodyPool   = sync.Pool{New: func() any { b := make([]byte, MaxBodyBytes); return &b }}
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	reqPool    = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}
)

// aLongTimeAgo is a deadline in the past: it interrupts blocked I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// Run probes s once and classifies the outcome. It returns within s.Timeout
// (or the earlier deadline of ctx), whatever the backend does.
func Run(ctx context.Context, s Spec) Result {
	start := time.Now()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := pctx.Deadline()
	p := prober{
		s:        s,
		ctx:      pctx,
		parent:   ctx,
		deadline: deadline,
		start:    start,
		last:     start,
		r:        Result{At: start, Stages: make([]Stage, 0, 5)},
	}
	p.run()
	p.r.Duration = time.Since(start)
	if p.r.Reason == "" {
		p.r.Healthy = true
	} else {
		p.r.Hint = Hint(p.r.Reason)
	}
	return p.r
}

type prober struct {
	s        Spec
	ctx      context.Context // with the probe deadline
	parent   context.Context // the caller's
	deadline time.Time
	start    time.Time
	last     time.Time // end of the previous stage
	target   string    // what the timeout message names: host, then ip:port
	r        Result
}

func (p *prober) run() {
	s := &p.s
	// layer4: Tcp and Tls probes end after the connection (and handshake) is made.
	var isTLS, layer4 bool
	port, defPort := s.Port, 80
	switch {
	case strings.EqualFold(s.Protocol, "https"):
		isTLS, defPort = true, 443
	case strings.EqualFold(s.Protocol, "tls"):
		isTLS, layer4, defPort = true, true, 443
	case strings.EqualFold(s.Protocol, "tcp"):
		layer4, defPort = true, 0 // no default port for plain TCP
	}
	host := s.Host
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	if port == 0 {
		port = defPort
	}
	p.target = host

	// DNS.
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if host == "" {
			p.stage(StageDNS, "", "no host")
			p.fail(ReasonDNS, "the backend server has no host name or IP address")
			return
		}
		addrs, err := lookup(p.ctx, s.Resolver, host)
		if err == nil && len(addrs) == 0 {
			err = errors.New("the resolver returned no addresses")
		}
		if err == nil {
			if ip, err = netip.ParseAddr(addrs[0]); err != nil {
				err = errors.New("the resolver returned " + strconv.Quote(addrs[0]) + ", not an IP address")
			}
		}
		if err != nil {
			p.stage(StageDNS, "", err.Error())
			if p.ctx.Err() != nil || !time.Now().Before(p.deadline) {
				p.failTimeout("resolving " + strconv.Quote(host))
				return
			}
			p.fail(ReasonDNS, "FQDN "+strconv.Quote(host)+" could not be resolved: "+err.Error())
			return
		}
		ip = ip.Unmap()
		p.stage(StageDNS, strings.Join(addrs, ","), "")
	}

	// TCP.
	if port < 1 || port > 65535 {
		p.r.Addr = net.JoinHostPort(ip.String(), strconv.Itoa(port))
		p.stage(StageTCP, "", "invalid port")
		p.fail(ReasonTCPConnect, "cannot connect to backend "+ip.String()+" on port "+strconv.Itoa(port)+": invalid port")
		return
	}
	ap := netip.AddrPortFrom(ip, uint16(port))
	addr := ap.String()
	p.r.Addr, p.target = addr, addr
	var d net.Dialer
	// DialContext, not DialTCP with a zero local address: that would bind()
	// before connect() and lose the kernel's per-destination port reuse.
	// A source address is bound only when asked for.
	if p.s.LocalIP.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.s.LocalIP, 0))
	}
	conn, err := d.DialContext(p.ctx, "tcp", addr)
	if err != nil {
		p.stage(StageTCP, "", err.Error())
		if p.timedOut(err) {
			p.failTimeout("connecting")
			return
		}
		cause := err
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			cause = oe.Err
		}
		p.fail(ReasonTCPConnect, "cannot connect to backend "+ip.String()+" on port "+strconv.Itoa(port)+": "+cause.Error())
		return
	}
	defer conn.Close()
	// The deadline bounds every read and write; cancellation of the caller's
	// context moves it to the past (no goroutine, no timer per probe).
	conn.SetDeadline(p.deadline)
	if p.parent.Done() != nil {
		stop := context.AfterFunc(p.parent, func() { conn.SetDeadline(aLongTimeAgo) })
		defer stop()
	}
	p.stage(StageTCP, addr, "")
	if layer4 && !isTLS {
		return // Tcp: connected is healthy
	}

	// TLS.
	var rw net.Conn = conn
	hostHeader := s.HostHeader
	if hostHeader == "" {
		switch {
		case port != defPort:
			hostHeader = net.JoinHostPort(host, strconv.Itoa(port))
		case strings.IndexByte(host, ':') >= 0:
			hostHeader = "[" + host + "]"
		default:
			hostHeader = host
		}
	}
	if isTLS {
		name := s.ServerName
		if name == "" {
			name = stripPort(s.HostHeader)
		}
		if name == "" {
			name = host
		}
		v := verifier{roots: s.RootCAs, custom: s.CustomRoots, name: name, skipChain: s.SkipChainCheck, skipName: s.SkipNameCheck}
		cfg := &tls.Config{
			ServerName:         name, // not sent as SNI when it is an IP address
			InsecureSkipVerify: true, // verifyConnection verifies, to classify exactly
			VerifyConnection:   v.verifyConnection,
			NextProtos:         http11,
		}
		if layer4 {
			cfg.NextProtos = nil // Tls: whatever the backend speaks over TLS; no ALPN
		}
		tc := tls.Client(conn, cfg)
		err := tc.Handshake()
		switch {
		case v.reason != "":
			p.stage(StageTLS, v.detail, v.message)
			p.fail(v.reason, v.message)
			return
		case err != nil:
			p.stage(StageTLS, v.detail, err.Error())
			if p.timedOut(err) {
				p.failTimeout("in the TLS handshake")
				return
			}
			p.fail(ReasonVerificationFailed, "TLS handshake with "+addr+" failed: "+err.Error())
			return
		}
		p.stage(StageTLS, v.detail, "")
		if layer4 {
			return // Tls: handshake and certificate passed
		}
		rw = tc
	}

	// HTTP: request, status.
	bp := reqPool.Get().(*[]byte)
	req := appendRequest((*bp)[:0], s.Path, hostHeader)
	_, err = rw.Write(req)
	*bp = req[:0]
	reqPool.Put(bp)
	if err != nil {
		p.stage(StageHTTP, "", err.Error())
		if p.timedOut(err) {
			p.failTimeout("sending the request")
			return
		}
		p.fail(ReasonTCPConnect, "connection to backend "+addr+" broken while sending the request: "+err.Error())
		return
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(rw)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	resp, err := readResponse(br)
	if err != nil {
		p.stage(StageHTTP, "", err.Error())
		switch {
		case p.timedOut(err):
			p.failTimeout("waiting for the response header")
		case connectionLost(err):
			p.fail(ReasonTCPConnect, "backend "+addr+" closed the connection before sending a complete response header: "+err.Error())
		default:
			p.fail(ReasonStatusMismatch, "Expected:"+s.Match.String()+" Received:none (not an HTTP response: "+err.Error()+")")
		}
		return
	}
	p.r.Status = resp.StatusCode
	if !s.Match.StatusOK(resp.StatusCode) {
		msg := "Expected:" + s.Match.String() + " Received:" + strconv.Itoa(resp.StatusCode)
		p.stage(StageHTTP, resp.Status, msg)
		p.fail(ReasonStatusMismatch, msg)
		return
	}
	p.stage(StageHTTP, resp.Status, "")

	// Body: at most MaxBodyBytes, all of it before the verdict (a slow body
	// is a timeout even when no match string is configured).
	bb := bodyPool.Get().(*[]byte)
	defer bodyPool.Put(bb)
	n, err := readUpTo(resp.Body, *bb)
	if err != nil {
		p.stage(StageBody, strconv.Itoa(n)+" bytes read", err.Error())
		switch {
		case p.timedOut(err):
			p.failTimeout("reading the response body")
		case connectionLost(err):
			p.fail(ReasonTCPConnect, "backend "+addr+" closed the connection in the middle of the response body ("+strconv.Itoa(n)+" bytes read): "+err.Error())
		default:
			p.fail(ReasonBodyMismatch, "the response body could not be read ("+strconv.Itoa(n)+" bytes read): "+err.Error())
		}
		return
	}
	var db [64]byte
	detail := append(strconv.AppendInt(db[:0], int64(n), 10), " bytes read"...)
	if want := s.Match.Body; want != "" {
		i := bytes.Index((*bb)[:n], []byte(want))
		if i < 0 {
			msg := "the response body does not contain " + strconv.Quote(want) + " (searched the first " + strconv.Itoa(n) + " bytes)"
			p.stage(StageBody, string(detail), msg)
			p.fail(ReasonBodyMismatch, msg)
			return
		}
		detail = strconv.AppendInt(append(detail, ", match at byte "...), int64(i), 10)
	}
	p.stage(StageBody, string(detail), "")
}

// lookup resolves host, never past the probe deadline: a *net.Resolver
// honours ctx; any other Resolver runs in a goroutine that is abandoned at
// the deadline.
func lookup(ctx context.Context, res Resolver, host string) ([]string, error) {
	if res == nil {
		return net.DefaultResolver.LookupHost(ctx, host)
	}
	if nr, ok := res.(*net.Resolver); ok {
		return nr.LookupHost(ctx, host)
	}
	type answer struct {
		addrs []string
		err   error
	}
	ch := make(chan answer, 1)
	go func() {
		a, err := res.LookupHost(ctx, host)
		ch <- answer{a, err}
	}()
	select {
	case a := <-ch:
		return a.addrs, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stage records a stage that ended now.
func (p *prober) stage(name, detail, errStr string) {
	now := time.Now()
	p.r.Stages = append(p.r.Stages, Stage{Name: name, Duration: now.Sub(p.last), Detail: detail, Err: errStr})
	p.last = now
}

func (p *prober) fail(reason, msg string) { p.r.Reason, p.r.Message = reason, msg }

// timedOut tells whether an I/O error is the probe deadline (or the caller's
// cancellation) rather than something the backend did.
func (p *prober) timedOut(err error) bool {
	return p.ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(p.deadline)
}

func (p *prober) failTimeout(during string) {
	if errors.Is(p.ctx.Err(), context.Canceled) {
		p.fail(ReasonTimeout, "probe of "+p.target+" canceled "+during+": "+context.Canceled.Error())
		return
	}
	budget := max(p.deadline.Sub(p.start), 0).Round(time.Millisecond)
	p.fail(ReasonTimeout, "no complete response from "+p.target+" within the probe timeout of "+budget.String()+
		": timed out "+during+" after "+time.Since(p.start).Round(time.Millisecond).String())
}

// readResponse reads the response header, skipping interim 1xx responses.
func readResponse(br *bufio.Reader) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

// readUpTo fills buf from r until EOF or buf is full; io.EOF is not an error.
// buf is MaxBodyBytes long: this is the io.LimitReader of the probe.
func readUpTo(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// connectionLost tells a closed or reset connection from a protocol error.
func connectionLost(err error) bool {
	var oe *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &oe)
}

// appendRequest appends the probe request: GET path, Host, User-Agent,
// Connection: close. Bytes that would break the request line or header
// (controls, spaces in the path) are escaped or dropped.
func appendRequest(b []byte, path, host string) []byte {
	b = append(b, "GET "...)
	if path == "" || path[0] != '/' {
		b = append(b, '/')
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c <= ' ' || c >= 0x7f {
			const hex = "0123456789ABCDEF"
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	for i := 0; i < len(host); i++ {
		if c := host[i]; c > ' ' && c != 0x7f {
			b = append(b, c)
		}
	}
	b = append(b, "\r\nUser-Agent: "+UserAgent+"\r\nConnection: close\r\n\r\n"...)
	return b
}

// stripPort returns the host of "host", "host:port", "[v6]" or "[v6]:port".
func stripPort(h string) string {
	if h == "" {
		return ""
	}
	if h[0] == '[' {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := strings.IndexByte(h, ':'); i >= 0 && strings.LastIndexByte(h, ':') == i {
		return h[:i]
	}
	return h
}
