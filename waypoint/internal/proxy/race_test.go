//go:build race

package proxy

// raceEnabled: the race detector slows the data path tenfold and more.
const raceEnabled = true
