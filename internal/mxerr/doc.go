// Package mxerr is what a user may be told of a failed homeserver
// request: the Matrix error code and message the homeserver answered,
// clipped, and never a transport error's text (internal addresses, a
// proxy's page), which belongs in the operator's log.
package mxerr
