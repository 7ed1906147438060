package clip

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestQuote(t *testing.T) {
	require.Equal(t, `"room_id"`, Quote("room_id"))
	require.Equal(t, `"a\nb\x00"`, Quote("a\nb\x00"))
	long := Quote(strings.Repeat("x", 1<<20))
	require.Equal(t, `"`+strings.Repeat("x", QuoteMax)+`"… (1048576 bytes)`, long)
	// A cut never splits a character.
	q := Quote(strings.Repeat("ä", 1000))
	require.True(t, utf8.ValidString(q))
	require.Less(t, len(q), 2*QuoteMax)
	require.NotContains(t, q, `\x`)
}

func TestText(t *testing.T) {
	require.Equal(t, "ok", Text("ok", 10))
	require.Equal(t, "a\uFFFDb\uFFFD", Text("a\nb\r", 10))
	require.Equal(t, "\uFFFD", Text("\xff", 10))
	got := Text(strings.Repeat("€", 100), 10)
	require.Equal(t, "€€€…", got)
	// Replacements are 3 bytes each: the bound is the returned text's.
	got = Text(strings.Repeat("\x00", 10), 10)
	require.Equal(t, "\uFFFD\uFFFD\uFFFD…", got)
}
