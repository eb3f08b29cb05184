// Package ssh is the bastion reached over SSH: builds run on a remote host
// from a checkout Sortie ships there, through one connection reused for
// every build (a session each), with keepalives and a fresh dial after a
// drop. Host keys are always verified against a known_hosts file.
//
// The bastion needs a POSIX sh, git, flock (util-linux), env, kill, cat,
// awk, sed, GNU grep and a /proc file system: a Debian or Ubuntu host has
// them all.
package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sortie-ci/sortie/internal/bastion"
)

var _ bastion.Bastion = (*Bastion)(nil)

// Config says how to reach the bastion.
type Config struct {
	Host string
	Port int // 0: 22
	User string
	// IdentityFile is a private key; "" uses only the SSH agent.
	IdentityFile string
	// KnownHosts is required: there is no way to skip verification.
	KnownHosts string
	// Workdir on the bastion; relative paths are under the login directory.
	// "" means ".sortie".
	Workdir string
	// AgentSocket is SSH_AUTH_SOCK; "" for no agent.
	AgentSocket string
	// Keepalive is the interval of keepalive requests; 0: 15s. A connection
	// that leaves one unanswered for three intervals is dropped.
	Keepalive time.Duration
	// DialTimeout bounds connecting and the SSH handshake; 0: 15s.
	DialTimeout time.Duration
	// Owner is the id of the Sortie process using the bastion
	// (coordinator.NewOwner; see bastion.CheckOwner), which SetOwner
	// changes. The pid files of its builds live in <workdir>/run/<Owner>/,
	// where KillOwner finds them once this process has died; "" keeps them
	// in <workdir>/run/, out of KillOwner's reach.
	Owner string
}

// Bastion runs builds on a remote host. It is safe for concurrent use;
// Close it when done.
type Bastion struct {
	cfg     Config
	addr    string
	client  *gossh.ClientConfig
	workdir string // absolute, once known

	mu      sync.Mutex
	conn    *gossh.Client
	dialing chan struct{} // closed when the dial in progress ends
	orphans []string      // run ids whose process groups must be ended once connected
	closed  bool
	wg      sync.WaitGroup // keepalive goroutines

	shipped shipStats
	// keepalives, set by tests before the first connection, hears of
	// every keepalive request: sent, then answered or given up.
	keepalives chan<- keepaliveEvent
}

// keepaliveEvent is what a test hears of a keepalive request.
type keepaliveEvent struct {
	Sent    time.Time     // when it was sent
	Waited  time.Duration // until it was answered or given up; 0 when just sent
	Done    bool          // it was answered (or failed), or given up
	Dropped bool          // it was given up and the connection closed
}

// signal tells events, if any, of e; it never blocks the keepalives.
func signal(events chan<- keepaliveEvent, e keepaliveEvent) {
	if events != nil {
		select {
		case events <- e:
		default:
		}
	}
}

// New checks the config, reads the key and known_hosts, and returns a
// bastion that connects on first use.
func New(cfg Config) (*Bastion, error) {
	if cfg.Host == "" || cfg.User == "" {
		return nil, errors.New("ssh bastion: host and user are required")
	}
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 15 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.Workdir == "" {
		cfg.Workdir = ".sortie"
	}
	if cfg.KnownHosts == "" {
		return nil, errors.New("ssh bastion: known_hosts is required: Sortie always verifies the bastion's host key")
	}
	if cfg.Owner != "" {
		if err := bastion.CheckOwner(cfg.Owner); err != nil {
			return nil, fmt.Errorf("ssh bastion: %w", err)
		}
	}
	khPath := expandHome(cfg.KnownHosts)
	check, err := knownhosts.New(khPath)
	if err != nil {
		return nil, fmt.Errorf("ssh bastion: known_hosts %s: %w", khPath, err)
	}
	var auth []gossh.Signer
	if cfg.IdentityFile != "" {
		path := expandHome(cfg.IdentityFile)
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("ssh bastion: identity_file: %w", err)
		}
		signer, err := gossh.ParsePrivateKey(pem)
		if err != nil {
			return nil, fmt.Errorf("ssh bastion: identity_file %s: %w (a key with a passphrase must be loaded into the SSH agent instead)", path, err)
		}
		auth = append(auth, signer)
	}
	b := &Bastion{cfg: cfg, addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))}
	methods := []gossh.AuthMethod{}
	if len(auth) > 0 {
		methods = append(methods, gossh.PublicKeys(auth...))
	}
	if cfg.AgentSocket != "" {
		methods = append(methods, gossh.PublicKeysCallback(func() ([]gossh.Signer, error) {
			c, err := net.Dial("unix", cfg.AgentSocket)
			if err != nil {
				return nil, fmt.Errorf("ssh agent %s: %w", cfg.AgentSocket, err)
			}
			defer c.Close()
			return agent.NewClient(c).Signers()
		}))
	}
	if len(methods) == 0 {
		return nil, errors.New("ssh bastion: no identity_file and no SSH agent (SSH_AUTH_SOCK): nothing to log in with")
	}
	b.client = &gossh.ClientConfig{
		User:              cfg.User,
		Auth:              methods,
		HostKeyCallback:   verify(check, khPath),
		HostKeyAlgorithms: hostKeyAlgorithms(check, b.addr),
		Timeout:           cfg.DialTimeout,
	}
	return b, nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

// verify wraps the known_hosts check with messages that say what to do.
func verify(check gossh.HostKeyCallback, file string) gossh.HostKeyCallback {
	return func(host string, remote net.Addr, key gossh.PublicKey) error {
		err := check(host, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("host key of %s (%s %s) is not in %s: verify it with the bastion's administrator, then add it (for example with ssh-keyscan)",
				host, key.Type(), gossh.FingerprintSHA256(key), file)
		case errors.As(err, &ke):
			return fmt.Errorf("host key of %s CHANGED: it offers %s %s, but %s:%d has another: refusing to connect; if the change is expected, replace that line",
				host, key.Type(), gossh.FingerprintSHA256(key), ke.Want[0].Filename, ke.Want[0].Line)
		}
		return err
	}
}

// hostKeyAlgorithms lists the key types known_hosts has for addr, so that
// the server is asked for a key we can verify rather than its favourite.
func hostKeyAlgorithms(check gossh.HostKeyCallback, addr string) []string {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	probe, err := gossh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(check(addr, &net.TCPAddr{IP: net.IPv4zero}, probe), &ke) {
		return nil
	}
	var algos []string
	for _, w := range ke.Want {
		switch t := w.Key.Type(); t {
		case gossh.KeyAlgoRSA:
			algos = append(algos, gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}

// Workdir is the bastion's absolute workdir, known after the first
// connection.
func (b *Bastion) Workdir() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.workdir
}

// conn returns the live connection, dialling one if there is none.
func (b *Bastion) connect(ctx context.Context) (*gossh.Client, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, &bastion.InfraError{Op: "connect", Err: errors.New("bastion closed")}
		}
		if b.conn != nil {
			c := b.conn
			b.mu.Unlock()
			return c, nil
		}
		if b.dialing != nil {
			wait := b.dialing
			b.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		b.dialing = done
		b.mu.Unlock()

		c, err := b.dial(ctx)
		b.mu.Lock()
		b.dialing = nil
		close(done)
		if err != nil {
			b.mu.Unlock()
			return nil, &bastion.InfraError{Op: "connect to " + b.addr, Err: err}
		}
		if b.closed {
			// Close ran while we dialled: the connection must not outlive
			// it (nor its watchers start after Close waited for them).
			b.mu.Unlock()
			c.Close()
			return nil, &bastion.InfraError{Op: "connect", Err: errors.New("bastion closed")}
		}
		b.conn = c
		orphans := b.orphans
		b.orphans = nil
		b.watch(c) // under b.mu: Close cannot be waiting for the group yet
		b.mu.Unlock()
		// Builds whose connection dropped may still run there: end them.
		for _, id := range orphans {
			b.kill(ctx, c, id, bastion.DefaultGrace)
		}
		return c, nil
	}
}

func (b *Bastion) dial(ctx context.Context) (*gossh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	cc, chans, reqs, err := gossh.NewClientConn(nc, b.addr, b.client)
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := gossh.NewClient(cc, chans, reqs)
	// Every connection makes sure of the workdir and its run directory
	// (the bastion may have been cleaned while we were away).
	w := q(b.cfg.Workdir)
	run := q(b.cfg.Workdir + "/run")
	out, err := output(ctx, c, fmt.Sprintf("mkdir -p %s %s && chmod 700 %s && cd %s && pwd", q(b.cfg.Workdir+"/"+b.runRel()), q(b.cfg.Workdir+"/events"), run, w), nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("prepare workdir %s: %w", b.cfg.Workdir, err)
	}
	b.mu.Lock()
	b.workdir = strings.TrimSpace(out)
	b.mu.Unlock()
	return c, nil
}

// keepaliveMisses is how many keepalive intervals an answer may take
// before the connection is given up (OpenSSH's ServerAliveCountMax).
const keepaliveMisses = 3

// watch sends keepalives on c until it dies or the bastion closes, and
// forgets c when it dies so that the next operation dials again.
func (b *Bastion) watch(c *gossh.Client) {
	events := b.keepalives
	dead := make(chan struct{})
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		c.Wait()
		close(dead)
		b.forget(c)
	}()
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(b.cfg.Keepalive)
		defer t.Stop()
		for {
			select {
			case <-dead:
				return
			case <-t.C:
			}
			answered := make(chan error, 1)
			sent := time.Now()
			signal(events, keepaliveEvent{Sent: sent})
			go func() {
				_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
				answered <- err
			}()
			select {
			case err := <-answered:
				signal(events, keepaliveEvent{Sent: sent, Waited: time.Since(sent), Done: true})
				if err != nil {
					c.Close()
				}
			case <-time.After(keepaliveMisses * b.cfg.Keepalive):
				// Unanswered for as long as OpenSSH's default
				// ServerAliveCountMax allows: the link is dead.
				waited := time.Since(sent)
				c.Close() // unblocks SendRequest
				<-answered
				signal(events, keepaliveEvent{Sent: sent, Waited: waited, Done: true, Dropped: true})
			case <-dead:
				<-answered
				return
			}
		}
	}()
}

// forget drops c if it is the current connection.
func (b *Bastion) forget(c *gossh.Client) {
	b.mu.Lock()
	if b.conn == c {
		b.conn = nil
	}
	b.mu.Unlock()
}

// Close closes the connection and waits for its goroutines. Safe twice.
func (b *Bastion) Close() error {
	b.mu.Lock()
	b.closed = true
	c := b.conn
	b.conn = nil
	b.mu.Unlock()
	if c != nil {
		c.Close()
	}
	b.wg.Wait()
	return nil
}

// output runs a short command and returns its stdout; a non-zero exit is
// an error carrying its stderr.
func output(ctx context.Context, c *gossh.Client, cmd string, stdin io.Reader) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, stdin
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Close()
		<-done
		return "", ctx.Err()
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		var ee *gossh.ExitError
		if errors.As(err, &ee) {
			return out.String(), &remoteError{status: ee.ExitStatus(), msg: msg}
		}
		return out.String(), err
	}
	return out.String(), nil
}

// remoteError is a command that ran on the bastion and failed: the host was
// reached, so retrying the same thing is not likely to help.
type remoteError struct {
	status int
	msg    string
}

func (e *remoteError) Error() string { return fmt.Sprintf("exit status %d: %s", e.status, e.msg) }

// infra wraps an error of an operation as an infrastructure failure,
// forgetting the connection when the failure was the connection's.
func (b *Bastion) infra(c *gossh.Client, op string, err error) error {
	var re *remoteError
	// A refused session (sshd's MaxSessions) says nothing about the
	// connection, which other builds are using.
	var refused *gossh.OpenChannelError
	if !errors.As(err, &re) && !errors.As(err, &refused) && c != nil {
		c.Close()
		b.forget(c)
	}
	return &bastion.InfraError{Op: op, Err: err}
}

// q quotes s for a POSIX shell.
func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
