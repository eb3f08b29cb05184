package buildset

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// AppendIndented appends to b the report as json.MarshalIndent(r, "",
// "  ") writes it, byte for byte, without the encoder's reflection, its
// check of each time's text and its second pass to indent: a 10,000-build
// report (about 3 MB, `sortie run --report`) took tens of milliseconds
// after the last job. TestAppendIndented holds it to MarshalIndent.
func (r *Report) AppendIndented(b []byte) []byte {
	b = slices.Grow(b, 512+300*len(r.Builds)) // a build takes 250-300 bytes
	b = append(b, "{\n"...)
	b = field(b, "  ", "id", r.ID, true)
	b = field(b, "  ", "pipeline", r.Pipeline, true)
	b = field(b, "  ", "commit", r.Commit, true)
	b = field(b, "  ", "result", r.Result, true)
	if r.Error != "" {
		b = field(b, "  ", "error", r.Error, true)
	}
	b = timeField(b, "  ", "started_at", r.StartedAt)
	b = timeField(b, "  ", "finished_at", r.FinishedAt)
	if r.Check {
		b = append(b, "  \"check\": true,\n"...)
	}
	if r.Limit != "" {
		b = field(b, "  ", "limit", r.Limit, true)
	}
	switch {
	case r.Builds == nil:
		b = append(b, "  \"builds\": null\n"...)
	case len(r.Builds) == 0:
		b = append(b, "  \"builds\": []\n"...)
	default:
		b = append(b, "  \"builds\": [\n"...)
		for i, br := range r.Builds {
			b = append(b, "    {\n"...)
			b = field(b, "      ", "job", br.Job, true)
			b = field(b, "      ", "result", br.Result, true)
			b = append(b, "      \"attempt\": "...)
			b = strconv.AppendInt(b, int64(br.Attempt), 10)
			b = append(b, ",\n"...)
			b = timeField(b, "      ", "started_at", br.StartedAt)
			b = timeField(b, "      ", "finished_at", br.FinishedAt)
			b = field(b, "      ", "log", br.Log, true)
			b = field(b, "      ", "reason", br.Reason, false)
			b = append(b, "    }"...)
			if i < len(r.Builds)-1 {
				b = append(b, ',')
			}
			b = append(b, '\n')
		}
		b = append(b, "  ]\n"...)
	}
	return append(b, '}')
}

// field appends `<indent>"key": "value"`, a comma if more follows, and a
// new line.
func field(b []byte, indent, key, value string, more bool) []byte {
	b = append(b, indent...)
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, "\": "...)
	b = appendString(b, value)
	if more {
		b = append(b, ',')
	}
	return append(b, '\n')
}

// timeField is field for a Time, which is followed by more fields.
func timeField(b []byte, indent, key string, t Time) []byte {
	b = append(b, indent...)
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, "\": "...)
	if t.t == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = t.t.UTC().AppendFormat(b, TimeLayout)
		b = append(b, '"')
	}
	return append(b, ",\n"...)
}

// appendString appends s as encoding/json quotes it: as it is when it has
// nothing to escape (no control character, quote, backslash, HTML's <, >
// and &, U+2028, U+2029 nor invalid UTF-8), else by encoding/json itself.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			if c >= utf8.RuneSelf && plainUTF8(s[i:]) {
				break
			}
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainUTF8 says whether s, from its first non-ASCII byte on, is valid
// UTF-8 with nothing encoding/json escapes.
func plainUTF8(s string) bool {
	for _, c := range s {
		switch {
		case c == utf8.RuneError, c == '\u2028', c == '\u2029', c < 0x20, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
