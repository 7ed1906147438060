// Command schemagen turns a Kubernetes API server's OpenAPI v2 document
// (`kubectl get --raw /openapi/v2`) into the standalone JSON schemas
// kubeconform reads, offline:
//
//	schemagen -in openapi.json -out DIR -version v1.34.2
//
// writes DIR/v1.34.2-standalone{,-strict}/<kind>[-<group>]-<version>.json.
// References are inlined (a reference cycle, such as JSONSchemaProps, becomes
// an open schema), int-or-string and quantities accept strings and numbers,
// and the strict variant forbids properties the API does not define.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

func main() {
	in := flag.String("in", "", "OpenAPI v2 document")
	out := flag.String("out", "", "output directory")
	version := flag.String("version", "", "Kubernetes version, e.g. v1.34.2")
	flag.Parse()
	if *in == "" || *out == "" || *version == "" {
		flag.Usage()
		os.Exit(2)
	}
	n, err := run(*in, *out, *version)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
	fmt.Printf("schemagen: %d schemas per variant in %s\n", n, *out)
}

func run(in, out, version string) (int, error) {
	raw, err := os.ReadFile(in)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, err
	}
	n := 0
	for _, strict := range []bool{false, true} {
		dir := filepath.Join(out, version+"-standalone")
		if strict {
			dir += "-strict"
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
		n = 0
		for name, def := range doc.Definitions {
			var kinds []gvk
			if x, ok := def["x-kubernetes-group-version-kind"]; ok {
				b, _ := json.Marshal(x)
				_ = json.Unmarshal(b, &kinds)
			}
			if len(kinds) == 0 {
				continue
			}
			c := conv{defs: doc.Definitions, strict: strict, stack: map[string]bool{name: true}}
			s := c.schema(def)
			s["$schema"] = "http://json-schema.org/schema#"
			b, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				return 0, err
			}
			for _, k := range kinds {
				file := strings.ToLower(k.Kind)
				if k.Group != "" {
					file += "-" + strings.Split(k.Group, ".")[0]
				}
				file += "-" + k.Version + ".json"
				if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
					return 0, err
				}
				n++
			}
		}
	}
	return n, nil
}

type conv struct {
	defs   map[string]map[string]any
	strict bool
	stack  map[string]bool
}

// schema copies s with references inlined and Kubernetes specifics mapped.
func (c *conv) schema(s map[string]any) map[string]any {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		switch name {
		case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		case "io.k8s.apimachinery.pkg.api.resource.Quantity":
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
		}
		def, ok := c.defs[name]
		if !ok || c.stack[name] {
			return map[string]any{} // unknown or cyclic: accept anything here
		}
		c.stack[name] = true
		defer delete(c.stack, name)
		return c.schema(def)
	}
	out := map[string]any{}
	for k, v := range s {
		switch {
		case strings.HasPrefix(k, "x-kubernetes-"), k == "format", k == "description":
			continue
		case k == "properties":
			props := map[string]any{}
			for pk, pv := range v.(map[string]any) {
				props[pk] = c.schema(pv.(map[string]any))
			}
			out[k] = props
		case k == "items" || k == "additionalProperties":
			if m, ok := v.(map[string]any); ok {
				out[k] = c.schema(m)
			} else {
				out[k] = v
			}
		case k == "allOf" || k == "oneOf" || k == "anyOf":
			var l []any
			for _, e := range v.([]any) {
				l = append(l, c.schema(e.(map[string]any)))
			}
			out[k] = l
		default:
			out[k] = v
		}
	}
	if f, _ := s["format"].(string); f == "int-or-string" {
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	}
	if _, ok := out["properties"]; ok && c.strict {
		if _, set := out["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	// Optional values may be null in YAML (helm renders empty keys as null).
	if t, ok := out["type"].(string); ok && (t == "object" || t == "array" || t == "string") {
		out["type"] = []any{t, "null"}
	}
	return out
}
