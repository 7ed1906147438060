package appservice

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Config is the `appservice:` section.
type Config struct {
	// Listen is where the homeserver pushes transactions.
	Listen string `yaml:"listen"`
	// Address is the URL the homeserver uses to reach Listen; it is written into
	// registration.yaml as url. Empty derives http://<listen>.
	Address string `yaml:"address"`
	// ID is the appservice ID in the registration.
	ID string `yaml:"id"`
	// Bot is the bot user (the registration's sender_localpart).
	Bot BotConfig `yaml:"bot"`
	// RoomsRegex is the registration's non-exclusive rooms namespace: the rooms
	// whose events the homeserver sends to gxconf even when the bot is not in
	// them. "!.*" polices every room; empty leaves only the rooms the bot joined.
	RoomsRegex string `yaml:"rooms_regex"`
	// CommandPrefix starts bot commands in a room.
	CommandPrefix string `yaml:"command_prefix"`
	// MaxTransactionBytes caps a transaction body.
	MaxTransactionBytes int64 `yaml:"max_transaction_bytes"`
}

// BotConfig describes the bot user.
type BotConfig struct {
	Username    string `yaml:"username"`
	Displayname string `yaml:"displayname"`
}

// DefaultConfig returns the defaults of the appservice section.
func DefaultConfig() Config {
	return Config{
		Listen:              "127.0.0.1:29333",
		ID:                  "gxconf",
		Bot:                 BotConfig{Username: "gxconf", Displayname: "gxconf calls"},
		RoomsRegex:          "!.*",
		CommandPrefix:       "!conf",
		MaxTransactionBytes: 32 << 20,
	}
}

var localpartRe = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

// Validate reports every problem, each named by its key within the section.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "must be host:port, got %q", c.Listen)
	}
	if c.Address != "" {
		if u, err := url.Parse(c.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("address", "must be an http(s) URL, got %q", c.Address)
		}
	}
	if c.ID == "" {
		bad("id", "must be set")
	}
	if !localpartRe.MatchString(c.Bot.Username) {
		bad("bot.username", "must be a Matrix localpart (lower-case letters, digits, ._=/+-), got %q", c.Bot.Username)
	}
	if c.RoomsRegex != "" {
		if _, err := regexp.Compile(c.RoomsRegex); err != nil {
			bad("rooms_regex", "not a regular expression: %v", err)
		}
	}
	if c.CommandPrefix == "" || strings.ContainsAny(c.CommandPrefix, " \t\n") {
		bad("command_prefix", "must be one word, got %q", c.CommandPrefix)
	}
	if c.MaxTransactionBytes < 1<<20 {
		bad("max_transaction_bytes", "must be at least 1048576, got %d", c.MaxTransactionBytes)
	}
	return errors.Join(errs...)
}

// URL is the address the homeserver should push transactions to.
func (c *Config) URL() string {
	if c.Address != "" {
		return strings.TrimRight(c.Address, "/")
	}
	return "http://" + c.Listen
}
