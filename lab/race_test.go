//go:build race

package lab

// raceEnabled: the race detector slows every request several times over.
const raceEnabled = true
