package source

// Waiting is how many callers wait for the mirror's next fetch.
func (m *Mirror) Waiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.next == nil {
		return 0
	}
	return m.next.joins
}

// Found is found, for TestHaveBounded.
func (m *Mirror) Found(sha string) { m.found(sha) }

// Haves is how many commits m remembers having.
func (m *Mirror) Haves() int64 { return m.haves.Load() }

// MaxHave is maxHave.
const MaxHave = maxHave
