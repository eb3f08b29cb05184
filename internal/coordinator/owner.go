package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"os"
)

// NewOwner names a new process incarnation in the store and on the
// bastion: "o-" and 16 random hex digits. Its kind, node, host and state
// dir are data, registered with it (store.Owners), never read from the id.
func NewOwner() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "o-" + hex.EncodeToString(b)
}

// hostname is this host's name, "" when it cannot be had.
func hostname() string {
	h, _ := os.Hostname()
	return h
}
