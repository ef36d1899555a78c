package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What run needs of the files and addresses a config names, checked when
// the config is loaded so that check-config refuses what run would refuse.
// The checks use crypto/x509 and crypto/tls, the same code that loads the
// files when the gateway starts.

// File tag values: what the file a string field names must be.
const (
	// fileRead: an existing file the gateway's user can read.
	fileRead = "read"
	// fileCert: a readable PEM file with at least one X.509 certificate.
	fileCert = "cert"
	// fileKey: a readable PEM file with an unencrypted private key.
	fileKey = "key"
	// fileCA: a readable PEM bundle of CA certificates.
	fileCA = "ca"
	// fileDir: a directory that exists and is writable, or can be created.
	fileDir = "dir"
	// fileWrite: a file that exists and is writable, or can be created.
	fileWrite = "write"
	// fileStdin (after a comma, as in "read,stdin"): "-" means standard input.
	fileStdin = "stdin"
	// fileLater (after a comma): the file may appear after the gateway
	// started (a file source waits for it); a missing one is a warning.
	fileLater = "later"
)

// fileRef is a value of a field with a file tag, checked once the whole
// file is decoded.
type fileRef struct {
	tag  string
	path string
	pos  Pos
}

// checkFiles checks every file named by a field with a file tag. A
// certificate and a key named by fields of the same struct must also
// belong together.
func (d *decoder) checkFiles() {
	if d.opts.SkipFiles || d.opts.SkipSecrets {
		return
	}
	type pair struct {
		cert, key       []byte
		certRef, keyRef fileRef
	}
	pairs := map[string]*pair{}
	var order []string
	for _, f := range d.files {
		kind, mods, _ := strings.Cut(f.tag, ",")
		mod := strings.Split(mods, ",")
		if f.path == "-" && slices.Contains(mod, fileStdin) {
			continue
		}
		if slices.Contains(mod, fileLater) {
			if _, err := os.Stat(f.path); missing(err) {
				d.warnings = append(d.warnings, Problem{Pos: f.pos, Msg: fmt.Sprintf("file %s does not exist yet; the source reads it once it does", f.path)})
				continue
			}
		}
		data, msg := checkFile(kind, f.path)
		if msg != "" {
			d.problem(f.pos, msg)
			continue
		}
		if kind == fileCert {
			if w := certExpiry(data, f.path, time.Now()); w != "" {
				d.warnings = append(d.warnings, Problem{Pos: f.pos, Msg: w})
			}
		}
		if kind != fileCert && kind != fileKey {
			continue
		}
		parent := f.pos.Path
		if i := strings.LastIndexByte(parent, '.'); i >= 0 {
			parent = parent[:i]
		}
		p := pairs[parent]
		if p == nil {
			p = &pair{}
			pairs[parent] = p
			order = append(order, parent)
		}
		if kind == fileCert {
			p.cert, p.certRef = data, f
		} else {
			p.key, p.keyRef = data, f
		}
	}
	for _, parent := range order {
		p := pairs[parent]
		if p.cert == nil || p.key == nil {
			continue
		}
		if _, err := tls.X509KeyPair(p.cert, p.key); err != nil {
			d.problem(p.keyRef.pos, fmt.Sprintf("the key in %s does not belong to the certificate in %s: %s",
				p.keyRef.path, p.certRef.path, strings.TrimPrefix(err.Error(), "tls: ")))
		}
	}
}

// checkFile checks one file for a file tag kind and returns its contents
// for the PEM kinds, or a message saying what is wrong.
func checkFile(kind, path string) ([]byte, string) {
	switch kind {
	case fileDir:
		return nil, checkCreatable(path, true)
	case fileWrite:
		return nil, checkCreatable(path, false)
	case fileRead, fileCert, fileKey, fileCA:
	default:
		return nil, fmt.Sprintf("unsupported file tag %q (want read, cert, key, ca, dir or write)", kind)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Sprintf("file %s does not exist", path)
	case err != nil:
		return nil, fmt.Sprintf("file %s: %s", path, fileErrText(err))
	case fi.IsDir():
		return nil, fmt.Sprintf("%s is a directory; want a file", path)
	}
	if err := access(path, accessRead); err != nil {
		return nil, fmt.Sprintf("file %s cannot be read by this user (%s): %s", path, whoami(), fileErrText(err))
	}
	if kind == fileRead {
		return nil, ""
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Sprintf("%s is not a regular file; want a PEM file", path)
	}
	data, err := readFileLimited(path)
	if err != nil {
		return nil, fmt.Sprintf("file %s: %s", path, fileErrText(err))
	}
	if msg := checkPEM(kind, path, data); msg != "" {
		return nil, msg
	}
	return data, ""
}

// checkPEM checks that data holds what kind wants. Messages never quote
// the file's contents.
func checkPEM(kind, path string, data []byte) string {
	var certs, keys, encrypted int
	var firstErr error
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			certs++
		case b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] == "4,ENCRYPTED":
			encrypted++
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			if err := parseKey(b.Bytes); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			keys++
		}
	}
	switch kind {
	case fileCert, fileCA:
		if certs > 0 {
			return ""
		}
		if firstErr != nil {
			return fmt.Sprintf("the certificate in %s does not parse: %v", path, firstErr)
		}
		return fmt.Sprintf("%s holds no PEM certificate (a block -----BEGIN CERTIFICATE-----)", path)
	case fileKey:
		switch {
		case keys > 0:
			return ""
		case encrypted > 0:
			return fmt.Sprintf("the private key in %s is encrypted: plantgate needs it unencrypted (protect it with file permissions or a systemd credential)", path)
		case firstErr != nil:
			return fmt.Sprintf("the private key in %s does not parse: %v", path, firstErr)
		}
		return fmt.Sprintf("%s holds no PEM private key (a block -----BEGIN PRIVATE KEY-----)", path)
	}
	return ""
}

// parseKey parses a PKCS #8, PKCS #1 or SEC 1 private key, as
// tls.X509KeyPair does.
func parseKey(der []byte) error {
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return nil
	}
	_, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return errors.New("not a PKCS #8, PKCS #1 or EC private key")
	}
	return nil
}

// certExpiry warns about the first certificate in data when it has
// expired or is not valid yet.
func certExpiry(data []byte, path string, now time.Time) string {
	b, rest := pem.Decode(data)
	for b != nil && b.Type != "CERTIFICATE" {
		b, rest = pem.Decode(rest)
	}
	if b == nil {
		return ""
	}
	c, err := x509.ParseCertificate(b.Bytes)
	switch {
	case err != nil:
		return ""
	case now.After(c.NotAfter):
		return fmt.Sprintf("the certificate in %s expired on %s", path, c.NotAfter.UTC().Format(time.DateOnly))
	case now.Before(c.NotBefore):
		return fmt.Sprintf("the certificate in %s is not valid before %s", path, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}

// checkCreatable checks that path exists as a directory (dir) or file the
// user can write, or that it can be created: its nearest existing parent
// is a directory the user can write.
func checkCreatable(path string, dir bool) string {
	what := "file"
	if dir {
		what = "directory"
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if dir && !fi.IsDir() {
			return fmt.Sprintf("%s is not a directory", path)
		}
		if !dir && fi.IsDir() {
			return fmt.Sprintf("%s is a directory; want a file", path)
		}
		mode := accessWrite
		if dir {
			mode |= accessExec
		}
		if err := access(path, mode); err != nil {
			return fmt.Sprintf("%s %s cannot be written by this user (%s): %s", what, path, whoami(), fileErrText(err))
		}
		return ""
	case !missing(err):
		return fmt.Sprintf("%s %s: %s", what, path, fileErrText(err))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Sprintf("%s %s: %v", what, path, err)
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if missing(err) && p != filepath.Dir(p) {
			continue
		}
		switch {
		case err != nil:
			return fmt.Sprintf("%s %s cannot be created: %s: %s", what, path, p, fileErrText(err))
		case !fi.IsDir():
			return fmt.Sprintf("%s %s cannot be created: %s is not a directory", what, path, p)
		}
		if err := access(p, accessWrite|accessExec); err != nil {
			return fmt.Sprintf("%s %s does not exist and cannot be created: %s is not writable by this user (%s)", what, path, p, whoami())
		}
		return ""
	}
}

// missing reports whether err says a path does not exist (a parent of it
// may be a file).
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// whoami names the process's user for messages: a check passes or fails
// for the user that runs it, so check-config should run as the service's.
func whoami() string {
	return "uid " + strconv.Itoa(os.Getuid())
}

var hostnameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$`)

// checkListen checks an address to listen on: host:port with a numeric
// port up to 65535 (0 asks the system for a free port, which tests use)
// and an IP address, a host name or nothing (every interface) as host.
func checkListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("want an address host:port such as 127.0.0.1:9464 or :9464, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("port %q in %q: want a number from 1 to 65535", port, addr)
	}
	if host != "" && net.ParseIP(host) == nil && !hostnameRe.MatchString(host) {
		return fmt.Sprintf("host %q in %q: want an IP address or a host name", host, addr)
	}
	return ""
}
