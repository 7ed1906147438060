package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gxfs-conf/gxconf/credentials"
)

// Context IRIs of the credentials gxconf issues.
const (
	// ContextVC2 is the W3C VC Data Model 2.0 context.
	ContextVC2 = "https://www.w3.org/ns/credentials/v2"
	// ContextGX2511 is the Gaia-X 2511 vocabulary (ICAM 25.11).
	ContextGX2511 = "https://w3id.org/gaia-x/2511#"
	// VocabPath is, below base_url, gxconf's own vocabulary (vk:) namespace;
	// the SHACL shape of vk:ConferenceTier is published next to it.
	VocabPath = "/catalog/vocab#"
	// ShapePath is, below base_url, the Turtle SHACL shape of vk:ConferenceTier.
	ShapePath = "/catalog/shapes/conference-tier.ttl"
)

// Tier is one bookable characterisation: tier size × level × service level
// (a vk:ConferenceTier credential).
type Tier struct {
	// ID is e.g. "kritis-500-gold".
	ID              string            `json:"id"`
	IRI             string            `json:"iri"`
	Offering        string            `json:"offering"`      // the gx:ServiceOffering subject IRI
	OfferingCred    string            `json:"offering_cred"` // its credential's name below /catalog/credentials/
	MaxParticipants int               `json:"max_participants"`
	Level           credentials.Level `json:"level"`
	ServiceLevel    string            `json:"service_level"`
	Availability    float64           `json:"availability"`
	MaxConcurrent   int               `json:"max_concurrent_sessions"`
	Sites           []string          `json:"sites"`
	BookingUnits    []string          `json:"booking_units"`
}

// Credential is one issued catalogue credential.
type Credential struct {
	// Name is its file name below /catalog/credentials/ (without .jwt).
	Name string `json:"name"`
	// Kind is legal-person, terms, offering or tier.
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	Subject string `json:"subject"`
	// Hash is the SHA-256 of the JWT (hex), the offering hash bookings keep.
	Hash string         `json:"hash"`
	JWT  string         `json:"-"`
	VC   map[string]any `json:"-"`
}

// Catalogue is everything gxconf publishes about its offer.
type Catalogue struct {
	DID      string       `json:"did"`
	Provider string       `json:"provider"`
	Tiers    []Tier       `json:"tiers"`
	Creds    []Credential `json:"credentials"`
	Shape    string       `json:"-"`
	byName   map[string]*Credential
	bySubj   map[string]*Credential
	tiers    map[string]*Tier
}

// Tier returns a tier by ID.
func (c *Catalogue) Tier(id string) (*Tier, bool) {
	t, ok := c.tiers[id]
	return t, ok
}

// Credential returns a credential by name.
func (c *Catalogue) Credential(name string) (*Credential, bool) {
	cr, ok := c.byName[name]
	return cr, ok
}

// buildCatalogue issues the provider's LegalPerson, the terms of each level,
// one gx:ServiceOffering per tier × level and one vk:ConferenceTier per
// tier × level × service level.
func buildCatalogue(cfg Config, key *providerKey, now time.Time) (*Catalogue, error) {
	base := strings.TrimRight(cfg.BaseURL, "/")
	vk := base + VocabPath
	ctx := []any{ContextVC2, ContextGX2511, map[string]any{"schema": "https://schema.org/", "vk": vk, "xsd": "http://www.w3.org/2001/XMLSchema#"}}
	validFrom := now.UTC().Truncate(time.Second).Format(time.RFC3339)
	cat := &Catalogue{DID: key.did, Provider: cfg.Provider.LegalName, byName: map[string]*Credential{}, bySubj: map[string]*Credential{}, tiers: map[string]*Tier{}}
	add := func(name, kind, typ string, subject map[string]any) error {
		id := base + "/catalog/credentials/" + name
		subject["type"] = typ
		vc := map[string]any{
			"@context": ctx, "id": id, "type": []string{"VerifiableCredential", typ},
			"issuer": key.did, "validFrom": validFrom, "credentialSubject": subject,
		}
		jwt, err := key.sign(vc)
		if err != nil {
			return fmt.Errorf("failed to sign %s: %w", name, err)
		}
		sum := sha256.Sum256([]byte(jwt))
		cat.Creds = append(cat.Creds, Credential{Name: name, Kind: kind, ID: id, Subject: subject["id"].(string), Hash: hex.EncodeToString(sum[:]), JWT: jwt, VC: vc})
		return nil
	}
	p := cfg.Provider
	lp := base + "/catalog/participant/provider"
	addr := map[string]any{"type": "gx:Address", "gx:countryCode": p.CountryCode}
	reg := map[string]any{"id": lp + "#registration", "type": "gx:" + regClass(p.RegistrationNumberType)}
	reg["gx:"+regProperty(p.RegistrationNumberType)] = p.RegistrationNumber
	lpSubject := map[string]any{
		"id": lp, "schema:name": p.LegalName,
		"gx:registrationNumber": reg, "gx:legalAddress": addr, "gx:headquartersAddress": addr,
	}
	if err := add("legal-person", "legal-person", "gx:LegalPerson", lpSubject); err != nil {
		return nil, err
	}
	levels := make([]credentials.Level, 0, len(cfg.Levels))
	for lv := range cfg.Levels {
		levels = append(levels, lv)
	}
	sort.Slice(levels, func(i, j int) bool { return levels[i].Rank() < levels[j].Rank() })
	sls := make([]string, 0, len(cfg.ServiceLevels))
	for name := range cfg.ServiceLevels {
		sls = append(sls, name)
	}
	sort.Slice(sls, func(i, j int) bool {
		return cfg.ServiceLevels[sls[i]].Availability < cfg.ServiceLevels[sls[j]].Availability
	})
	tiers := slices.Clone(cfg.Tiers)
	slices.Sort(tiers)
	for _, lv := range levels {
		o := cfg.Levels[lv]
		tc := base + "/catalog/terms/" + string(lv)
		if err := add("terms-"+string(lv), "terms", "gx:TermsAndConditions", map[string]any{
			"id": tc, "gx:url": map[string]any{"@value": o.TermsURL, "@type": "xsd:anyURI"}, "gx:hash": o.TermsHash,
		}); err != nil {
			return nil, err
		}
		for _, size := range tiers {
			name := fmt.Sprintf("%s-%d", lv, size)
			so := base + "/catalog/offerings/" + name
			subject := map[string]any{
				"id":                                   so,
				"schema:name":                          fmt.Sprintf("gxconf video conference – %s – up to %d participants", levelLabel(lv), size),
				"schema:description":                   fmt.Sprintf("MatrixRTC video calls for up to %d participants per meeting at confidentiality level %s; service levels %s.", size, levelLabel(lv), strings.Join(sls, ", ")),
				"gx:keyword":                           []string{"videoconference", "MatrixRTC", fmt.Sprintf("tier-%d", size), string(lv)},
				"gx:providedBy":                        map[string]any{"id": lp},
				"gx:serviceOfferingTermsAndConditions": map[string]any{"id": tc},
				"gx:dataProtectionRegime":              "GDPR2016",
				"gx:provisionType":                     "private",
				"gx:cryptographicSecurityStandards":    []string{"RFC8446", "RFC7515"},
			}
			if o.PolicyURL != "" {
				subject["gx:servicePolicy"] = map[string]any{
					"type": "gx:AccessUsagePolicy", "gx:policyLanguage": "Rego", "gx:policyDocument": o.PolicyURL,
				}
			}
			if err := add("offering-"+name, "offering", "gx:ServiceOffering", subject); err != nil {
				return nil, err
			}
			for _, sl := range sls {
				s := cfg.ServiceLevels[sl]
				t := Tier{
					ID: name + "-" + sl, IRI: base + "/catalog/tiers/" + name + "-" + sl, Offering: so, OfferingCred: "offering-" + name,
					MaxParticipants: size, Level: lv, ServiceLevel: sl, Availability: s.Availability,
					MaxConcurrent: s.MaxConcurrentSessions, Sites: slices.Clone(o.Sites), BookingUnits: []string{"dateRange", "sessions"},
				}
				if err := add("tier-"+t.ID, "tier", "vk:ConferenceTier", map[string]any{
					"id":                       t.IRI,
					"vk:offering":              map[string]any{"id": so},
					"vk:maxParticipants":       size,
					"vk:confidentialityLevel":  string(lv),
					"vk:serviceLevel":          sl,
					"vk:availability":          map[string]any{"@value": fmt.Sprintf("%g", s.Availability), "@type": "xsd:decimal"},
					"vk:maxConcurrentSessions": s.MaxConcurrentSessions,
					"vk:site":                  slices.Clone(o.Sites),
					"vk:bookingUnit":           t.BookingUnits,
				}); err != nil {
					return nil, err
				}
				cat.Tiers = append(cat.Tiers, t)
			}
		}
	}
	for i := range cat.Creds {
		cat.byName[cat.Creds[i].Name] = &cat.Creds[i]
		cat.bySubj[cat.Creds[i].Subject] = &cat.Creds[i]
	}
	for i := range cat.Tiers {
		cat.tiers[cat.Tiers[i].ID] = &cat.Tiers[i]
	}
	cat.Shape = conferenceTierShape(vk)
	return cat, nil
}

func levelLabel(l credentials.Level) string {
	switch l {
	case credentials.LevelKritis:
		return "KRITIS"
	case credentials.LevelVSNfD:
		return "VS-NfD"
	}
	return "public"
}

// regClass and regProperty map a registration number type to its 2511
// class and property (gx:VatID / gx:vatID …).
func regClass(t string) string {
	switch t {
	case "vatID":
		return "VatID"
	case "leiCode":
		return "LeiCode"
	case "local":
		return "LocalRegistrationNumber"
	case "taxID":
		return "TaxID"
	}
	return t // EORI, EUID
}

func regProperty(t string) string {
	switch t {
	case "EORI":
		return "eori"
	case "EUID":
		return "euid"
	}
	return t
}

// conferenceTierShape is the SHACL shape of vk:ConferenceTier that gxconf
// publishes (XFSC catalogue: POST /schemas, text/turtle).
func conferenceTierShape(vk string) string {
	return `@prefix sh: <http://www.w3.org/ns/shacl#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
@prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .
@prefix gx: <https://w3id.org/gaia-x/2511#> .
@prefix vk: <` + vk + `> .

vk:ConferenceTierShape a sh:NodeShape ;
  sh:targetClass vk:ConferenceTier ;
  sh:closed true ;
  sh:ignoredProperties ( rdf:type ) ;
  sh:property
    [ sh:path vk:offering ; sh:class gx:ServiceOffering ; sh:minCount 1 ; sh:maxCount 1 ] ,
    [ sh:path vk:maxParticipants ; sh:datatype xsd:integer ; sh:in ( 20 50 100 500 1000 ) ; sh:minCount 1 ; sh:maxCount 1 ] ,
    [ sh:path vk:confidentialityLevel ; sh:in ( "public" "kritis" "vs-nfd" ) ; sh:minCount 1 ; sh:maxCount 1 ] ,
    [ sh:path vk:serviceLevel ; sh:in ( "bronze" "silver" "gold" ) ; sh:minCount 1 ; sh:maxCount 1 ] ,
    [ sh:path vk:availability ; sh:datatype xsd:decimal ; sh:maxCount 1 ] ,
    [ sh:path vk:maxConcurrentSessions ; sh:datatype xsd:integer ; sh:minInclusive 1 ; sh:maxCount 1 ] ,
    [ sh:path vk:site ; sh:datatype xsd:string ] ,
    [ sh:path vk:bookingUnit ; sh:in ( "dateRange" "sessions" ) ] .
`
}
