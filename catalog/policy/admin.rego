# Attribute-based rules of gxconf's catalogue admin API (the same OPA engine
# as room access). Input:
#   subject:  {sub, org, roles: [..], mfa: bool}
#   action:   list | get | book | cancel | bind | unbind | entitlement
#             | confirm | suspend | resume | revoke
#   resource: {org, level, state}   (org: the booking's organisation)
#   organisations: [keys of admin.organisations]
# Output: decision = {allow: bool, reason: string}
package gxconf.catalog.admin

import rego.v1

provider_actions := {"list", "get", "book", "cancel", "bind", "unbind", "entitlement", "confirm", "suspend", "resume", "revoke"}

org_actions := {"list", "get", "book", "cancel", "bind", "unbind", "entitlement"}

is_provider if "provider" in input.subject.roles

is_org_admin if {
	"booking-admin" in input.subject.roles
	input.subject.org in input.organisations
}

default allow := false

allow if {
	input.subject.mfa
	is_provider
	input.action in provider_actions
}

allow if {
	input.subject.mfa
	is_org_admin
	input.action in org_actions
	input.resource.org == input.subject.org
}

reason := "multi-factor authentication is required" if not input.subject.mfa

else := "only the provider may confirm, suspend, resume or revoke bookings" if {
	not is_provider
	input.action in (provider_actions - org_actions)
}

else := "you are no booking admin of a known organisation" if {
	not is_provider
	not is_org_admin
}

else := sprintf("you act for %q, not for %q", [input.subject.org, input.resource.org]) if {
	not is_provider
	input.resource.org != input.subject.org
}

else := "not allowed"

decision := {"allow": true, "reason": ""} if allow

else := {"allow": false, "reason": reason}
