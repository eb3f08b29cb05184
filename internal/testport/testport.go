// Package testport gives tests a loopback address for a server they stop
// and start again on it (a crash test's `sortie serve`, a chaos test's
// nodes). A port picked by listening on 127.0.0.1:0 comes from the
// kernel's ephemeral range, the range outgoing connections take their
// local ports from: while the server is down, any connection the tests
// running beside it open may take that port, and the server's restart
// then fails with "address already in use". A port below that range is
// never taken so.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// floor is the lowest port handed out: above the ports services keep.
const floor = 20000

var (
	mu     sync.Mutex
	handed = map[int]bool{} // within this test binary
)

// Addr returns 127.0.0.1:<port>, with a port free when returned, below the
// ephemeral range, and not returned before by this process.
func Addr(t testing.TB) string {
	t.Helper()
	ceiling := ephemeralFloor()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		port := floor + rand.IntN(ceiling-floor)
		if handed[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		ln.Close()
		handed[port] = true
		return addr
	}
	t.Fatalf("testport: no free port between %d and %d", floor, ceiling)
	return ""
}

// ephemeralFloor is the first port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralFloor() int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var hi int
		if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
			lo = 32768
		}
	}
	if lo < floor+1000 {
		lo = floor + 1000 // a range set low: take what is left below it
	}
	return lo
}
