package cmd

import (
	"strings"
	"unicode"

	"github.com/spf13/pflag"
)

// ktConnectAliases maps kt-connect flag spellings whose kebab-case form differs from ours.
var ktConnectAliases = map[string]string{
	"disableTunDevice": "disable-tun",
	"disableTunRoute":  "disable-tun-route",
	"thresholdInMinus": "threshold-in-minus",
	"dryRun":           "dry-run",
}

// NormalizeFlagName accepts kt-connect's camelCase spellings (--dnsMode, --versionMark, …) as
// aliases of the kebab-case flags, so its users can switch without relearning.
func NormalizeFlagName(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if a, ok := ktConnectAliases[name]; ok {
		return pflag.NormalizedName(a)
	}
	if !strings.ContainsFunc(name, unicode.IsUpper) {
		return pflag.NormalizedName(name)
	}
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return pflag.NormalizedName(b.String())
}
