package main

import (
	"errors"
	"os"
	"syscall"
)

// Exit statuses of quorumlock besides a command's own and 1 for other
// errors. Where one fits, the number is the one sysexits.h gives it, so that
// cron wrappers and supervisors that know those codes read them right.
const (
	// exitUnavailable: the lock service is unavailable: too few nodes can
	// vote (unreachable, in restart quarantine, clock skewed, or too slow
	// for the TTL). EX_UNAVAILABLE: "a service is unavailable".
	exitUnavailable = 69
	// exitTaken: someone else holds the lock. EX_TEMPFAIL: "a temporary
	// failure; the user is invited to retry later".
	exitTaken = 75
	// exitLockLost: the lock was lost while the command ran, and the
	// command was terminated. EX_NOPERM: "not sufficient permission to
	// perform the operation; not for file system problems but for
	// higher-level permissions": the lock is the command's permission to
	// run, and it was withdrawn half-way. The job may have done part of
	// its work, which neither "taken" (nothing ran) nor "unavailable"
	// (nothing ran) says.
	exitLockLost = 77
	// exitCannotRun and exitNotFound follow the shell's convention.
	exitCannotRun = 126
	exitNotFound  = 127
)

// exitCoder is an error that asks for a specific process exit status, such as
// the lab reporting a violation or `run` passing on its child's status.
type exitCoder interface {
	error
	ExitCode() int
}

// exitError carries an exit status together with the reason for it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

func asExitCoder(err error, target *exitCoder) bool { return errors.As(err, target) }

// reported is an error whose message stands on its own while it unwraps to
// a cause that was already printed in full: the reason is said once, and
// callers can still match it with errors.Is.
type reported struct {
	msg   string
	cause error
}

func (e *reported) Error() string { return e.msg }
func (e *reported) Unwrap() error { return e.cause }

// signalError is the cause of the command's context when a signal ended it,
// and the error of a command interrupted by one: it exits 128+N, as a shell
// reports a process killed by signal N.
type signalError struct{ sig syscall.Signal }

func (e *signalError) Error() string { return "interrupted by " + signalName(e.sig) }
func (e *signalError) ExitCode() int { return 128 + int(e.sig) }

// signalName is the signal's name as kill(1) spells it.
func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return s.String()
}

// asSignal returns the signal behind err or a context cause, if any.
func asSignal(err error) (syscall.Signal, bool) {
	var se *signalError
	if errors.As(err, &se) {
		return se.sig, true
	}
	return 0, false
}

// toSignal converts an os.Signal from signal.Notify.
func toSignal(s os.Signal) syscall.Signal {
	if sig, ok := s.(syscall.Signal); ok {
		return sig
	}
	return syscall.SIGTERM
}
