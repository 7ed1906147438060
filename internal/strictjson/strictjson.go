package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"

	"github.com/gxfs-conf/gxconf/internal/clip"
)

// MaxDepth is the deepest nesting of objects and arrays accepted in any
// credential, presentation, JOSE header, JWT payload, SD-JWT disclosure,
// DID document or status list (the top-level value counts as depth 1).
const MaxDepth = 32

// Errors returned by Decode, Unmarshal (which adds ErrSpelling) and
// UnmarshalKnown (which adds ErrUnknownName); callers wrap them in their own
// sentinels.
var (
	ErrDuplicateName = errors.New("duplicate member name")
	ErrSpelling      = errors.New("member name spelled differently from the field's")
	ErrUnknownName   = errors.New("unknown field")
	ErrTooDeep       = errors.New("nesting too deep")
	ErrSyntax        = errors.New("invalid JSON")
)

// Decode parses one JSON value under the package's rules.
func Decode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON value", ErrSyntax)
	}
	return v, nil
}

// DecodeObject parses a JSON object under the package's rules.
func DecodeObject(data []byte) (map[string]any, error) {
	v, err := Decode(data)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrSyntax)
	}
	return m, nil
}

// Unmarshal checks data under the package's rules and then decodes it into
// v with encoding/json. Because encoding/json matches struct field names
// case-insensitively, an object holding two spellings of one of v's field
// names (for example "alg" and "ALG") is refused as a duplicate as well.
// A member that encoding/json would match to a struct field only by
// folding case is refused (ErrSpelling); members no field takes are
// ignored, as with encoding/json.
func Unmarshal(data []byte, v any) error {
	return unmarshal(data, v, false)
}

// UnmarshalKnown is Unmarshal that also refuses members no field takes
// (ErrUnknownName, with the member's path): for documents whose every
// member this program defines.
func UnmarshalKnown(data []byte, v any) error {
	return unmarshal(data, v, true)
}

func unmarshal(data []byte, v any, known bool) error {
	raw, err := Decode(data)
	if err != nil {
		return err
	}
	if err := checkFoldedNames(raw, 0); err != nil {
		return err
	}
	if err := checkSpelling(raw, reflect.TypeOf(v), known, ""); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if known {
		dec.DisallowUnknownFields() // encoding/json's own view as well
	}
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkSpelling walks a value from Decode along the type it is decoded
// into: every member of an object bound for a struct must be one of the
// struct's JSON names exactly. Types that decode themselves
// (json.Unmarshaler) and interfaces are not looked into.
func checkSpelling(raw any, t reflect.Type, known bool, path string) error {
	if t == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		if t.Implements(jsonUnmarshaler) {
			return nil
		}
		t = t.Elem()
	}
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			return nil // a type mismatch: encoding/json reports it
		}
		fields := jsonFields(t)
		for k, e := range m {
			ft, ok := fields[k]
			if !ok {
				for name := range fields {
					if strings.EqualFold(name, k) {
						return fmt.Errorf("%w: %s for %s", ErrSpelling, clip.Quote(path+k), clip.Quote(path+name))
					}
				}
				if known {
					return fmt.Errorf("%w %s", ErrUnknownName, clip.Quote(path+k))
				}
				continue
			}
			if err := checkSpelling(e, ft, known, path+k+"."); err != nil {
				return err
			}
		}
	case reflect.Map:
		if m, ok := raw.(map[string]any); ok {
			for k, e := range m {
				if err := checkSpelling(e, t.Elem(), known, path+k+"."); err != nil {
					return err
				}
			}
		}
	case reflect.Slice, reflect.Array:
		if l, ok := raw.([]any); ok {
			for i, e := range l {
				if err := checkSpelling(e, t.Elem(), known, fmt.Sprintf("%s%d.", path, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// jsonFields maps a struct's JSON member names to their types, with
// encoding/json's rules: the tag's name or the field's, "-" skipped,
// unexported fields skipped, an untagged embedded struct's fields promoted.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for _, f := range reflect.VisibleFields(t) {
		if underTaggedEmbedding(t, f.Index) {
			continue // a tagged embedded struct is one member; nothing is promoted from it
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				continue // its fields are listed on their own
			}
		}
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, taken := fields[name]; !taken || len(f.Index) == 1 {
			fields[name] = f.Type
		}
	}
	fieldCache.Store(t, fields)
	return fields
}

// underTaggedEmbedding tells whether the field at index is reached through
// an embedded struct that has a JSON name of its own.
func underTaggedEmbedding(t reflect.Type, index []int) bool {
	for i := 1; i < len(index); i++ {
		if name, _, _ := strings.Cut(t.FieldByIndex(index[:i]).Tag.Get("json"), ","); name != "" {
			return true
		}
	}
	return false
}

// fieldCache holds jsonFields per struct type (read-only once stored).
var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

func checkFoldedNames(v any, depth int) error {
	switch t := v.(type) {
	case map[string]any:
		seen := make(map[string]string, len(t))
		for k, e := range t {
			f := strings.ToLower(k)
			if other, dup := seen[f]; dup {
				return fmt.Errorf("%w: %s and %s", ErrDuplicateName, clip.Quote(other), clip.Quote(k))
			}
			seen[f] = k
			if err := checkFoldedNames(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := checkFoldedNames(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxErr(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	if depth+1 > MaxDepth {
		return nil, fmt.Errorf("%w: more than %d levels", ErrTooDeep, MaxDepth)
	}
	switch d {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, syntaxErr(err)
			}
			k, ok := kt.(string)
			if !ok {
				return nil, fmt.Errorf("%w: object key is not a string", ErrSyntax)
			}
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("%w: %s", ErrDuplicateName, clip.Quote(k))
			}
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		if _, err := dec.Token(); err != nil {
			return nil, syntaxErr(err)
		}
		return m, nil
	case '[':
		l := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, syntaxErr(err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("%w: unexpected %v", ErrSyntax, d)
}

func syntaxErr(err error) error {
	if err == io.EOF {
		return fmt.Errorf("%w: unexpected end of input", ErrSyntax)
	}
	return fmt.Errorf("%w: %v", ErrSyntax, err)
}
