// Package store opens gxconf's database: SQLite (WAL, through mattn/go-sqlite3)
// by default, PostgreSQL for highly available setups, both through
// go.mau.fi/util/dbutil. Each package that keeps state owns its tables through
// its own version table and embedded numbered migrations (dbutil upgrade
// tables); this package only opens the pool and records the database owner.
//
// It must not import any other gxconf package.
package store
