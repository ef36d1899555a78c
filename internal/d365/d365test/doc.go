// Package d365test builds F&O environments and plugin environments
// against an in-process fo-emulator, for the tests of the F&O sinks.
//
//	em := foemutest.Start(t)
//	fe := d365test.Env(t, em)
//	sink, err := foodata.New(cfg, d365test.PluginEnv(t, "orders", fe, store))
package d365test
