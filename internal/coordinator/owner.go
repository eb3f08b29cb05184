package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// OwnerKind says what kind of process an owner is. Owners name the
// processes that run buildsets and hold semaphores (store.Buildset.Owner,
// the semaphore leases, the bastion's tags).
type OwnerKind string

const (
	// OwnerNode is a `sortie serve`: its buildsets are adopted and resumed
	// by its successor when it dies.
	OwnerNode OwnerKind = "node"
	// OwnerRun is a `sortie run`: it has no successor, so when it dies its
	// buildsets are ended (reaped), never resumed.
	OwnerRun OwnerKind = "run"
)

// idPrefix is how each kind is spelt at the start of an owner id, until
// the store keeps the kind in a column of its own (issue 12, step 3): then
// NewOwner and KindOf are the only code that changes.
var idPrefix = map[OwnerKind]string{OwnerNode: "srv-", OwnerRun: "run-"}

// NewOwner names a new process of kind in the store and on the bastion: a
// prefix for its kind and 16 random hex digits. It panics on an unknown
// kind, a programmer's error.
func NewOwner(kind OwnerKind) string {
	prefix, ok := idPrefix[kind]
	if !ok {
		panic("coordinator: unknown owner kind " + string(kind))
	}
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// KindOf says what kind of process owner is: OwnerRun for a `sortie run`,
// OwnerNode for any other owner (a server, or an id this code did not
// make, which is then left for a successor like a server's rather than
// reaped), "" for no owner. It is the one place that reads the kind of an
// owner, so that the step that keeps kinds in the store changes only this.
func KindOf(owner string) OwnerKind {
	switch {
	case owner == "":
		return ""
	case strings.HasPrefix(owner, idPrefix[OwnerRun]):
		return OwnerRun
	}
	return OwnerNode
}
