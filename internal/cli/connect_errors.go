package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"

	"github.com/batfleet/batfleet/fleet"
)

// connectError explains why the first connection to url failed, naming
// the flag whose secret or certificate was refused, so that one line
// tells an operator what to fix. It keeps err (errors.Is/As still see
// nats.ErrAuthorization, *x509.UnknownAuthorityError and the like).
func (n NATSFlags) connectError(url string, err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		opErr     *net.OpError
	)
	why := ""
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		why = "the server refused " + n.credentials()
	case errors.As(err, &unknownCA):
		if n.TLSCA != "" {
			why = fmt.Sprintf("the server's TLS certificate is not trusted by --tls-ca %s (it is signed by a CA that file does not hold)", n.TLSCA)
		} else {
			why = "the server's TLS certificate is not signed by a CA this system trusts (give its CA with --tls-ca)"
		}
	case errors.As(err, &badHost):
		why = fmt.Sprintf("the server's TLS certificate is not valid for %s (it names %s)", badHost.Host, certNames(badHost.Certificate))
	case errors.As(err, &invalid):
		why = "the server's TLS certificate is not valid (expired, not yet valid, or not for a server)"
	case errors.As(err, &opErr) && opErr.Op == "remote error",
		errors.Is(err, nats.ErrTLS) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)):
		// A TLS alert from the server during the handshake, or (TLS 1.3,
		// where the client finishes first) the server closing the
		// connection right after it: it refused the client's certificate,
		// or that none was given. (A Go client sends no certificate when
		// its issuer is not among the CAs the server asks for.)
		if n.TLSCert != "" {
			why = fmt.Sprintf("the server refused the TLS client certificate of --tls-cert %s (not signed by a CA it trusts?)", n.TLSCert)
		} else {
			why = "the server refused the TLS handshake: it may require a client certificate (--tls-cert and --tls-key)"
		}
	case errors.Is(err, nats.ErrSecureConnRequired):
		why = "the server requires TLS (use a tls:// URL or give --tls-ca)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		why = "TLS was asked for (a tls:// URL or --tls-* flags) but the server does not offer it"
	}
	url = redactURLs(url)
	if why == "" {
		return fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	return fmt.Errorf("connect to NATS at %s: %s: %w", url, why, err)
}

// redactURLs hides the passwords of a comma-separated list of NATS URLs
// (nats://user:secret@host), which error messages must not show.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// credentials names the credentials the flags gave, for an error message.
func (n NATSFlags) credentials() string {
	var what []string
	if n.Creds != "" {
		what = append(what, "the credentials of --creds "+n.Creds)
	}
	if n.NKey != "" {
		what = append(what, "the nkey of --nkey "+n.NKey)
	}
	if n.User != "" || n.Password != "" {
		if n.Password == "" {
			what = append(what, "user "+strconv.Quote(n.User)+" without a --password")
		} else {
			what = append(what, "user "+strconv.Quote(n.User)+" with that --password")
		}
	}
	if len(what) == 0 {
		return "a connection without credentials (give --creds, --nkey or --user and --password)"
	}
	return strings.Join(what, " and ")
}

func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no name"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return strconv.Quote(c.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}

// refusalLogger ends at once the calls a permission refusal dooms
// (fleet.RefusalHandler) and logs each violation the server reports on a
// connection, once per refusal. NATS reports a refused publish or
// subscription apart from the call that caused it (without the handler
// the call just times out, or in a worker rides out what looks like an
// outage), so this line is often the first sign of a missing permission.
func (n NATSFlags) refusalLogger(log hclog.Logger) nats.Option {
	var mu sync.Mutex
	seen := map[string]bool{}
	return nats.ErrorHandler(fleet.RefusalHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if !errors.Is(err, nats.ErrPermissionViolation) {
			return
		}
		mu.Lock()
		first := !seen[err.Error()]
		seen[err.Error()] = true
		mu.Unlock()
		if first {
			log.Error("NATS refused a permission of this connection (see the README's \"Security: NATS users and permissions\")",
				"credentials", n.who(), "error", err)
		}
	}))
}

// who names the connection's credentials for a log line.
func (n NATSFlags) who() string {
	switch {
	case n.User != "":
		return "user " + strconv.Quote(n.User)
	case n.NKey != "":
		return "--nkey " + n.NKey
	case n.Creds != "":
		return "--creds " + n.Creds
	}
	return "none"
}
