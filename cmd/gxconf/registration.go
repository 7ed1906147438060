package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gxfs-conf/gxconf/appservice"
	"github.com/gxfs-conf/gxconf/config"
)

// cmdGenerateRegistration writes registration.yaml with fresh tokens.
func cmdGenerateRegistration(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("generate-registration", flag.ContinueOnError)
	cfgPath := fs.String("c", "config.yaml", "config file")
	regPath := fs.String("r", "registration.yaml", "registration file to write")
	force := fs.Bool("force", false, "overwrite an existing registration (rotates the tokens)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return err
	}
	if config.IsPlaceholderDomain(cfg.Homeserver.Domain) {
		return fmt.Errorf("homeserver.domain is the placeholder %q; set your server_name first", cfg.Homeserver.Domain)
	}
	if _, err := os.Stat(*regPath); err == nil && !*force {
		return fmt.Errorf("%s exists; pass -force to replace it (the homeserver must then load the new tokens)", *regPath)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	reg := appservice.NewRegistration(cfg.Appservice, cfg.Homeserver.Domain)
	// Save writes with mode 0600: the file holds both tokens.
	if err := reg.Save(*regPath); err != nil {
		return fmt.Errorf("failed to write %s: %w", *regPath, err)
	}
	if err := os.Chmod(*regPath, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s (mode 0600) for %s, bot @%s:%s, url %s.\n", *regPath, cfg.Homeserver.Domain,
		reg.SenderLocalpart, cfg.Homeserver.Domain, reg.URL)
	fmt.Fprintf(stdout, "Add it to the homeserver (Synapse: app_service_config_files; Dendrite: app_service_api.config_files) and restart it.\n")
	return nil
}
