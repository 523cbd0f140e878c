package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/batfleet/batfleet/internal/natstest"
)

// The NATS security of the binaries (the reliability issue's security
// part), driven as a user drives them against an embedded nats-server
// that requires authentication: user/password, an nkey seed file, a creds
// file (operator/account JWTs) and TLS with server and client
// certificates made by the test. Each way runs a writer, an append, a
// durable worker and `worker status` end to end, and a wrong secret or an
// untrusted certificate ends with one clear line and exit 3. The roles of
// the README's "Security: NATS users and permissions" run against a
// server configured with the README's own block (TestSEC05, TestSEC06).

// secServerLog collects what the server logs at error level (permission
// violations, authentication failures), to show with a failed test.
type secServerLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *secServerLog) add(format string, v ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
	l.mu.Unlock()
}

func (l *secServerLog) Noticef(string, ...any)         {}
func (l *secServerLog) Debugf(string, ...any)          {}
func (l *secServerLog) Tracef(string, ...any)          {}
func (l *secServerLog) Warnf(format string, v ...any)  { l.add("warn: "+format, v...) }
func (l *secServerLog) Errorf(format string, v ...any) { l.add("error: "+format, v...) }
func (l *secServerLog) Fatalf(format string, v ...any) { l.add("fatal: "+format, v...) }
func (l *secServerLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// secStartServer starts a JetStream server on loopback with the options
// natstest gives, changed by configure, and logs what it logged at error
// level if the test fails.
func secStartServer(t *testing.T, configure func(*server.Options)) *server.Server {
	t.Helper()
	o := natstest.Options(t.TempDir())
	configure(o)
	s, _ := secStart(t, o)
	return s
}

// secStart starts a server with o and returns it with its error log,
// which is shown if the test fails.
func secStart(t *testing.T, o *server.Options) (*server.Server, *secServerLog) {
	t.Helper()
	s := natstest.StartServer(t, o)
	log := &secServerLog{}
	s.SetLoggerV2(log, false, false, false)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server errors and warnings:\n%s", log)
		}
	})
	return s, log
}

// secAuth is how the binaries reach a server: its URL and the
// authentication flags.
type secAuth struct {
	url   string
	flags []string
}

// args returns args followed by --nats and the authentication flags.
func (a secAuth) args(args ...string) []string {
	return append(append(append([]string{}, args...), "--nats", a.url), a.flags...)
}

// secWriteFile writes data to dir/name (mode 0600) and returns its path.
func secWriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// secFleet runs a fleet end to end through a: a writer, three appended
// events, a durable worker that hands them to --out, and `worker status`
// showing its checkpoint caught up.
func secFleet(t *testing.T, a secAuth) {
	t.Helper()
	writerBin, workerBin := cmdBins(t)
	dir := t.TempDir()
	w := cmdStart(t, "writer", writerBin, a.args("serve", "--data", filepath.Join(dir, "data"))...)
	w.waitLog(t, `writer ready: nats=`)

	lines := []string{
		`{"entity":"order:1","scope":"shop","payload":"one"}`,
		`{"entity":"order:2","scope":"shop","payload":"two"}`,
		`{"entity":"order:3","scope":"shop","payload":"three"}`,
	}
	stdout, stderr, code := cmdRun(t, strings.Join(lines, "\n")+"\n", nil, writerBin, a.args("append")...)
	if code != 0 || len(strings.Fields(stdout)) != 3 {
		t.Fatalf("writer append: exit %d, stdout %q, want 0 and three seqs; stderr:\n%s", code, stdout, stderr)
	}

	out := filepath.Join(dir, "orders.jsonl")
	cmdStart(t, "worker", workerBin, a.args("run", "--region", "entity=order", "--checkpoint", "orders", "--out", out)...)
	cmdPoll(t, cmdLimit, "the worker handled the three events", func() bool { return cmdLineCount(out) >= 3 })
	cmdPoll(t, cmdLimit, "worker status shows checkpoint orders caught up", func() bool {
		r, ok := secStatus(t, workerBin, a)["orders"]
		return ok && r.Started && r.LagEvents == 0 && r.Problem == ""
	})
}

// secStatus is `worker status --json` through a.
func secStatus(t testing.TB, workerBin string, a secAuth) map[string]cmdCheckpoint {
	t.Helper()
	stdout, stderr, code := cmdRun(t, "", nil, workerBin, a.args("status", "--json")...)
	if code != 0 {
		t.Fatalf("worker status --json: exit %d: %s", code, stderr)
	}
	var list []cmdCheckpoint
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatalf("worker status --json printed no JSON array: %v\n%s", err, stdout)
	}
	rows := map[string]cmdCheckpoint{}
	for _, r := range list {
		rows[r.ID] = r
	}
	return rows
}

// secRefused runs args through the worker and writer binaries with the
// given flags and checks each ends with exit 3 (no NATS) and exactly one
// stderr line matching pattern.
func secRefused(t *testing.T, url string, flags []string, pattern string) {
	t.Helper()
	writerBin, workerBin := cmdBins(t)
	a := secAuth{url: url, flags: flags}
	for _, c := range []struct {
		bin  string
		args []string
	}{
		{workerBin, a.args("status")},
		{writerBin, a.args("append", "--gen", "1")},
		{writerBin, a.args("serve", "--data", filepath.Join(t.TempDir(), "data"))},
	} {
		what := filepath.Base(c.bin) + " " + c.args[0]
		stdout, stderr, code := cmdRun(t, "", nil, c.bin, c.args...)
		if code != 3 {
			t.Errorf("%s: exit %d, want 3 (no NATS); stderr:\n%s", what, code, stderr)
		}
		if stdout != "" {
			t.Errorf("%s: stdout %q, want nothing", what, stdout)
		}
		cmdOneLine(t, what, stderr, pattern)
	}
}

// secURLPattern is the regexp of "at URL" in a connect error.
func secURLPattern(url string) string { return regexp.QuoteMeta(url) }

// TestSEC01_UserPassword: a server requiring a user and password; the
// fleet runs end to end with --user/--password, and a wrong password is
// one line naming the URL and the refused authorization, exit 3.
func TestSEC01_UserPassword(t *testing.T) {
	s := secStartServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "fleet", Password: "s3cret"}}
	})
	secFleet(t, secAuth{url: s.ClientURL(), flags: []string{"--user", "fleet", "--password", "s3cret"}})
	secRefused(t, s.ClientURL(), []string{"--user", "fleet", "--password", "wrong"},
		`: connect to NATS at `+secURLPattern(s.ClientURL())+`: the server refused user "fleet" with that --password: nats: Authorization Violation$`)
}

// TestSEC02_NKey: a server requiring an nkey; the fleet runs end to end
// with --nkey SEEDFILE, and a seed of another user is refused (one line,
// exit 3).
func TestSEC02_NKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	s := secStartServer(t, func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	})
	dir := t.TempDir()
	seedFile := secWriteFile(t, dir, "fleet.nk", seed)
	secFleet(t, secAuth{url: s.ClientURL(), flags: []string{"--nkey", seedFile}})

	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := secWriteFile(t, dir, "other.nk", otherSeed)
	secRefused(t, s.ClientURL(), []string{"--nkey", otherFile},
		`: connect to NATS at `+secURLPattern(s.ClientURL())+`: the server refused the nkey of --nkey `+regexp.QuoteMeta(otherFile)+`: nats: Authorization Violation$`)
}

// secOperator is an operator with one account (JetStream enabled) whose
// JWT a server trusts through a memory resolver.
type secOperator struct {
	operator *jwt.OperatorClaims
	opKP     nkeys.KeyPair
	account  nkeys.KeyPair
	accJWT   string
	sysPub   string
	sysJWT   string
}

func secNewOperator(t testing.TB) *secOperator {
	t.Helper()
	opKP, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opPub, _ := opKP.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "batfleet-test"
	if _, err := oc.Encode(opKP); err != nil {
		t.Fatal(err)
	}
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	oc.SystemAccount = sysPub
	accKP, _ := nkeys.CreateAccount()
	accPub, _ := accKP.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "fleet"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	return &secOperator{operator: oc, opKP: opKP, account: accKP, accJWT: accJWT, sysPub: sysPub, sysJWT: sysJWT}
}

// configure makes o trust the operator and know its account.
func (op *secOperator) configure(t testing.TB, o *server.Options) {
	t.Helper()
	o.TrustedOperators = []*jwt.OperatorClaims{op.operator}
	res := &server.MemAccResolver{}
	accPub, _ := op.account.PublicKey()
	if err := res.Store(accPub, op.accJWT); err != nil {
		t.Fatal(err)
	}
	if err := res.Store(op.sysPub, op.sysJWT); err != nil {
		t.Fatal(err)
	}
	o.SystemAccount = op.sysPub
	o.AccountResolver = res
}

// creds returns the text of a creds file for a new user of the account,
// signed by signer (the account's key, or another to forge one).
func (op *secOperator) creds(t testing.TB, name string, signer nkeys.KeyPair) []byte {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	b, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSEC03_Creds: a server in operator mode (a trusted operator, an
// account with JetStream); the fleet runs end to end with --creds, and a
// creds file signed by an account the operator never signed is refused
// (one line, exit 3).
func TestSEC03_Creds(t *testing.T) {
	op := secNewOperator(t)
	s := secStartServer(t, func(o *server.Options) { op.configure(t, o) })
	dir := t.TempDir()
	credsFile := secWriteFile(t, dir, "fleet.creds", op.creds(t, "fleet", op.account))
	secFleet(t, secAuth{url: s.ClientURL(), flags: []string{"--creds", credsFile}})

	stranger, _ := nkeys.CreateAccount()
	forged := secWriteFile(t, dir, "forged.creds", op.creds(t, "forged", stranger))
	secRefused(t, s.ClientURL(), []string{"--creds", forged},
		`: connect to NATS at `+secURLPattern(s.ClientURL())+`: the server refused the credentials of --creds `+regexp.QuoteMeta(forged)+`: nats: Authorization Violation$`)
}

// secPKI is a certificate authority made by a test, in files.
type secPKI struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
	dir    string
}

var secSerial struct {
	mu sync.Mutex
	n  int64
}

func secNextSerial() *big.Int {
	secSerial.mu.Lock()
	defer secSerial.mu.Unlock()
	secSerial.n++
	return big.NewInt(time.Now().UnixNano() + secSerial.n)
}

// secNewCA makes a self-signed CA named name under dir.
func secNewCA(t testing.TB, dir, name string) *secPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          secNextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	caFile := secWriteFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return &secPKI{cert: cert, key: key, caFile: caFile, dir: dir}
}

// issue makes a certificate for 127.0.0.1 (server) or a client named
// name, signed by the CA, and returns its certificate and key files.
func (ca *secPKI) issue(t testing.TB, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: secNextSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = secWriteFile(t, ca.dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = secWriteFile(t, ca.dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

// TestSEC04_TLS: a server with a certificate of the test's CA that
// requires client certificates of that CA; the fleet runs end to end
// with --tls-ca/--tls-cert/--tls-key. A --tls-ca of another CA (the
// server's certificate is not trusted) and a client certificate of
// another CA (the server refuses it) each end with one line saying so,
// exit 3.
func TestSEC04_TLS(t *testing.T) {
	dir := t.TempDir()
	ca := secNewCA(t, dir, "fleet-ca")
	srvCert, srvKey := ca.issue(t, "nats-server", true)
	cliCert, cliKey := ca.issue(t, "fleet-client", false)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCert, KeyFile: srvKey, CaFile: ca.caFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	s := secStartServer(t, func(o *server.Options) {
		o.TLSConfig = tc
		o.TLS = true
		o.TLSVerify = true
		o.TLSTimeout = 5
	})
	url := strings.Replace(s.ClientURL(), "nats://", "tls://", 1)
	secFleet(t, secAuth{url: url, flags: []string{"--tls-ca", ca.caFile, "--tls-cert", cliCert, "--tls-key", cliKey}})

	other := secNewCA(t, t.TempDir(), "other-ca")
	otherCert, otherKey := other.issue(t, "stranger", false)
	t.Run("server certificate not trusted", func(t *testing.T) {
		secRefused(t, url, []string{"--tls-ca", other.caFile, "--tls-cert", cliCert, "--tls-key", cliKey},
			`: connect to NATS at `+secURLPattern(url)+`: the server's TLS certificate is not trusted by --tls-ca `+regexp.QuoteMeta(other.caFile)+` \(it is signed by a CA that file does not hold\): .*x509: certificate signed by unknown authority`)
	})
	t.Run("client certificate refused", func(t *testing.T) {
		secRefused(t, url, []string{"--tls-ca", ca.caFile, "--tls-cert", otherCert, "--tls-key", otherKey},
			`: connect to NATS at `+secURLPattern(url)+`: the server refused the TLS client certificate of --tls-cert `+regexp.QuoteMeta(otherCert)+` \(not signed by a CA it trusts\?\): (remote error: tls: |nats: tls error: )`)
	})
}

// secReadmePermissions returns the nats-server configuration block of the
// README's section "Security: NATS users and permissions".
func secReadmePermissions(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cmdModuleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- security-permissions:begin -->\n```\n")
	block, _, ok2 := strings.Cut(rest, "```\n<!-- security-permissions:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no security-permissions block")
	}
	return block
}

// secRoleFleet is a fleet whose processes each run as the README's role
// for them, on a server configured with the README's block: a writer, a
// producer's append, a durable worker parking entity order:bad, and a
// consumer group member.
type secRoleFleet struct {
	url                  string
	writerBin, workerBin string
	dir                  string
	log                  *secServerLog
	seqs                 []string // the seqs the producer's append printed
}

// as returns args with --nats and the credentials of user.
func (f *secRoleFleet) as(user string, args ...string) []string {
	return secAuth{url: f.url, flags: []string{"--user", user, "--password", "pw-" + user}}.args(args...)
}

func secStartRoleFleet(t *testing.T) *secRoleFleet {
	t.Helper()
	f := &secRoleFleet{dir: t.TempDir()}
	f.writerBin, f.workerBin = cmdBins(t)
	conf := secReadmePermissions(t)
	for _, u := range []string{"writer", "producer", "worker", "operator"} {
		conf = strings.ReplaceAll(conf, "$"+strings.ToUpper(u)+"_PASSWORD", `"pw-`+u+`"`)
	}
	confFile := secWriteFile(t, f.dir, "nats.conf", []byte(conf))
	o, err := server.ProcessConfigFile(confFile)
	if err != nil {
		t.Fatalf("the README's permissions block does not load: %v", err)
	}
	base := natstest.Options(t.TempDir())
	o.Host, o.Port, o.JetStream, o.StoreDir, o.NoLog, o.NoSigs = base.Host, base.Port, true, base.StoreDir, true, true
	var s *server.Server
	s, f.log = secStart(t, o)
	f.url = s.ClientURL()

	w := cmdStart(t, "writer (as writer)", f.writerBin, f.as("writer", "serve", "--data", filepath.Join(f.dir, "data"))...)
	w.waitLog(t, `writer ready: nats=`)

	lines := []string{
		`{"entity":"order:1","scope":"shop","payload":"one"}`,
		`{"entity":"order:bad","scope":"shop","payload":"poison"}`,
		`{"entity":"order:2","scope":"shop","payload":"two"}`,
	}
	stdout, stderr, code := cmdRun(t, strings.Join(lines, "\n")+"\n", nil, f.writerBin, f.as("producer", "append")...)
	if f.seqs = strings.Fields(stdout); code != 0 || len(f.seqs) != len(lines) {
		t.Fatalf("writer append as producer: exit %d, stdout %q; stderr:\n%s", code, stdout, stderr)
	}

	// A durable worker whose handler fails order:bad: it is parked.
	hd := filepath.Join(f.dir, "handler")
	if err := os.Mkdir(hd, 0o755); err != nil {
		t.Fatal(err)
	}
	cmdSetPoison(t, hd, "order:bad")
	cmdWriteScript(t, filepath.Join(hd, "h.sh"), cmdPoisonScript(hd))
	cmdKillGroupOnCleanup(t, filepath.Join(hd, "pids"))
	wk := cmdStart(t, "worker (as worker)", f.workerBin, f.as("worker", "run", "--region", "entity=order", "--checkpoint", "orders",
		"--on-poison", "park", "--attempts", "1", "--http", "127.0.0.1:0", "--exec", "exec /bin/sh '"+filepath.Join(hd, "h.sh")+"'")...)
	metrics := "http://" + wk.waitLog(t, `worker: serving /metrics and /healthz: addr=(\S+)`)[1] + "/metrics"
	// A member of consumer group g.
	out := filepath.Join(f.dir, "group.jsonl")
	cmdStart(t, "group member (as worker)", f.workerBin, f.as("worker", "run", "--group", "g", "--partitions", "2",
		"--region", "entity=order", "--out", out)...)

	cmdPoll(t, cmdLimit, "the group member handled the three events", func() bool { return cmdLineCount(out) >= 3 })
	var last string
	deadline := time.Now().Add(cmdLimit)
	for {
		stdout, stderr, code := cmdRun(t, "", nil, f.workerBin, f.as("operator", "parked", "ls", "--checkpoint", "orders", "--json")...)
		last = fmt.Sprintf("parked ls: exit %d\n%s%s", code, stdout, stderr)
		if code == 0 && strings.Contains(stdout, `"order:bad"`) {
			stdout, stderr, code = cmdRun(t, "", nil, f.workerBin, f.as("operator", "status", "--json")...)
			last = fmt.Sprintf("status: exit %d\n%s%s", code, stdout, stderr)
			var rows []cmdCheckpoint
			if code == 0 && json.Unmarshal([]byte(stdout), &rows) == nil && slices.ContainsFunc(rows, func(r cmdCheckpoint) bool {
				return r.ID == "orders" && r.Started && r.LagEvents == 0
			}) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("order:bad parked and checkpoint orders caught up: not within %v; last: %s", cmdLimit, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The worker's lag metric asks the writer for a count.
	if code, body := cmdHTTPGet(t, metrics); code != 200 || !strings.Contains(body, "batfleet_worker_") {
		t.Fatalf("GET %s: %d, want 200 with the lag metric:\n%s", metrics, code, body)
	}
	return f
}

// noViolations fails the test if the server logged a permission
// violation: a permission the README leaves out that a command needed
// (some, such as a refused subscription, would not fail the command).
func (f *secRoleFleet) noViolations(t *testing.T) {
	t.Helper()
	if l := f.log.String(); strings.Contains(l, "Violation") {
		t.Errorf("the server logged permission violations:\n%s", l)
	}
}

// TestSEC05_RolesAllowed: on a server configured with the README's
// permissions block, each role does its whole job without one permission
// violation: the writer serves, the producer appends, workers (a durable
// one parking an entity, a group member) run, and the read-only operator
// runs worker status, group ls, group describe, checkpoint get, parked
// ls, wait and writer info.
func TestSEC05_RolesAllowed(t *testing.T) {
	f := secStartRoleFleet(t)
	for _, c := range []struct {
		bin  string
		args []string
		code int
		want string // in stdout
	}{
		{f.workerBin, []string{"status", "--json"}, 0, `"orders"`},
		{f.workerBin, []string{"group", "ls", "--json"}, 0, `"g"`},
		{f.workerBin, []string{"group", "describe", "g", "--json"}, 0, `"partitions"`},
		{f.workerBin, []string{"checkpoint", "get", "orders", "--json"}, 0, `"orders"`},
		{f.workerBin, []string{"parked", "ls", "--checkpoint", "orders"}, 0, "order:bad"},
		{f.workerBin, []string{"wait", "--checkpoint", "orders", "--through", f.seqs[len(f.seqs)-1]}, 0, ""},
		// A seq not appended yet: wait pulls (is anything left?) and
		// watches the checkpoint's key until its timeout (exit 4).
		{f.workerBin, []string{"wait", "--checkpoint", "orders", "--through", "1000", "--timeout", "1s"}, 4, ""},
		{f.writerBin, []string{"info", "--json"}, 0, `"running"`},
	} {
		what := filepath.Base(c.bin) + " " + strings.Join(c.args, " ")
		stdout, stderr, code := cmdRun(t, "", nil, c.bin, f.as("operator", c.args...)...)
		if code != c.code || !strings.Contains(stdout, c.want) {
			t.Errorf("%s as operator: exit %d, want %d and %q in stdout:\n%s\nstderr:\n%s", what, code, c.code, c.want, stdout, stderr)
		}
	}
	f.noViolations(t)
}

// secLastLine returns the last line of s.
func secLastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestSEC06_RolesRefused: on the same server, what a role may not do is
// refused, and the command ends (exit 1) with the refusal as its last
// line, naming the subject and the user: a worker cannot append, a
// producer cannot move a checkpoint, a read-only operator cannot append,
// move a checkpoint or drop a parked entity — and nothing changed.
func TestSEC06_RolesRefused(t *testing.T) {
	f := secStartRoleFleet(t)
	get := func() string {
		stdout, stderr, code := cmdRun(t, "", nil, f.workerBin, f.as("operator", "checkpoint", "get", "orders", "--json")...)
		if code != 0 {
			t.Fatalf("checkpoint get orders: exit %d: %s", code, stderr)
		}
		var rec struct {
			Position uint64 `json:"position"`
			Owner    string `json:"owner"`
			Revision uint64 `json:"revision"`
		}
		if err := json.Unmarshal([]byte(stdout), &rec); err != nil {
			t.Fatalf("checkpoint get orders --json: %v\n%s", err, stdout)
		}
		return fmt.Sprintf("position %d, owner %s, revision %d", rec.Position, rec.Owner, rec.Revision)
	}
	before := get()
	refused := func(user, subject string) string {
		return `NATS refused permission to publish to "` + regexp.QuoteMeta(subject) + `" for user "` + user + `"`
	}
	event := `{"entity":"order:9","scope":"shop","payload":"nine"}` + "\n"
	cases := []struct {
		user  string
		bin   string
		stdin string
		args  []string
		want  string // the last stderr line matches
	}{
		{"worker", f.writerBin, event, []string{"append"}, refused("worker", "batfleet.main.append")},
		{"producer", f.workerBin, "", []string{"checkpoint", "set", "orders", "--position", "0", "--force"},
			refused("producer", "$JS.API.STREAM.INFO.KV_batfleet_checkpoints")},
		{"producer", f.workerBin, "", []string{"checkpoint", "reset", "orders", "--force"},
			refused("producer", "$JS.API.STREAM.INFO.KV_batfleet_checkpoints")},
		{"operator", f.writerBin, event, []string{"append"}, refused("operator", "batfleet.main.append")},
		{"operator", f.workerBin, "", []string{"checkpoint", "set", "orders", "--position", "0", "--force"},
			refused("operator", "$KV.batfleet_checkpoints.main.orders")},
		{"operator", f.workerBin, "", []string{"checkpoint", "reset", "orders", "--force"},
			refused("operator", "$KV.batfleet_checkpoints.main.orders")},
		{"operator", f.workerBin, "", []string{"parked", "drop", "--checkpoint", "orders", "--entity", "order:bad"},
			`NATS refused permission to publish to "\$KV\.batfleet_parked\.main\.orders\.[^"]+" for user "operator"`},
	}
	// Each command ends when the server's refusal reaches it (the error
	// handler ends the calls it dooms); they run in parallel, and the
	// group returns when all are done.
	t.Run("refusals", func(t *testing.T) {
		for _, c := range cases {
			what := c.user + ": " + filepath.Base(c.bin) + " " + strings.Join(c.args, " ")
			t.Run(what, func(t *testing.T) {
				t.Parallel()
				stdout, stderr, code := cmdRun(t, c.stdin, nil, c.bin, f.as(c.user, c.args...)...)
				if code != 1 {
					t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr)
				}
				if stdout != "" {
					t.Errorf("stdout %q, want nothing", stdout)
				}
				if last := secLastLine(stderr); !regexp.MustCompile(c.want).MatchString(last) {
					t.Errorf("last stderr line %q does not match %q; stderr:\n%s", last, c.want, stderr)
				}
			})
		}
	})
	if after := get(); after != before {
		t.Errorf("checkpoint orders changed under refused commands:\nbefore %s\nafter  %s", before, after)
	}
	stdout, _, code := cmdRun(t, "", nil, f.workerBin, f.as("operator", "parked", "ls", "--checkpoint", "orders")...)
	if code != 0 || !strings.Contains(stdout, "order:bad") {
		t.Errorf("after the refused drop, parked ls: exit %d, want order:bad still parked:\n%s", code, stdout)
	}
}
