package ssh

import (
	"net"
	"syscall"
)

// quickAck makes the client acknowledge every segment at once. sshd turns
// Nagle's algorithm off only for sessions with a terminal; for ours it
// holds each small packet (exit status, EOF, close) until the previous one
// is acknowledged, and a delayed acknowledgement costs 40 ms each time:
// about 100 ms per build on loopback. Linux clears TCP_QUICKACK as it
// goes, so it is set again before every read.
type quickAck struct {
	*net.TCPConn
	raw syscall.RawConn
}

func withQuickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAck{TCPConn: tc, raw: raw}
}

func (q *quickAck) Read(p []byte) (int, error) {
	q.raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
	return q.TCPConn.Read(p)
}
