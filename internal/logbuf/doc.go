// Package logbuf is a log sink for tests: a buffer that a logger writes from
// several goroutines while the test reads it.
package logbuf
