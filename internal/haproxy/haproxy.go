// Package haproxy drives an existing HAProxy load balancer through its
// runtime API (the "stats socket"), so that the weighted releases baton
// makes on one host (blue/green, canary) can be made between instances on
// different hosts: Client.SetWeight and Client.SetState change a server of
// a backend, Client.Servers reads their weight, state, health check and
// current sessions, and Client.Switch and Client.Canary move traffic
// between two servers, putting it back when the new one fails its health
// check.
//
// HAProxy must expose the API with admin level, on a unix socket or on a
// TCP address (loopback or a trusted network only: the API has no
// authentication of its own):
//
//	global
//	    stats socket /run/haproxy/admin.sock mode 600 level admin
//
// The client is hand-written: HAProxy's own Go library
// (haproxytech/client-native) is not served by the module proxy this
// project builds from, and no other maintained Go library covers the few
// commands needed here. It speaks the API's non-interactive mode: one
// connection per command, the answer read until HAProxy closes it.
package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors, to be told apart with errors.Is.
var (
	// ErrSocket: the runtime API could not be reached (socket missing,
	// nothing listening, connection refused or cut).
	ErrSocket = errors.New("haproxy: runtime API unreachable")
	// ErrPermission: the socket file may not be opened by this user, or
	// HAProxy refused the command (the socket lacks "level admin").
	ErrPermission = errors.New("haproxy: permission denied")
	// ErrNoBackend: HAProxy has no backend of that name.
	ErrNoBackend = errors.New("haproxy: no such backend")
	// ErrNoServer: the backend has no server of that name.
	ErrNoServer = errors.New("haproxy: no such server")
	// ErrInvalid: a malformed argument (name, weight, state, address),
	// refused before anything is sent.
	ErrInvalid = errors.New("haproxy: invalid argument")
	// ErrCommand: HAProxy answered the command with an error not covered
	// by a more specific sentinel (the message is in the error's text).
	ErrCommand = errors.New("haproxy: command refused")
	// ErrUnhealthy: the server that was to take traffic is not passing its
	// health check (Switch, Canary).
	ErrUnhealthy = errors.New("haproxy: server unhealthy")
	// ErrNoCheck: the server has no health check, so its health cannot be
	// known (Switch and Canary need "check" on the server line).
	ErrNoCheck = errors.New("haproxy: server has no health check")
	// ErrDrainTimeout: the old server still had sessions at the drain
	// deadline (Switch; the traffic was switched all the same).
	ErrDrainTimeout = errors.New("haproxy: sessions left at the drain deadline")
)

// DefaultTimeout bounds one command (dial, write, read) when the context
// has no earlier deadline.
const DefaultTimeout = 5 * time.Second

// MaxWeight is the largest weight HAProxy accepts for a server.
const MaxWeight = 256

// State is a server's administrative state, as `set server ... state` takes it.
type State string

// Administrative states.
const (
	Ready State = "ready" // takes traffic according to its weight
	Drain State = "drain" // no new traffic, sessions finish, health checks go on
	Maint State = "maint" // no traffic, health checks stopped
)

// Client talks to one HAProxy runtime API endpoint. Its zero value is not
// usable: call New. A Client is safe for concurrent use (each command is
// its own connection).
type Client struct {
	network, address string
	// Timeout bounds one command when the context has no earlier
	// deadline; 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger receives the state-changing commands (debug) and the steps of
	// Switch and Canary (info); nil discards them.
	Logger *slog.Logger
}

// New returns a client for the runtime API at addr: a unix socket path
// ("/run/haproxy/admin.sock", or with a "unix:" or HAProxy's "unix@"
// prefix) or a TCP address ("127.0.0.1:9999", or with a "tcp:" or
// HAProxy's "ipv4@"/"ipv6@" prefix). Nothing is dialled yet.
func New(addr string) (*Client, error) {
	network, address, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	return &Client{network: network, address: address}, nil
}

func parseAddr(addr string) (network, address string, err error) {
	for _, p := range []string{"unix:", "unix@"} {
		if rest, ok := strings.CutPrefix(addr, p); ok {
			if rest == "" {
				return "", "", fmt.Errorf("%w: empty socket path in %q", ErrInvalid, addr)
			}
			return "unix", rest, nil
		}
	}
	for _, p := range []string{"tcp:", "ipv4@", "ipv6@"} {
		if rest, ok := strings.CutPrefix(addr, p); ok {
			addr = rest
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return "", "", fmt.Errorf("%w: address %q: %w", ErrInvalid, addr, err)
			}
			return "tcp", addr, nil
		}
	}
	if addr == "" {
		return "", "", fmt.Errorf("%w: empty runtime API address", ErrInvalid)
	}
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, ".") || strings.HasSuffix(addr, ".sock") {
		return "unix", addr, nil
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return "tcp", addr, nil
	}
	return "", "", fmt.Errorf("%w: %q is neither a socket path nor host:port", ErrInvalid, addr)
}

// String is the endpoint, e.g. "unix:/run/haproxy/admin.sock".
func (c *Client) String() string { return c.network + ":" + c.address }

func (c *Client) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Command sends one runtime API command and returns HAProxy's answer as
// it came. An answer that is one of HAProxy's known error messages is
// returned as an error too (ErrNoBackend, ErrNoServer, ErrPermission,
// ErrCommand for an unknown command). A command may not contain a line
// break or ';' (which would start a second command).
func (c *Client) Command(ctx context.Context, cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\r\n;") || strings.TrimSpace(cmd) == "" {
		return "", fmt.Errorf("%w: command %q (empty, or with a line break or ';')", ErrInvalid, cmd)
	}
	out, err := c.roundTrip(ctx, cmd)
	if err != nil {
		return "", err
	}
	if err := answerError(out); err != nil {
		return out, fmt.Errorf("%s: %w", cmd, err)
	}
	return out, nil
}

func (c *Client) roundTrip(ctx context.Context, cmd string) (string, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.address)
	if err != nil {
		return "", dialError(c, err)
	}
	defer conn.Close()
	// The context (with the timeout above) is the only deadline: when it
	// ends, a past deadline stops the write or read, and ctx.Err() says why.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return "", fmt.Errorf("%w: %s: writing %q: %w", ErrSocket, c, cmd, err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return "", fmt.Errorf("%w: %s: reading the answer to %q: %w", ErrSocket, c, cmd, err)
	}
	return string(b), nil
}

func dialError(c *Client, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w: %w: %s: %w", ErrSocket, ErrPermission, c, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: %s: no such socket (is HAProxy running with \"stats socket\"?): %w", ErrSocket, c, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrSocket, c, err)
}

// answerError recognises HAProxy's error answers (2.x wording).
func answerError(out string) error {
	first, _, _ := strings.Cut(strings.TrimLeft(out, "\n"), "\n")
	first = strings.TrimSpace(first)
	switch {
	case first == "":
		return nil
	case strings.HasPrefix(first, "No such server"):
		return fmt.Errorf("%w (HAProxy: %s)", ErrNoServer, first)
	case strings.HasPrefix(first, "No such backend"), strings.HasPrefix(first, "No such proxy"):
		return fmt.Errorf("%w (HAProxy: %s)", ErrNoBackend, first)
	case strings.HasPrefix(first, "Permission denied"):
		return fmt.Errorf("%w (HAProxy: %s; the stats socket needs \"level admin\")", ErrPermission, first)
	case strings.HasPrefix(first, "Unknown command"):
		return fmt.Errorf("%w (HAProxy: %s)", ErrCommand, first)
	}
	return nil
}

// set runs a state-changing command, whose only good answer is an empty one.
func (c *Client) set(ctx context.Context, cmd string) error {
	out, err := c.Command(ctx, cmd)
	if err != nil {
		return err
	}
	if msg := strings.TrimSpace(out); msg != "" {
		return fmt.Errorf("%s: %w (HAProxy: %s)", cmd, ErrCommand, firstLine(msg))
	}
	c.log().Debug("haproxy", "cmd", cmd)
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// checkName refuses a backend or server name that HAProxy could not have
// (its names are letters, digits, '-', '_', '.' and ':'), so that nothing
// else can reach the command line: the API splits words on spaces and
// commands on ';'.
func checkName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty %s name", ErrInvalid, kind)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '-', r == '_', r == '.', r == ':':
		default:
			return fmt.Errorf("%w: %s name %q (HAProxy names are letters, digits, '-', '_', '.', ':')", ErrInvalid, kind, name)
		}
	}
	return nil
}

func checkNames(backend, server string) error {
	if err := checkName("backend", backend); err != nil {
		return err
	}
	return checkName("server", server)
}

// SetWeight sets the weight (0..MaxWeight) of server in backend: with
// roundrobin or leastconn balancing, the share of new requests it gets is
// its weight over the sum of the backend's weights; 0 sends it none.
func (c *Client) SetWeight(ctx context.Context, backend, server string, weight int) error {
	if err := checkNames(backend, server); err != nil {
		return err
	}
	if weight < 0 || weight > MaxWeight {
		return fmt.Errorf("%w: weight %d (0..%d)", ErrInvalid, weight, MaxWeight)
	}
	return c.set(ctx, "set server "+backend+"/"+server+" weight "+strconv.Itoa(weight))
}

// SetState sets the administrative state of server in backend: Ready,
// Drain (no new traffic, health checks go on) or Maint (no traffic, no
// checks).
func (c *Client) SetState(ctx context.Context, backend, server string, state State) error {
	if err := checkNames(backend, server); err != nil {
		return err
	}
	switch state {
	case Ready, Drain, Maint:
	default:
		return fmt.Errorf("%w: state %q (ready, drain or maint)", ErrInvalid, state)
	}
	return c.set(ctx, "set server "+backend+"/"+server+" state "+string(state))
}

// Servers returns the servers of backend, in configuration order, from
// `show stat BACKEND 4 -1`.
func (c *Client) Servers(ctx context.Context, backend string) ([]Server, error) {
	if err := checkName("backend", backend); err != nil {
		return nil, err
	}
	out, err := c.Command(ctx, "show stat "+backend+" 4 -1")
	if err != nil {
		return nil, err
	}
	return parseStat(out, backend)
}

// Server returns one server of backend.
func (c *Client) Server(ctx context.Context, backend, server string) (Server, error) {
	if err := checkNames(backend, server); err != nil {
		return Server{}, err
	}
	all, err := c.Servers(ctx, backend)
	if err != nil {
		return Server{}, err
	}
	for _, s := range all {
		if s.Name == server {
			return s, nil
		}
	}
	return Server{}, fmt.Errorf("%w: %s/%s", ErrNoServer, backend, server)
}
