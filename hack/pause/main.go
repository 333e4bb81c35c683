// Command pause holds a pod's namespaces open for the node tier's containerd: the process a
// pod sandbox runs. It does nothing but wait: it exits 0 on SIGTERM or SIGINT and, being PID 1
// of the pod when the PID namespace is shared, reaps every child that is re-parented to it so
// no zombie outlives its container.
//
// Written for Turnstile's tests (tests/platform/node.py imports it as a local image); built
// statically (CGO_ENABLED=0) so the image needs nothing but this one file.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("turnstile-pause 1")
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking; SIGCHLD signals coalesce, so one
// signal may stand for several children.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
