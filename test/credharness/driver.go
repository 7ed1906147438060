// Package credharness drives harness.mjs, the independent issuer, status-list
// host, did:web host and OID4VP wallet built from npm packages, for gxconf's
// credential tests (package credentials and the end-to-end tests in test/).
// It depends on the standard library only.
package credharness

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// TLS is a self-signed certificate for 127.0.0.1 and localhost, shared by the
// harness's HTTPS server, gxconf's verifier under test and (through
// NODE_EXTRA_CA_CERTS) the harness's wallet.
type TLS struct {
	CertFile, KeyFile string
	Cert              tls.Certificate
	Pool              *x509.CertPool
}

// NewLoopbackTLS writes a fresh certificate and key into dir.
func NewLoopbackTLS(dir string) (*TLS, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "gxconf test loopback"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	l := &TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(l.CertFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(l.KeyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if l.Cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, err
	}
	l.Pool = x509.NewCertPool()
	l.Pool.AppendCertsFromPEM(certPEM)
	return l, nil
}

// Info is what the harness announces when it is ready.
type Info struct {
	Port int    `json:"port"`
	Base string `json:"base"`
	// Issuers maps the harness's issuer names (w3c, xfsc, web, untrusted) to DIDs.
	Issuers map[string]string `json:"issuers"`
	// Holder is the wallet's DID.
	Holder string `json:"holder"`
}

// Harness is a running harness.mjs.
type Harness struct {
	Info   Info
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	enc    *json.Encoder
	out    *bufio.Scanner
	mu     sync.Mutex
	nextID int
}

var npmMu sync.Mutex

// Dir locates test/credharness (next to this file's package in the module)
// and runs `npm ci` there when node_modules is missing. Node is required.
func Dir() (string, error) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", fmt.Errorf("node is required for the credential harness: %w", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	dir := ""
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			dir = filepath.Join(d, "test", "credharness")
			break
		}
		if filepath.Dir(d) == d {
			return "", errors.New("go.mod not found above the working directory")
		}
	}
	npmMu.Lock()
	defer npmMu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@digitalbazaar", "vc")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out)
		}
	}
	return dir, nil
}

// Start runs the harness with the given certificate; its stderr goes to stderr.
func Start(tlsc *TLS, stderr io.Writer) (*Harness, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", "harness.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HARNESS_TLS_CERT="+tlsc.CertFile, "HARNESS_TLS_KEY="+tlsc.KeyFile, "NODE_EXTRA_CA_CERTS="+tlsc.CertFile)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &Harness{cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), out: bufio.NewScanner(stdout)}
	h.out.Buffer(make([]byte, 1<<20), 64<<20)
	if !h.out.Scan() {
		_ = h.Close()
		return nil, errors.New("credential harness exited before it was ready")
	}
	var ready struct {
		Ready bool `json:"ready"`
		Info
	}
	if err := json.Unmarshal(h.out.Bytes(), &ready); err != nil || !ready.Ready {
		_ = h.Close()
		return nil, fmt.Errorf("credential harness: bad ready line %q", h.out.Bytes())
	}
	h.Info = ready.Info
	return h, nil
}

// Close ends the harness (closing stdin makes it exit) and waits for it.
func (h *Harness) Close() error {
	_ = h.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		return <-done
	}
}

// Call sends one command and decodes its result into out (if non-nil).
func (h *Harness) Call(cmd string, args, out any) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	id := h.nextID
	if err := h.enc.Encode(map[string]any{"id": id, "cmd": cmd, "args": args}); err != nil {
		return err
	}
	if !h.out.Scan() {
		return fmt.Errorf("harness closed its output: %v", h.out.Err())
	}
	var resp struct {
		ID     int             `json:"id"`
		OK     bool            `json:"ok"`
		Error  string          `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(h.out.Bytes(), &resp); err != nil {
		return err
	}
	if resp.ID != id {
		return fmt.Errorf("harness answered %d, want %d", resp.ID, id)
	}
	if !resp.OK {
		return fmt.Errorf("harness %s: %s", cmd, resp.Error)
	}
	if out != nil {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}

// Issue returns a credential (a JSON object or a JSON string) for args
// {format, issuer, type, claims, validFrom, validUntil, status:{list,index}, subject}.
func (h *Harness) Issue(args map[string]any) (json.RawMessage, error) {
	var raw json.RawMessage
	err := h.Call("issue", args, &raw)
	return raw, err
}

// PresentResult is the wallet's view of its direct_post.
type PresentResult struct {
	Status      int               `json:"status"`
	Body        string            `json:"body"`
	ResponseURI string            `json:"response_uri"`
	Form        map[string]string `json:"form"`
	// Wallet is how @openid4vc/openid4vp read the request (present with
	// wallet "openid4vp"): client id prefix, effective client id, OID4VP
	// version (100: 1.0 final), and whether it found DCQL or PE.
	Wallet *WalletView `json:"wallet,omitempty"`
}

// WalletView is what the OpenID Foundation's OID4VP library made of a request.
type WalletView struct {
	Prefix    string `json:"prefix"`
	Effective string `json:"effective"`
	Version   int    `json:"version"`
	DCQL      bool   `json:"dcql"`
	PEX       bool   `json:"pex"`
}

// Present answers an openid4vp:// request link with the credential, as a
// presentation in format (ldp_vp, jwt_vp_json, or the SD-JWT formats).
func (h *Harness) Present(link string, cred json.RawMessage, format string, extra map[string]any) (PresentResult, error) {
	args := map[string]any{"link": link, "credential": cred, "format": format}
	for k, v := range extra {
		args[k] = v
	}
	var r PresentResult
	err := h.Call("present", args, &r)
	return r, err
}

// SetList (re)publishes a status list: {name, issuer, kind: bitstring|sl2021|xfsc|bomb, revoked: [indexes]}.
func (h *Harness) SetList(args map[string]any) error {
	return h.Call("list", args, nil)
}
