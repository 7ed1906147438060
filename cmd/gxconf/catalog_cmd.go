package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gxfs-conf/gxconf/catalog"
	"github.com/gxfs-conf/gxconf/config"
)

// cmdCatalog runs `gxconf catalog export`: it issues the catalogue's
// credentials and writes them as files for the XFSC Federated Catalogue.
func cmdCatalog(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		return &usageError{"usage: gxconf catalog export -c config.yaml -o dir"}
	}
	fs := flag.NewFlagSet("catalog export", flag.ContinueOnError)
	cfgPath := fs.String("c", "config.yaml", "config file")
	out := fs.String("o", "catalog-export", "output directory")
	if err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		return err
	}
	if !cfg.Catalog.Enabled {
		return fmt.Errorf("catalog.enabled is false in %s", *cfgPath)
	}
	files, err := catalog.Export(cfg.Catalog, *out, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d upload(s) for the XFSC catalogue to %s (manifest.json, upload.sh, did.json)\n", len(files), *out)
	return nil
}
