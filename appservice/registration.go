package appservice

import (
	"errors"
	"fmt"
	"regexp"

	"maunium.net/go/mautrix/appservice"
)

// placeholderToken marks the tokens of the committed registration template.
const placeholderToken = "CHANGE_ME"

// NewRegistration returns a registration for the homeserver with fresh random
// 64-character tokens: the bot as the exclusive user namespace and, if set,
// the rooms namespace so the homeserver sends the events of rooms to police.
func NewRegistration(cfg Config, domain string) *appservice.Registration {
	reg := appservice.CreateRegistration()
	reg.ID = cfg.ID
	reg.URL = cfg.URL()
	reg.SenderLocalpart = cfg.Bot.Username
	rateLimited := false
	reg.RateLimited = &rateLimited
	reg.Namespaces.UserIDs.Register(regexp.MustCompile("^@"+regexp.QuoteMeta(cfg.Bot.Username)+":"+regexp.QuoteMeta(domain)+"$"), true)
	if cfg.RoomsRegex != "" {
		reg.Namespaces.RoomIDs.Register(regexp.MustCompile(cfg.RoomsRegex), false)
	}
	return reg
}

// CheckRegistration refuses a registration that cannot work with cfg: template
// placeholders, short tokens, or a bot name that differs from the config.
func CheckRegistration(reg *appservice.Registration, cfg Config) error {
	var errs []error
	for name, tok := range map[string]string{"as_token": reg.AppToken, "hs_token": reg.ServerToken} {
		switch {
		case tok == "" || regexp.MustCompile(placeholderToken).MatchString(tok):
			errs = append(errs, fmt.Errorf("%s: still the template placeholder; run `gxconf generate-registration`", name))
		case len(tok) < 32:
			errs = append(errs, fmt.Errorf("%s: too short (%d characters); use at least 32", name, len(tok)))
		}
	}
	if reg.AppToken != "" && reg.AppToken == reg.ServerToken {
		errs = append(errs, errors.New("as_token and hs_token must differ"))
	}
	if reg.SenderLocalpart != cfg.Bot.Username {
		errs = append(errs, fmt.Errorf("sender_localpart: %q does not match appservice.bot.username %q", reg.SenderLocalpart, cfg.Bot.Username))
	}
	return errors.Join(errs...)
}
