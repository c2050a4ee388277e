package cluster

import (
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// secondsDuration is a duration flag that also takes a bare number of seconds, as
// kt-connect's --podCreationTimeout 60 did.
type secondsDuration struct{ d *time.Duration }

func (s secondsDuration) String() string { return s.d.String() }
func (s secondsDuration) Type() string   { return "duration" }
func (s secondsDuration) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	*s.d = d
	return nil
}

// DurationVar defines a duration flag that also accepts plain seconds.
func DurationVar(fs *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(secondsDuration{p}, name, usage)
}
