// Package servertls gives gxconf's HTTP listeners native TLS: TLS 1.2 and 1.3
// restricted to the cipher suites and groups of BSI TR-02102-2, with the
// certificate and key re-read from their files when they change (a renewed
// Kubernetes Secret or cert-manager certificate), without a restart.
//
// It imports no other gxconf package.
package servertls
