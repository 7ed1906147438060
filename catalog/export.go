package catalog

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ExportFile is one file of an export and how to upload it to the XFSC
// Federated Catalogue (openapi/fc_openapi.yaml: POST /assets takes a
// VC-JWT as application/vc+jwt; POST /schemas takes Turtle as text/turtle).
type ExportFile struct {
	File        string `json:"file"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	ContentType string `json:"content_type"`
	Kind        string `json:"kind"`
	ID          string `json:"id,omitempty"`
}

// Export issues the catalogue of cfg and writes it to dir, ready for the
// XFSC catalogue: one .jwt per credential, the SHACL shape, the DID
// document (to host at /.well-known/did.json), manifest.json and upload.sh.
// The shape goes first so that tier credentials validate against it.
func Export(cfg Config, dir string, now time.Time) ([]ExportFile, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	signer, alg, err := loadKey(cfg.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	did, err := DIDWeb(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	key := &providerKey{signer: signer, alg: alg, did: did, kid: did + "#key-1", x5u: cfg.X5U}
	cat, err := buildCatalogue(cfg, key, now)
	if err != nil {
		return nil, err
	}
	doc, err := key.didDocument()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	write := func(name string, data []byte) error {
		return os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	files := []ExportFile{{File: "conference-tier-shape.ttl", Method: "POST", Path: "/schemas", ContentType: "text/turtle", Kind: "shape"}}
	if err := write("conference-tier-shape.ttl", []byte(cat.Shape)); err != nil {
		return nil, err
	}
	for i, cr := range cat.Creds {
		name := fmt.Sprintf("%03d-%s.jwt", i+1, cr.Name)
		if err := write(name, []byte(cr.JWT)); err != nil {
			return nil, err
		}
		files = append(files, ExportFile{File: name, Method: "POST", Path: "/assets", ContentType: "application/vc+jwt", Kind: cr.Kind, ID: cr.ID})
	}
	if err := write("did.json", doc); err != nil {
		return nil, err
	}
	manifest, err := json.MarshalIndent(map[string]any{"did": did, "uploads": files}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := write("manifest.json", manifest); err != nil {
		return nil, err
	}
	var sh strings.Builder
	sh.WriteString("#!/bin/sh\n# Uploads gxconf's catalogue to an XFSC Federated Catalogue.\n")
	sh.WriteString("# CAT_URL: the catalogue's base URL; CAT_TOKEN: a bearer token of its Keycloak realm.\n")
	sh.WriteString("# Host did.json at " + strings.TrimRight(cfg.BaseURL, "/") + "/.well-known/did.json first.\nset -eu\ncd \"$(dirname \"$0\")\"\n")
	for _, f := range files {
		fmt.Fprintf(&sh, "curl -fsS -X %s -H \"Authorization: Bearer $CAT_TOKEN\" -H 'Content-Type: %s' --data-binary @%s \"$CAT_URL%s\"\n", f.Method, f.ContentType, f.File, f.Path)
	}
	if err := os.WriteFile(filepath.Join(dir, "upload.sh"), []byte(sh.String()), 0o755); err != nil {
		return nil, err
	}
	return files, nil
}
