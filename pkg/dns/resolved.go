package dns

import (
	"os"
	"os/exec"
	"strings"
)

// systemd-resolved: when it runs, cluster names go to the local server through per-link DNS
// on the TUN device (split DNS), and resolv.conf is left alone. Everything else keeps going
// wherever resolved sends it.

// ResolvedStub is the address of resolved's stub listener in resolv.conf.
const ResolvedStub = "127.0.0.53"

// ResolvedRunning reports whether systemd-resolved manages name resolution here: resolv.conf
// points at its stub, its runtime directory exists and resolvectl is installed.
func ResolvedRunning(resolvConf []byte) bool {
	rc := ParseResolvConf(resolvConf)
	if len(rc.Nameservers) == 0 || rc.Nameservers[0] != ResolvedStub {
		return false
	}
	if _, err := os.Stat("/run/systemd/resolve"); err != nil {
		return false
	}
	_, err := exec.LookPath("resolvectl")
	return err == nil
}

// ResolvedCommands are the resolvectl invocations that send the cluster's names on link to
// server: search domains (which also route) for bare and namespaced Service names, and a
// routing-only domain (~name) for each namespace, so that svc.ns reaches the server too.
func ResolvedCommands(link, server string, search, namespaces []string) [][]string {
	domains := append([]string{}, search...)
	for _, ns := range namespaces {
		domains = append(domains, "~"+ns)
	}
	return [][]string{
		{"dns", link, server},
		append([]string{"domain", link}, domains...),
		{"default-route", link, "false"},
	}
}

// ApplyResolved runs the commands (as root).
func ApplyResolved(cmds [][]string) error {
	for _, c := range cmds {
		if out, err := exec.Command("resolvectl", c...).CombinedOutput(); err != nil {
			return &resolvedError{args: c, out: strings.TrimSpace(string(out)), err: err}
		}
	}
	return nil
}

// RevertResolved drops the link's DNS settings (they also go when the device does).
func RevertResolved(link string) error {
	if out, err := exec.Command("resolvectl", "revert", link).CombinedOutput(); err != nil {
		return &resolvedError{args: []string{"revert", link}, out: strings.TrimSpace(string(out)), err: err}
	}
	return nil
}

type resolvedError struct {
	args []string
	out  string
	err  error
}

func (e *resolvedError) Error() string {
	return "resolvectl " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.out + " (use --dns-mode hosts, or edit resolv.conf with KT_NO_RESOLVED=1)"
}
