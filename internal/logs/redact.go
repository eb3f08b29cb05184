package logs

// Redact returns s with every occurrence of a secret value replaced by
// Redacted, as a Writer redacts a log line: for text that does not go
// through a log (a forge's error message kept in the store). Empty secrets
// are ignored; a secret of several lines is redacted line by line.
func Redact(s string, secrets []string) string {
	return NewWriter(nil, secrets, nil).Redact(s)
}
