// Package e2e is plantgate's end-to-end fault suite: the real binaries as
// processes (plantgate, fo-emulator over TLS, mosquitto, Azurite), driven
// through faults (F&O and identity platform outages, throttling, a blob
// store outage during a DMF upload, SIGKILLs and power cuts of the
// gateway, a broker crash, a network cut mid-request, a full queue), and
// judged only by the emulator's own records: every message published is in
// F&O exactly once, in order per production order, or held in doubt and
// shown as such by status, CLI and metrics alike.
//
// `make e2e` runs it (also part of `make test`); `make e2e-long` runs the
// kill and power-cut loops 200 and 100 times. The package has tests only.
package e2e
