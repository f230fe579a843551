package probe

// Reason codes of an unhealthy Result, as Azure Application Gateway names the
// backend health errors. A failed probe carries exactly one, chosen in
// pipeline order (see Run).
const (
	// ReasonTimeout: no complete response within Spec.Timeout, whatever the
	// stage (DNS, connect, TLS handshake, response header, body).
	ReasonTimeout = "backend-server-timeout"
	// ReasonDNS: the server's FQDN cannot be resolved.
	ReasonDNS = "dns-resolution-error"
	// ReasonTCPConnect: no TCP connection to the server's address and port
	// (refused, unreachable), or the backend closed/reset the connection
	// before a complete response.
	ReasonTCPConnect = "tcp-connect-error"
	// ReasonStatusMismatch: the response status is not in Match.Status (or
	// no valid HTTP status line was received at all).
	ReasonStatusMismatch = "http-status-code-mismatch"
	// ReasonBodyMismatch: the first MaxBodyBytes of the body lack Match.Body.
	ReasonBodyMismatch = "http-response-body-mismatch"
	// ReasonInvalidCA: the certificate chain does not lead to a well-known
	// CA of the system roots (no trusted roots configured), e.g. self-signed.
	ReasonInvalidCA = "backend-server-certificate-invalid-ca"
	// ReasonTrustedRootMismatch: trusted roots are configured
	// (Spec.CustomRoots) but none of them anchors the chain the backend sent,
	// which includes a backend that omits its intermediate.
	ReasonTrustedRootMismatch = "trusted-root-certificate-mismatch"
	// ReasonInvalidCommonName: the certificate's names (SANs; CN when it has
	// no SAN) do not match the probe host name.
	ReasonInvalidCommonName = "backend-certificate-invalid-common-name"
	// ReasonInvalidDate: now is outside a certificate's validity period.
	ReasonInvalidDate = "backend-certificate-invalid-date"
	// ReasonVerificationFailed: any other certificate verification or TLS
	// handshake failure (wrong key usage, no certificate, protocol error).
	ReasonVerificationFailed = "certificate-verification-failed"
)

// Reasons lists every reason code, in classification order.
var Reasons = []string{
	ReasonTimeout,
	ReasonDNS,
	ReasonTCPConnect,
	ReasonInvalidDate,
	ReasonInvalidCA,
	ReasonTrustedRootMismatch,
	ReasonInvalidCommonName,
	ReasonVerificationFailed,
	ReasonStatusMismatch,
	ReasonBodyMismatch,
}

// Hint returns the one-line remediation hint for a reason code ("" for an
// unknown code or a healthy result). Setting names are the gateway
// configuration's (Azure's) field names.
func Hint(reason string) string {
	switch reason {
	case ReasonTimeout:
		return "Check why the backend (or a dependency such as its database) does not answer the probe path within the probe's timeout; if it is legitimately slower, raise probes[].timeout."
	case ReasonDNS:
		return "Check the backend pool's fqdn is spelled correctly and resolvable from the gateway (DNS servers in use, A/AAAA or CNAME records of the zone)."
	case ReasonTCPConnect:
		return "Check the backend listens on the probe port (backendHttpSettings port or probes[].port) and that no NSG/UDR/firewall blocks the gateway from that address and port."
	case ReasonStatusMismatch:
		return "Check the probe path returns a status in the probe's match.statusCodes, or widen match.statusCodes."
	case ReasonBodyMismatch:
		return "Fetch the probe path from the backend and compare its body with the probe's match.body; fix the backend or set match.body to a string the healthy response contains."
	case ReasonInvalidCA:
		return "The backend certificate is not issued by a well-known CA (e.g. self-signed): add its root to trustedRootCertificates in the backend settings."
	case ReasonTrustedRootMismatch:
		return "Add the root that actually issued the backend certificate to the backend settings' trustedRootCertificates, and make the backend send its full chain (leaf + intermediates)."
	case ReasonInvalidCommonName:
		return "Make the probe host name (probes[].host, or hostName of the backend settings when picked from there) match a name of the backend certificate, or issue a certificate for that name."
	case ReasonInvalidDate:
		return "Renew the backend certificate (or fix the backend's clock) so that the current date is within its validity; update trustedRootCertificates if the root changed."
	case ReasonVerificationFailed:
		return "Check that the backend speaks TLS on this port and serves a well-formed certificate chain for server authentication (openssl s_client -showcerts, openssl verify)."
	}
	return ""
}
