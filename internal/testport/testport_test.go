package testport

import (
	"net"
	"strconv"
	"testing"
)

// TestAddr: the addresses are free, distinct, and below the ephemeral
// range.
func TestAddr(t *testing.T) {
	ceiling := ephemeralFloor()
	seen := map[string]bool{}
	for range 50 {
		addr := Addr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < floor || port >= ceiling {
			t.Errorf("port %d, want it in [%d, %d)", port, floor, ceiling)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is not free: %v", addr, err)
		}
		ln.Close()
	}
}
