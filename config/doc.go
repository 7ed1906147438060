// Package config composes gxconf's YAML configuration from the sections each
// package owns, decodes it strictly (an unknown key is an error naming it),
// applies environment overrides (GXCONF_SECTION__KEY, and _FILE for secrets) and
// reports every problem at once, each by its dotted key.
//
// It is used by cmd/gxconf only; packages receive their own section.
package config
