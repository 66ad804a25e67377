package main

import "errors"

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
