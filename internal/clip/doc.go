// Package clip bounds request text that error messages and log lines
// quote: a client's field name or value is named by at most a short,
// printable prefix, so an error answers with the field and a hint of the
// value instead of echoing (up to) the whole request back.
package clip
