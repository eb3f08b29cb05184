package logs

// Redact returns s with every occurrence of a secret value replaced by
// Redacted, as a Writer redacts a log line: for text that does not go
// through a log (a forge's error message kept in the store). Empty secrets
// are ignored; a secret of several lines is redacted line by line.
func Redact(s string, secrets []string) string {
	lw := NewWriter(nil, secrets, nil)
	if len(lw.secrets) == 0 {
		return s
	}
	line := []byte(s)
	mask := lw.mask(line)
	out := make([]byte, 0, len(line))
	for i := 0; i < len(line); {
		if !mask[i] {
			out = append(out, line[i])
			i++
			continue
		}
		for i < len(line) && mask[i] {
			i++
		}
		out = append(out, Redacted...)
	}
	return string(out)
}
