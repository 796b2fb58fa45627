package schema

import "strings"

// splitStatements splits CQL text into statements at semicolons outside string literals,
// quoted identifiers and comments ("--", "//", "/* */"). Comments are removed; empty statements
// are dropped. Dollar-quoted ($$) bodies are not supported: migrations do not define functions.
func splitStatements(text string) []string {
	var (
		out []string
		cur strings.Builder
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\'' || c == '"':
			// A quote inside a literal is doubled ('it''s'), which this loop reads as two literals.
			j := strings.IndexByte(text[i+1:], c)
			if j < 0 {
				cur.WriteString(text[i:])
				i = len(text)
				continue
			}
			cur.WriteString(text[i : i+j+2])
			i += j + 1
		case c == '-' && i+1 < len(text) && text[i+1] == '-', c == '/' && i+1 < len(text) && text[i+1] == '/':
			j := strings.IndexByte(text[i:], '\n')
			if j < 0 {
				i = len(text)
				continue
			}
			i += j - 1
		case c == '/' && i+1 < len(text) && text[i+1] == '*':
			j := strings.Index(text[i+2:], "*/")
			if j < 0 {
				i = len(text)
				continue
			}
			i += j + 3
			cur.WriteByte(' ')
		case c == ';':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}
