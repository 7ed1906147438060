package clip

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// QuoteMax is the most bytes of a value Quote shows.
const QuoteMax = 48

// Quote returns s as a Go-quoted string (control characters and invalid
// UTF-8 escaped, so the result is one printable line) of at most
// QuoteMax bytes of s; a longer s is cut at a character boundary, marked
// with "…" and followed by its length in bytes.
func Quote(s string) string {
	if len(s) <= QuoteMax {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(prefix(s, QuoteMax)), len(s))
}

// Text returns s with control characters replaced by U+FFFD, cut at a
// character boundary to at most max bytes (plus "…" when it was cut): for
// whole messages that may carry request text.
func Text(s string, max int) string {
	cut := len(s) > max
	if cut {
		s = prefix(s, max)
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > max {
		// U+FFFD is 3 bytes, what it replaced may have been 1: the
		// bound holds for the text returned, not only the text read.
		s, cut = prefix(s, max), true
	}
	if cut {
		s += "…"
	}
	return s
}

// prefix is s cut to at most n bytes at the start of a UTF-8 sequence.
func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
