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
