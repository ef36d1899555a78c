// Package config loads plantgate's YAML config file strictly: every key is
// known, every value has the right type, every reference resolves, and
// every problem is reported with its file, line, column and field path.
//
// # Schema
//
// The top level holds these sections:
//
//	gateway:  id (required), data_dir, drain_timeout, queue {...}
//	log:      level, format
//	http:     listen, admin_token (a secret)
//	fo:       <env>: F&O environments (url, tenant_id, client_id, credentials, ...)
//	sources:  <name>: {type: <source type>, startup: ..., <plugin keys>}
//	sinks:    <name>: {type: <sink type>, startup: ..., max_batch, parallelism, retry, <plugin keys>}
//	flows:    <name>: {from, when, key, id, map, to, expect {rate, urgent}}
//
// gateway, sources, sinks and flows are required, and there must be at
// least one flow. Top-level keys starting with "x-" are ignored; they are a
// place to define YAML anchors for use elsewhere. Instance names (fo
// environments, sources, sinks, flows) match [a-z0-9][a-z0-9_-]* with at
// most 64 characters: a (flow, sink) pair names a queue stream "flow.sink".
// The *Order slices of Config keep the file order of each section.
//
// Flow expressions (when, key, id and the values of map) are kept as Expr
// with their position and compiled by the flow engine, which reports its
// errors at that position. to takes a sink name or a list of them; expect
// rate is "<number>/s", "/m" or "/h".
//
// # Plugin settings
//
// A source's or sink's keys besides type and startup (and, for a sink, the
// runner keys) are decoded into the struct that Options.SourceConfig or
// SinkConfig returns for its type, with the plugin's defaults already set,
// and stored in Plugin.Settings. Plugin structs use the same tags as the
// core types:
//
//	yaml:"name"        the key (default: the lowercased field name); "-" skips the field
//	required:"true"    the key must be present
//	default:"15m"      the value when the key is absent and the field is zero
//	enum:"json,csv"    the allowed values of a string
//	min:"1"            the least value of a number, Duration or Size
//	ref:"fo"           a string (or []string) naming an fo environment; also source, sink, flow
//	file:"cert"        a string naming a file the gateway needs at start (see Files)
//	listen:"true"      a host:port to listen on: a numeric port up to 65535 (0 picks a free
//	                   one, which tests use) and an IP address, a host name or nothing as host
//
// Supported field types are strings, bools, integers, floats, Duration
// ("15m", "1d12h"), time.Duration (the same syntax), Size ("512MiB", "10MB",
// "1024"), logging.Secret, Expr, structs and pointers to structs,
// map[string]T, []T ([]string also takes a single string), any (decoded as
// plain maps, lists and scalars), encoding.TextUnmarshaler, and
// Unmarshaler for anything else. After decoding, a struct implementing
// Validator is validated, and settings implementing ConfigValidator are
// checked against the whole config.
//
// # Strictness
//
// Unknown keys (the message lists the valid ones), duplicate keys, wrong
// types, bad durations and sizes, missing required keys, values outside an
// enum, several YAML documents in one file and tabs in indentation are all
// errors. Anchors, aliases and merge keys ("<<: *defaults") are resolved;
// an alias that refers to its own value, or aliases expanding to far more
// nodes than the file holds (a "billion laughs"), are errors.
//
// # Files
//
// A string field with a file tag names a file the gateway needs when it
// starts, and Load checks it then, for the user that loads the config (run
// check-config as the service's user): "read" an existing file this user
// can read; "cert" a readable PEM file holding an X.509 certificate
// (crypto/x509 parses it; an expired one is a warning); "key" a readable
// PEM file with an unencrypted private key (PKCS #8, PKCS #1 or EC);
// "ca" a PEM bundle with at least one certificate; "dir" a directory that
// exists and is writable, or can be created (its nearest existing parent
// is a writable directory); "write" a file that is writable or can be
// created the same way. After a comma, "stdin" accepts "-" for standard
// input and "later" makes a missing file a warning (a source that waits
// for it). A "cert" and a "key" field of one struct must belong together
// (crypto/tls.X509KeyPair). gateway.data_dir is checked also when left at
// its default. Options.SkipFiles (and SkipSecrets) leaves all of this out.
//
// # Secrets
//
// A logging.Secret field takes ${env:NAME} (the environment variable),
// ${file:PATH} (the file's contents without the trailing newline),
// ${cred:NAME} (the systemd credential NAME: the file NAME in
// $CREDENTIALS_DIRECTORY, which systemd sets for a unit with
// LoadCredential=NAME:PATH), or a literal, which is accepted with a
// warning. Plain strings expand ${env:NAME} too ("$${" writes a literal
// "${"); ${file:...} and ${cred:...} are only accepted as a whole secret.
// A shell-style ${NAME} is an error saying to write ${env:NAME} (in a
// secret only when it is the whole value: a longer literal secret may
// hold "${" and is never quoted), and so is a secret that is a whole
// $NAME in capitals. An unset variable or an unreadable or
// empty file is an error that names the reference. No error, warning or Redacted output ever contains a
// secret's value.
//
// # Errors
//
// Load and Parse report every problem they find, sorted by line, as Errors,
// one per line:
//
//	plantgate.yaml:12:5: sources.mes.colour: unknown key "colour" (valid: type, startup, broker, ...)
//
// IsConfigError recognises them (including an unreadable file), so the
// command can exit with status 78 (EX_CONFIG); AsProblems returns them as
// values. Problems that do not stop the gateway (a literal secret, a source
// no flow reads, a sink no flow writes to) are in Config.Warnings.
package config
