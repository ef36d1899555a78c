// Command fo-emulator is a stand-in for Microsoft Dynamics 365 Finance &
// Operations and its identity platform, for plantgate's delivery tests, the
// demo, and for integrators who rehearse a plant before go-live.
//
// It serves, on one HTTPS address: the Microsoft Entra ID client
// credentials flow (/{tenant}/oauth2/v2.0/token and the OpenID
// configuration MSAL reads), the OData service (/data, with $batch), the
// MES message service (SendMessage on queue JmgMES3P), the DMF data package
// API with a built-in blob endpoint (or a real Azurite), and inspection and
// fault injection endpoints under /_emulator.
//
// Usage:
//
//	fo-emulator --listen 127.0.0.1:8443 --data-dir /var/tmp/fo-emulator [--config fo-emulator.yaml] [--http]
//
// See internal/foemu/README.md for the endpoints, the config file and the
// fault injection API. Exit codes: 0 after a clean shutdown (SIGINT or
// SIGTERM), 2 for bad flags, 78 for a bad config file, 1 for other errors.
package main
