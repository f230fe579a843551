// Command gatewayctl is the operator CLI of Fleetgate: it applies and inspects gateway
// configurations through the control plane. See package ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetgate/fleetgate/controlplane/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Args[1:], ctl.Env{
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
	})
	stop()
	os.Exit(code)
}
