// Package config keeps defaults for any command's flags in ~/.kt/config, as YAML
// {group: {item: value}} (group "global" applies to every command), and named profiles of
// that file in ~/.kt/profile.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the file's content.
type Config map[string]map[string]string

// Dir is ~/.kt, or $KT_HOME.
func Dir() string {
	if d := os.Getenv("KT_HOME"); d != "" {
		return d
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return ".kt"
	}
	return filepath.Join(h, ".kt")
}

// Path is the config file.
func Path() string { return filepath.Join(Dir(), "config") }

// Load reads the config file; a missing file is an empty config.
func Load() (Config, error) {
	b, err := os.ReadFile(Path())
	if os.IsNotExist(err) {
		return Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	c := Config{}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s is not valid YAML ({group: {item: value}}): %w; fix or delete it", Path(), err)
	}
	if c == nil {
		c = Config{}
	}
	return c, nil
}

// Save writes the config file.
func (c Config) Save() error {
	if err := os.MkdirAll(Dir(), 0o700); err != nil {
		return err
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(Path(), b, 0o600)
}

// Split parses "group.item".
func Split(key string) (string, string, error) {
	g, i, ok := strings.Cut(key, ".")
	if !ok || g == "" || i == "" {
		return "", "", fmt.Errorf("%q: keys are GROUP.ITEM, e.g. connect.dns-mode or global.image", key)
	}
	return g, i, nil
}

// Get returns a value.
func (c Config) Get(key string) (string, bool) {
	g, i, err := Split(key)
	if err != nil {
		return "", false
	}
	v, ok := c[g][i]
	return v, ok
}

// Set sets a value.
func (c Config) Set(key, value string) error {
	g, i, err := Split(key)
	if err != nil {
		return err
	}
	if c[g] == nil {
		c[g] = map[string]string{}
	}
	c[g][i] = value
	return nil
}

// Unset removes a value.
func (c Config) Unset(key string) error {
	g, i, err := Split(key)
	if err != nil {
		return err
	}
	delete(c[g], i)
	if len(c[g]) == 0 {
		delete(c, g)
	}
	return nil
}

// Keys lists every set key, sorted.
func (c Config) Keys() []string {
	var out []string
	for g, items := range c {
		for i := range items {
			out = append(out, g+"."+i)
		}
	}
	sort.Strings(out)
	return out
}

var profileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckProfileName says whether name can name a profile: a file name of letters, digits, '.',
// '_' and '-', never a path.
func CheckProfileName(name string) error {
	if !profileRE.MatchString(name) {
		return fmt.Errorf("profile name %q: use letters, digits, '.', '_' and '-'", name)
	}
	return nil
}

func profilePath(name string) (string, error) {
	if err := CheckProfileName(name); err != nil {
		return "", err
	}
	return filepath.Join(Dir(), "profile", name), nil
}

// SaveProfile copies the config file to a profile.
func SaveProfile(name string, overwrite bool) error {
	p, err := profilePath(name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil && !overwrite {
		return fmt.Errorf("profile %q exists; pass --force to overwrite it", name)
	}
	b, err := os.ReadFile(Path())
	if os.IsNotExist(err) {
		b = []byte("{}\n")
	} else if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o600)
}

// LoadProfile copies a profile to the config file.
func LoadProfile(name string) error {
	p, err := profilePath(name)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return fmt.Errorf("no profile %q; see 'kubectl kt config list-profile'", name)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(Dir(), 0o700); err != nil {
		return err
	}
	return os.WriteFile(Path(), b, 0o600)
}

// DropProfile deletes a profile.
func DropProfile(name string) error {
	p, err := profilePath(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); os.IsNotExist(err) {
		return fmt.Errorf("no profile %q", name)
	} else {
		return err
	}
}

// Profile is a saved profile.
type Profile struct {
	Name     string
	Modified time.Time
}

// ListProfiles lists the profiles.
func ListProfiles() ([]Profile, error) {
	es, err := os.ReadDir(filepath.Join(Dir(), "profile"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Profile
	for _, e := range es {
		if fi, err := e.Info(); err == nil && !e.IsDir() {
			out = append(out, Profile{Name: e.Name(), Modified: fi.ModTime()})
		}
	}
	return out, nil
}
