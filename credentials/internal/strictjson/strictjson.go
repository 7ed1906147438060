// Package strictjson decodes untrusted JSON for the credentials package and
// its sub-packages with one set of rules: a member name may appear only once
// per object (RFC 8259 §4 leaves duplicates to the implementation, and two
// implementations reading different values of one signed claim is a
// signature bypass), nesting is bounded by MaxDepth for every format, and
// nothing may follow the value. Numbers decode as float64, as with
// encoding/json into an interface.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxDepth is the deepest nesting of objects and arrays accepted in any
// credential, presentation, JOSE header, JWT payload, SD-JWT disclosure,
// DID document or status list (the top-level value counts as depth 1).
const MaxDepth = 32

// Errors returned by Decode; callers wrap them in their own sentinels.
var (
	ErrDuplicateName = errors.New("duplicate member name")
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
func Unmarshal(data []byte, v any) error {
	raw, err := Decode(data)
	if err != nil {
		return err
	}
	if err := checkFoldedNames(raw, 0); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return nil
}

func checkFoldedNames(v any, depth int) error {
	switch t := v.(type) {
	case map[string]any:
		seen := make(map[string]string, len(t))
		for k, e := range t {
			f := strings.ToLower(k)
			if other, dup := seen[f]; dup {
				return fmt.Errorf("%w: %q and %q", ErrDuplicateName, other, k)
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
				return nil, fmt.Errorf("%w: %q", ErrDuplicateName, k)
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
