package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlName returns the YAML key of a struct field and whether it is inlined.
// Fields without a yaml tag use the lower-cased field name, as yaml.v3 does.
func yamlName(f reflect.StructField) (name string, inline, skip bool) {
	tag := f.Tag.Get("yaml")
	if tag == "-" || !f.IsExported() {
		return "", false, true
	}
	parts := strings.Split(tag, ",")
	name = parts[0]
	for _, opt := range parts[1:] {
		if opt == "inline" {
			inline = true
		}
	}
	if name == "" && !inline {
		name = strings.ToLower(f.Name)
	}
	return name, inline, false
}

// fieldByKey finds the (possibly inlined) struct field for a YAML key and returns
// its index path.
func fieldByKey(t reflect.Type, key string) ([]int, reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline, skip := yamlName(f)
		if skip {
			continue
		}
		if inline {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if idx, typ, ok := fieldByKey(ft, key); ok {
					return append([]int{i}, idx...), typ, true
				}
			}
			continue
		}
		if name == key {
			return []int{i}, f.Type, true
		}
	}
	return nil, nil, false
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// isLeaf reports whether t is decoded from a scalar rather than walked.
func isLeaf(t reflect.Type) bool {
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return true
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice, reflect.Array:
		return false
	case reflect.Pointer:
		return isLeaf(t.Elem())
	}
	return true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// checkNode walks a YAML node against the Go type it will be decoded into and
// reports every unknown key and every scalar that does not fit its field, each
// named by its dotted key.
func checkNode(n *yaml.Node, t reflect.Type, path string, problems *[]string) {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			checkNode(c, t, path, problems)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Tag == "!!null" {
		return
	}
	if isLeaf(t) {
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			if t.Kind() == reflect.String && !t.Implements(unmarshalerType) && !reflect.PointerTo(t).Implements(unmarshalerType) {
				// Strings hold the secrets (api_secret, sfu.keys, …), and
				// yaml.v3 quotes the refused value ("cannot decode !!str
				// `…` as a !!int"): name the key only.
				*problems = append(*problems, fmt.Sprintf("%s: must be a string; quote the value (line %d)", path, n.Line))
				return
			}
			*problems = append(*problems, fmt.Sprintf("%s: %s (line %d)", path, leafError(err), n.Line))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*problems = append(*problems, fmt.Sprintf("%s: must be a mapping (line %d)", path, n.Line))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			_, ft, ok := fieldByKey(t, k.Value)
			if !ok {
				*problems = append(*problems, fmt.Sprintf("%s: unknown key (line %d)", join(path, k.Value), k.Line))
				continue
			}
			checkNode(v, ft, join(path, k.Value), problems)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			*problems = append(*problems, fmt.Sprintf("%s: must be a mapping (line %d)", path, n.Line))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), problems)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			*problems = append(*problems, fmt.Sprintf("%s: must be a list (line %d)", path, n.Line))
			return
		}
		for i, c := range n.Content {
			checkNode(c, t.Elem(), path+"["+strconv.Itoa(i)+"]", problems)
		}
	}
}

// anchorName is the anchor yaml.v3 quotes in "unknown anchor '…'
// referenced" and "anchor '…' value contains itself".
var anchorName = regexp.MustCompile(`anchor '[^']*'`)

// syntaxError is yaml.v3's error for a file that does not parse, without
// the names of anchors.
func syntaxError(err error) string {
	return withoutAnchors(strings.TrimPrefix(err.Error(), "yaml: "))
}

// withoutAnchors leaves the names of anchors out of a yaml.v3 message: an
// unquoted secret starting with '*' is read as an alias, and its "anchor"
// would be quoted.
func withoutAnchors(msg string) string {
	if anchorName.MatchString(msg) {
		msg = anchorName.ReplaceAllLiteralString(msg, "anchor") + " (a value starting with '*' or '&' must be quoted)"
	}
	return msg
}

// leafError turns yaml.v3's "line N: cannot unmarshal ..." into a short phrase.
func leafError(err error) string {
	msg := err.Error()
	if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "line ") {
		msg = msg[i+2:]
	}
	return withoutAnchors(msg)
}

// setByPath decodes value (a YAML scalar or flow collection) into the field of
// root named by the lower-case key path. It reports false if no such key exists.
func setByPath(root reflect.Value, path []string, value string) (found bool, err error) {
	v := root
	for i, key := range path {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Struct:
			idx, _, ok := fieldByKey(v.Type(), key)
			if !ok {
				return false, nil
			}
			v = v.FieldByIndex(idx)
		case reflect.Map:
			if i != len(path)-1 || !isLeaf(v.Type().Elem()) {
				return false, nil
			}
			if v.IsNil() {
				v.Set(reflect.MakeMap(v.Type()))
			}
			elem := reflect.New(v.Type().Elem())
			if v.Type().Elem() == reflect.TypeFor[string]() {
				// Verbatim, as a string field below: a map's strings are
				// secrets too (sfu.keys), and YAML would misread one
				// starting with '*', '&', '!' or '#' and quote it in its
				// error ("unknown anchor '…' referenced").
				elem.Elem().SetString(value)
			} else if err := yaml.Unmarshal([]byte(value), elem.Interface()); err != nil {
				return true, fmt.Errorf("%s", leafError(err))
			}
			v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem.Elem())
			return true, nil
		default:
			return false, nil
		}
	}
	if v.Kind() == reflect.String {
		// Strings are taken verbatim: a secret such as "yes" or "0x12" must not be
		// reinterpreted by YAML.
		v.SetString(value)
		return true, nil
	}
	fresh := reflect.New(v.Type())
	if err := yaml.Unmarshal([]byte(value), fresh.Interface()); err != nil {
		return true, fmt.Errorf("%s", leafError(err))
	}
	v.Set(fresh.Elem())
	return true, nil
}

// mapEntry reports whether the key path ends in an entry of a map.
func mapEntry(t reflect.Type, path []string) bool {
	for _, key := range path[:len(path)-1] {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		_, ft, ok := fieldByKey(t, key)
		if !ok {
			return false
		}
		t = ft
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Map
}
