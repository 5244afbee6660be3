package embedded

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// StorePKI is the private certificate authority that guards the store's
// TCP listener: the store requires a client certificate signed by it, so
// only holders of a client certificate Satoru issued (its own workers)
// get in. Its files live in one 0700 folder, each 0600.
type StorePKI struct {
	Dir string
	// CA is the authority's certificate (clients verify the server with it).
	CA string
	// ServerCert and ServerKey are the store's own certificate and key.
	ServerCert, ServerKey string
	// Client is a client certificate and its key in one PEM file, the form
	// of the MongoDB driver's tlsCertificateKeyFile.
	Client string
}

// pkiValidity is how long the generated certificates are valid.
const pkiValidity = 20 * 365 * 24 * time.Hour

// EnsureStorePKI makes the authority and the client certificate in dir
// once, and issues a fresh server certificate for hosts (names or IP
// addresses the store is reached by) on every call, so a changed listen
// address needs nothing from the operator. The authority's key never
// leaves dir.
func EnsureStorePKI(dir string, hosts []string) (StorePKI, error) {
	p := StorePKI{Dir: dir, CA: filepath.Join(dir, "ca.pem"), ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey: filepath.Join(dir, "server-key.pem"), Client: filepath.Join(dir, "client.pem")}
	caKeyFile := filepath.Join(dir, "ca-key.pem")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, fmt.Errorf("embedded: store pki: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return p, fmt.Errorf("embedded: store pki: %w", err)
	}
	ca, caKey, err := loadPair(p.CA, caKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		ca, caKey, err = newCA()
		if err == nil {
			err = writePair(p.CA, caKeyFile, ca, caKey)
		}
		// A new authority invalidates any client certificate left over.
		_ = os.Remove(p.Client)
	}
	if err != nil {
		return p, fmt.Errorf("embedded: store pki: authority: %w", err)
	}
	if _, err := os.Stat(p.Client); errors.Is(err, fs.ErrNotExist) {
		cert, key, err := issue(ca, caKey, "satoru-worker", nil, x509.ExtKeyUsageClientAuth)
		if err == nil {
			err = writeFile0600(p.Client, append(certPEM(cert), keyPEM(key)...))
		}
		if err != nil {
			return p, fmt.Errorf("embedded: store pki: client certificate: %w", err)
		}
	}
	cert, key, err := issue(ca, caKey, "satoru-store", hosts, x509.ExtKeyUsageServerAuth)
	if err == nil {
		err = writePair(p.ServerCert, p.ServerKey, cert, key)
	}
	if err != nil {
		return p, fmt.Errorf("embedded: store pki: server certificate: %w", err)
	}
	return p, nil
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "satoru embedded store CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(pkiValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, hosts []string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(pkiValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writePair(certFile, keyFile string, c *x509.Certificate, k *ecdsa.PrivateKey) error {
	if err := writeFile0600(keyFile, keyPEM(k)); err != nil {
		return err
	}
	return writeFile0600(certFile, certPEM(c))
}

// writeFile0600 replaces path with data, readable by the owner only.
func writeFile0600(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		if _, serr := os.Stat(certFile); errors.Is(serr, fs.ErrNotExist) {
			return nil, nil, serr
		}
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not an ECDSA key", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	return cert, key, err
}
