package cluster

import (
	"errors"
	"fmt"
)

// Fault names one kind of fault a backend may or may not be able to inject.
type Fault string

// The faults. See Cluster.Supports for which backend offers which.
const (
	FaultKill        Fault = "kill"        // SIGKILL: the node is gone, connections fail at once
	FaultStop        Fault = "stop"        // clean shutdown (SIGTERM): AOF flushed
	FaultRestart     Fault = "restart"     // kill, optionally wipe data, wait, start again
	FaultPause       Fault = "pause"       // the process is frozen; commands hang until Resume
	FaultPartition   Fault = "partition"   // the node's proxy refuses connections (per view)
	FaultBlackhole   Fault = "blackhole"   // the node's proxy swallows requests silently (per view)
	FaultLatency     Fault = "latency"     // delay (and jitter) on replies (per view)
	FaultReset       Fault = "reset"       // connections get a TCP RST on their next request (per view)
	FaultClockJump   Fault = "clock-jump"  // the node's wall clock jumps (expires keys, moves TIME)
	FaultClockRate   Fault = "clock-rate"  // the node's wall clock runs faster or slower
	FaultPersistence Fault = "persistence" // the node's durability setting (none / AOF) can be chosen
)

// AllFaults lists every fault, in a stable order.
func AllFaults() []Fault {
	return []Fault{
		FaultKill, FaultStop, FaultRestart, FaultPause, FaultPartition, FaultBlackhole,
		FaultLatency, FaultReset, FaultClockJump, FaultClockRate, FaultPersistence,
	}
}

// ErrUnsupported is matched (errors.Is) by every UnsupportedError.
var ErrUnsupported = errors.New("cluster: fault not supported")

// UnsupportedError reports a fault the backend cannot inject, and why.
type UnsupportedError struct {
	Backend Backend
	Fault   Fault
	Reason  string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("cluster: fault %q is not supported by the %s backend: %s", e.Fault, e.Backend, e.Reason)
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// Supports reports whether the cluster's backend can inject f.
func (c *Cluster) Supports(f Fault) bool { return c.Unsupported(f) == nil }

// Unsupported returns nil when f is supported, else the UnsupportedError
// saying why not.
func (c *Cluster) Unsupported(f Fault) error {
	switch f {
	case FaultPartition, FaultBlackhole, FaultLatency, FaultReset:
		return nil // proxies sit in front of every backend
	}
	known := false
	for _, k := range AllFaults() {
		known = known || k == f
	}
	if !known {
		return &UnsupportedError{Backend: c.backend, Fault: f, Reason: "unknown fault"}
	}
	switch c.backend {
	case BackendEmbedded:
		return nil
	case BackendExternal:
		return &UnsupportedError{Backend: c.backend, Fault: f,
			Reason: "the cluster does not own external processes; only proxy faults (partition, blackhole, latency, reset) apply"}
	case BackendDocker:
		if (f == FaultClockJump || f == FaultClockRate) && c.opts.NoClockFaults {
			return &UnsupportedError{Backend: c.backend, Fault: f, Reason: "the cluster was started with NoClockFaults"}
		}
		if (f == FaultClockJump || f == FaultClockRate) && c.docker != nil && c.docker.faketime == "" {
			return &UnsupportedError{Backend: c.backend, Fault: f,
				Reason: fmt.Sprintf("image %s carries no libfaketime (label %s); build the project image with bash docker/build.sh", c.docker.image, imageLabelFaketime)}
		}
		return nil
	}
	return &UnsupportedError{Backend: c.backend, Fault: f, Reason: "unknown backend"}
}
