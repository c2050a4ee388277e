//go:build !linux

package connect

func dropColdPages() {}
