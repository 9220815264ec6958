//go:build race

package main_test

// Under the race detector the ztunnel binary is built with it too.
func init() { buildFlags = append(buildFlags, "-race") }
