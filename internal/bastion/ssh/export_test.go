package ssh

// KeepaliveMisses is how many keepalive intervals an answer may take.
const KeepaliveMisses = keepaliveMisses

// KeepaliveEvent is what a test hears of a keepalive request.
type KeepaliveEvent = keepaliveEvent

// Keepalives makes b tell the returned channel of every keepalive request
// it sends, and then of how it ended. Events that find the channel full
// are dropped. Call it before b's first connection.
func (b *Bastion) Keepalives() <-chan KeepaliveEvent {
	ch := make(chan keepaliveEvent, 1000)
	b.mu.Lock()
	b.keepalives = ch
	b.mu.Unlock()
	return ch
}
