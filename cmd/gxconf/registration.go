package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
	data, err := reg.YAML()
	if err != nil {
		return err
	}
	if err := writeSecretFile(*regPath, []byte(data)); err != nil {
		return fmt.Errorf("failed to write %s: %w", *regPath, err)
	}
	fmt.Fprintf(stdout, "Wrote %s (mode 0600) for %s, bot @%s:%s, url %s.\n", *regPath, cfg.Homeserver.Domain,
		reg.SenderLocalpart, cfg.Homeserver.Domain, reg.URL)
	fmt.Fprintf(stdout, "Add it to the homeserver (Synapse: app_service_config_files; Dendrite: app_service_api.config_files) and restart it.\n")
	return nil
}

// writeSecretFile puts data at path as a new file of mode 0600, renamed over
// whatever was there. Rewriting an existing file in place (-force over the
// committed template, mode 0644) left the tokens readable by others until a
// chmod after the write, and readable at any time through a descriptor
// opened before.
func writeSecretFile(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
