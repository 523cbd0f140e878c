package cli

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// A failed first connection names what to fix (the flag whose secret or
// certificate was refused), keeps the cause for errors.Is/As, and never
// shows a password given in the URL.
func TestConnectErrorNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags NATSFlags
		url   string
		err   error
		want  []string
		never string
	}{
		{"wrong password", NATSFlags{User: "worker", Password: "s3cret"}, "nats://n1:4222", nats.ErrAuthorization,
			[]string{"connect to NATS at nats://n1:4222", `the server refused user "worker" with that --password`}, "s3cret"},
		{"no credentials", NATSFlags{}, "nats://n1:4222", nats.ErrAuthorization,
			[]string{"a connection without credentials (give --creds, --nkey or --user and --password)"}, ""},
		{"nkey", NATSFlags{NKey: "w.nk"}, "nats://n1:4222", nats.ErrAuthorization, []string{"the nkey of --nkey w.nk"}, ""},
		{"untrusted server", NATSFlags{TLSCA: "ca.pem"}, "tls://n1:4222", x509.UnknownAuthorityError{},
			[]string{"the server's TLS certificate is not trusted by --tls-ca ca.pem"}, ""},
		{"untrusted server, no --tls-ca", NATSFlags{}, "tls://n1:4222", x509.UnknownAuthorityError{},
			[]string{"not signed by a CA this system trusts (give its CA with --tls-ca)"}, ""},
		{"password in the URL", NATSFlags{}, "nats://u:hunter2@n1:4222,nats://n2:4222", errors.New("dial tcp: refused"),
			[]string{"nats://u:xxxxx@n1:4222,nats://n2:4222", "dial tcp: refused"}, "hunter2"},
	} {
		got := c.flags.connectError(c.url, c.err)
		for _, w := range c.want {
			if !strings.Contains(got.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, got, w)
			}
		}
		if c.never != "" && strings.Contains(got.Error(), c.never) {
			t.Errorf("%s: %q shows %q", c.name, got, c.never)
		}
		if !errors.Is(got, c.err) && !errors.As(got, new(x509.UnknownAuthorityError)) {
			t.Errorf("%s: %q lost its cause", c.name, got)
		}
	}
}
