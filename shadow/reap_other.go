//go:build !linux

package main

import "context"

func reapChildren(context.Context) {}
