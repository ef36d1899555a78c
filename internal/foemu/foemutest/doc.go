// Package foemutest starts an in-process fo-emulator for tests, the way
// net/http/httptest starts a server: on a loopback port, with a temporary
// data directory, fast timings, and cleanup when the test ends.
//
//	em := foemutest.Start(t)
//	token := foemutest.Token(t, em)
//	req.Header.Set("Authorization", "Bearer "+token)
//	resp, err := em.HTTPClient().Do(req)
//
// Other packages (sinks, the demo) use it to test against a faithful F&O
// without a network.
package foemutest
