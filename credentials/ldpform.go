package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/piprate/json-gold/ld"

	"github.com/gxfs-conf/gxconf/internal/strictjson"
)

// An ldp_vc / ldp_vp proof covers the canonical RDF of a document, not its
// JSON. JSON-LD has many JSON spellings of one RDF graph (absolute-IRI keys,
// "@id" for "id", value objects, inline contexts that map a term onto another
// IRI), yet the verifier reads type, dates, subject, claims and status from
// the JSON. So that what gxconf reads is what the issuer signed, a document is
// accepted only in one spelling: the compacted form of its own pinned
// contexts (checkCompactForm). Then every JSON member name is a term of a
// pinned, reviewed context and means the IRI that context gives it, and every
// value has the shape compaction gives it; the raw reader (parseW3CCredential)
// reads exactly the signed graph.
//
// This was chosen over reading every field from the expanded RDF because the
// policy, the trust registry and the stored attestations all speak in terms
// (type "EmployeeCredential", claim "sector"); mapping IRIs back to terms is
// compaction again, and it is only sound when the term definitions cannot
// come from the holder. Inline contexts are therefore refused outright: with
// an inline context the holder could define the term a policy reads (or the
// @vocab it derives from) to mean another signed IRI, and the round trip
// would still succeed. Issuers must use pinned contexts for their claims
// (for example https://www.w3.org/ns/credentials/undefined-terms/v2 or the
// VC 2.0 context's own @vocab).

// checkCompactForm refuses a VC, VP or proof-options document that is not
// in the compacted form of its own (pinned, string-only) top-level @context:
// no inline or nested contexts, no member names that are keywords (other than
// the top-level @context) or absolute/compact IRIs, and expand→compact with
// the same context must give the document back unchanged.
func checkCompactForm(doc map[string]any) error {
	ctxs, err := contextList(doc["@context"])
	if err != nil {
		return err
	}
	for _, c := range ctxs {
		s, ok := c.(string)
		if !ok {
			return fmt.Errorf("%w: inline JSON-LD contexts are not accepted", ErrMalformed)
		}
		if _, ok := pinnedContexts[s]; !ok {
			return fmt.Errorf("%w: %s", ErrUnknownContext, s)
		}
	}
	rest := make(map[string]any, len(doc))
	for k, v := range doc {
		if k != "@context" {
			rest[k] = v
		}
	}
	if err := checkCompactNames(rest, 1); err != nil {
		return err
	}
	// Compaction does not merge nodes: one node's properties split over two
	// objects with the same id survive the round trip below, and a reader
	// looking at one of them would miss the rest.
	if err := checkNodesDescribedOnce(rest, map[string]bool{}); err != nil {
		return err
	}
	opts := ld.NewJsonLdOptions("")
	opts.DocumentLoader = pinnedLoader{}
	opts.ProcessingMode = ld.JsonLd_1_1
	opts.SafeMode = true
	proc := ld.NewJsonLdProcessor()
	expanded, err := proc.Expand(cloneJSON(doc), opts)
	if err != nil {
		if errors.Is(err, ErrUnknownContext) {
			return err
		}
		return fmt.Errorf("%w: JSON-LD expansion: %v", ErrMalformed, err)
	}
	compacted, err := proc.Compact(expanded, map[string]any{"@context": cloneJSON(doc["@context"])}, opts)
	if err != nil {
		return fmt.Errorf("%w: JSON-LD compaction: %v", ErrMalformed, err)
	}
	if !reflect.DeepEqual(normalizeCompact(cloneJSON(doc)), normalizeCompact(cloneJSON(compacted))) {
		return fmt.Errorf("%w: JSON-LD document is not in the compacted form of its contexts", ErrMalformed)
	}
	return nil
}

// checkCompactNames refuses keyword and IRI member names below the top level.
func checkCompactNames(v any, depth int) error {
	if depth > strictjson.MaxDepth {
		return fmt.Errorf("%w: document nesting too deep", ErrMalformed)
	}
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			switch {
			case strings.HasPrefix(k, "@"):
				return fmt.Errorf("%w: JSON-LD keyword %q is not accepted (only @context at the top)", ErrMalformed, k)
			case strings.Contains(k, ":"):
				return fmt.Errorf("%w: member name %q is an IRI, not a term of a pinned context", ErrMalformed, k)
			case k == "":
				return fmt.Errorf("%w: empty member name", ErrMalformed)
			}
			if err := checkCompactNames(e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := checkCompactNames(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkNodesDescribedOnce refuses two objects that describe the node with
// the same id (objects holding nothing but the id are references and fine).
func checkNodesDescribedOnce(v any, seen map[string]bool) error {
	switch t := v.(type) {
	case map[string]any:
		if id, ok := t["id"].(string); ok && len(t) > 1 {
			if seen[id] {
				return fmt.Errorf("%w: node %q is described in more than one place", ErrMalformed, id)
			}
			seen[id] = true
		}
		for _, e := range t {
			if err := checkNodesDescribedOnce(e, seen); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range t {
			if err := checkNodesDescribedOnce(e, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// cloneJSON deep-copies a decoded JSON value (json-gold may modify its input).
func cloneJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = cloneJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = cloneJSON(e)
		}
		return out
	}
	return v
}

// normalizeCompact makes two compacted documents comparable: numbers as
// float64 (through a JSON round trip), one-element arrays as their element
// (compaction's compactArrays) and an object holding nothing but "id" as that
// id (compaction's node-reference form for terms typed @id, such as issuer
// and credentialSubject). Both spellings are the same RDF, and the readers
// take both (issuer, holder) or refuse the short one (credentialSubject).
func normalizeCompact(v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return err
	}
	return collapseArrays(generic)
}

func collapseArrays(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if id, ok := t["id"].(string); ok && len(t) == 1 {
			return id
		}
		for k, e := range t {
			t[k] = collapseArrays(e)
		}
	case []any:
		if len(t) == 1 {
			return collapseArrays(t[0])
		}
		for i, e := range t {
			t[i] = collapseArrays(e)
		}
	}
	return v
}
